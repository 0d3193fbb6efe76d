"""Storage: the SQLite catalog (source of truth), the HNSW cache derived from it, and the
writer lock. Names are loaded on first use, so importing edge_dse.store (or .lock alone) does
not import numpy, sqlite-utils or hnswlib."""

from __future__ import annotations

__all__ = ["Catalog", "FileRow", "ChunkRow", "AnnIndex", "WriterLock"]

_LAZY = {
    "Catalog": ".catalog",
    "FileRow": ".catalog",
    "ChunkRow": ".catalog",
    "AnnIndex": ".ann",
    "WriterLock": ".lock",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edge_dse.store' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
