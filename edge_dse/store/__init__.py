"""Storage: the SQLite catalog (source of truth), the HNSW cache derived from it, and the
writer lock. Names are loaded on first use, so importing edge_dse.store (or .lock alone) does
not import numpy, sqlite-utils or hnswlib."""

from __future__ import annotations

from ..lazy import lazy_names

__all__ = ["Catalog", "FileRow", "ChunkRow", "AnnIndex", "WriterLock"]

_LAZY = {
    "Catalog": ".catalog",
    "FileRow": ".catalog",
    "ChunkRow": ".catalog",
    "AnnIndex": ".ann",
    "WriterLock": ".lock",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
