"""Chroma as the comparison store: a PersistentClient given our vectors (it embeds nothing), with
the same HNSW settings as edge_dse (M, ef_construction, ef_search), cosine space."""

from __future__ import annotations

import importlib.util

from bench.models import BENCH_EXTRA


def missing() -> str | None:
    return None if importlib.util.find_spec("chromadb") else f"chromadb is not installed: {BENCH_EXTRA}"


def open_collection(path, create: bool = True):
    import chromadb
    from edge_dse.store.ann import AnnIndex

    client = chromadb.PersistentClient(path=str(path), settings=chromadb.Settings(anonymized_telemetry=False))
    if not create:
        return client, client.get_collection("bench", embedding_function=None)
    hnsw = {"space": "cosine", "max_neighbors": AnnIndex.DEFAULTS["M"],
            "ef_construction": AnnIndex.DEFAULTS["ef_construction"], "ef_search": AnnIndex.DEFAULTS["ef_search"]}
    return client, client.get_or_create_collection("bench", configuration={"hnsw": hnsw}, embedding_function=None)


def add(client, col, vectors, documents, metadatas=None, first_id: int = 0) -> None:
    """Everything in batches of the client's maximum (Chroma refuses larger adds)."""
    step = client.get_max_batch_size()
    for lo in range(0, len(vectors), step):
        hi = min(len(vectors), lo + step)
        col.add(ids=[str(first_id + i) for i in range(lo, hi)], embeddings=vectors[lo:hi], documents=documents[lo:hi],
                metadatas=metadatas[lo:hi] if metadatas else None)
