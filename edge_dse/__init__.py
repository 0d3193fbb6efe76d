"""edge_dse: private semantic search over your own files, on your own CPU, offline.

    from edge_dse import Library
    lib = Library()                      # the default library, shipped default model
    lib.add("~/Documents")               # extract, chunk, embed, index (incremental)
    for hit in lib.search("how do I rotate the logs?"):
        print(hit.rank, hit.score, hit.path, hit.text[:80])

The public names are loaded on first use, so `import edge_dse` imports neither numpy nor
onnxruntime (and never torch).
"""

from . import config as _config  # noqa: F401  (sets the offline environment first)

__version__ = "0.1.0"
__all__ = ["Encoder", "Library", "Reranker", "Hit", "SyncReport", "EdgeDSEError"]

_LAZY = {
    "Encoder": ".encoder",
    "Library": ".library",
    "Reranker": ".rerank",
    "Hit": ".library",
    "SyncReport": ".library",
    "EdgeDSEError": ".errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edge_dse' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
