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
from .lazy import lazy_names

__version__ = "0.1.0"
__all__ = ["Encoder", "Library", "Reranker", "Hit", "SyncReport", "EdgeDSEError", "embed_files", "EmbeddedFiles"]

_LAZY = {
    "Encoder": ".encoder",
    "Library": ".library",
    "Reranker": ".rerank",
    "Hit": ".library",
    "SyncReport": ".library",
    "EdgeDSEError": ".errors",
    "embed_files": ".file_embedding",
    "EmbeddedFiles": ".file_embedding",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
