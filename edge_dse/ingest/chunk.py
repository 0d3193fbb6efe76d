"""Cut extracted text into chunks the encoder can take whole, keeping exact offsets.

A chunk is a span of the extracted text (`text == source[start:end]`), never crossing a heading,
packed from whole paragraphs up to `max_chars`; a paragraph longer than that is cut at sentence
ends, then at spaces, then hard. Every non-space character lands in exactly one chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .extract import Extracted

# ~256 wordpiece tokens of English prose for a MiniLM-style tokenizer (about 4 chars a token),
# the max length of the shipped model: a chunk is seen whole by the encoder.
DEFAULT_MAX_CHARS = 1000

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    text: str
    heading: str  # the heading path in effect at `start`, e.g. "Tutorial > Lists"


def _trimmed(text: str, a: int, b: int) -> tuple[int, int] | None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


def _split_on(pattern: re.Pattern, text: str, a: int, b: int) -> list[tuple[int, int]]:
    spans, pos = [], a
    for m in pattern.finditer(text, a, b):
        span = _trimmed(text, pos, m.start())
        if span:
            spans.append(span)
        pos = m.end()
    span = _trimmed(text, pos, b)
    if span:
        spans.append(span)
    return spans


def _units(text: str, a: int, b: int, max_chars: int) -> list[tuple[int, int]]:
    """Paragraph spans of [a, b); the ones longer than max_chars cut into smaller pieces."""
    out = []
    for span in _split_on(_PARAGRAPH_BREAK, text, a, b):
        out += _fit(text, span, max_chars, (_SENTENCE_END, _SPACE))
    return out


def _fit(text: str, span: tuple[int, int], max_chars: int, patterns) -> list[tuple[int, int]]:
    a, b = span
    if b - a <= max_chars:
        return [span]
    if not patterns:  # one unbreakable run: hard cuts
        return [(i, min(b, i + max_chars)) for i in range(a, b, max_chars)]
    pieces = _split_on(patterns[0], text, a, b)
    if len(pieces) == 1:
        return _fit(text, pieces[0], max_chars, patterns[1:])
    out = []
    for piece in _pack(pieces, max_chars):
        out += _fit(text, piece, max_chars, patterns[1:])
    return out


def _pack(units: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Greedily join consecutive spans while the joined span stays within max_chars."""
    packed: list[tuple[int, int]] = []
    for a, b in units:
        if packed and b - packed[-1][0] <= max_chars:
            packed[-1] = (packed[-1][0], b)
        else:
            packed.append((a, b))
    return packed


def _heading_paths(extracted: Extracted) -> list[tuple[int, str]]:
    """(offset, "H1 > H2 > H3") at each heading, from the heading levels."""
    stack: list[tuple[int, str]] = []
    out = []
    for h in sorted(extracted.headings, key=lambda h: h.offset):
        while stack and stack[-1][0] >= h.level:
            stack.pop()
        stack.append((h.level, h.title))
        out.append((h.offset, " > ".join(t for _, t in stack)))
    return out


def chunk_text(extracted: Extracted, *, max_chars: int = DEFAULT_MAX_CHARS, min_chars: int = 100) -> list[Chunk]:
    text = extracted.text
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    sections = [(0, "")] + [(o, p) for o, p in _heading_paths(extracted) if 0 <= o < len(text)]
    chunks: list[Chunk] = []
    for i, (start, heading) in enumerate(sections):
        end = sections[i + 1][0] if i + 1 < len(sections) else len(text)
        if end <= start:
            continue
        spans = _pack(_units(text, start, end, max_chars), max_chars)
        # A small tail reads badly alone: fold it into the chunk before when that stays near size.
        if len(spans) >= 2 and spans[-1][1] - spans[-1][0] < min_chars and spans[-1][1] - spans[-2][0] <= max_chars * 1.25:
            spans[-2:] = [(spans[-2][0], spans[-1][1])]
        chunks += [Chunk(a, b, text[a:b], heading) for a, b in spans]
    return chunks
