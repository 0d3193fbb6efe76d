"""Ingest: find files (discover), get their text (extract), cut it into chunks (chunk)."""

from ..errors import ExtractError
from .chunk import DEFAULT_MAX_CHARS, Chunk, chunk_text
from .discover import DEFAULT_IGNORE_DIRS, DEFAULT_MAX_BYTES, SUPPORTED_SUFFIXES, FoundFile, SkippedFile, discover, is_supported
from .extract import Extracted, Heading, extract

__all__ = ["Chunk", "chunk_text", "DEFAULT_MAX_CHARS", "discover", "FoundFile", "SkippedFile", "is_supported",
           "DEFAULT_IGNORE_DIRS", "DEFAULT_MAX_BYTES", "SUPPORTED_SUFFIXES", "extract", "Extracted", "Heading", "ExtractError"]
