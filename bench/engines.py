"""Search side by side: edge_dse (SQLite + HNSW) vs exact numpy search vs Chroma, given the very
same vectors, at each size.

    python -m bench.engines [--sizes 10000 100000 1000000] [--real 100000] [--queries 200]

Vectors: up to --real distinct real passages (the Python docs, then the Debian descriptions and
WordNet glosses of the distiller's splits: bench.common.real_passages) embedded by the search
encoder (the student when it exists, else the shipped baseline; bench/search.py caches them),
replicated with jitter beyond that (bench.search.replicate). Every (engine, size) runs as two
child processes: one builds the store on disk and writes the exact top 10 of each query, the
next opens the store as an app would and runs the queries, so its resident-memory growth is the
store's RAM cost, not the build's. End-to-end latency includes encoding the query with the same
encoder for every engine; for edge_dse it is Library.search (hits with their text), for Chroma a
query that returns documents.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import (chroma_add, chroma_collection, chroma_missing, child_main, exact_top_k, md_table, peak_rss_mb,
                          percentile, pydoc_queries, ratio, rss_mb, run_child, search_encoder, times)

ENGINES = ("edge_dse", "exact numpy", "chroma")


def _data(p: dict):
    from bench.search import real_vectors, replicate

    enc = search_encoder(p.get("student"))
    texts, vectors, counts = real_vectors(enc, p["real"], p.get("data"))
    return enc, texts, lambda: replicate(vectors, p["size"]), counts


def build(p: dict) -> dict:
    from bench.search import build_library

    enc, texts, full, counts = _data(p)
    folder = Path(p["folder"])
    # One at a time, as the searches are: dynamic int8 quantises each batch with its own scale,
    # so a batched query vector differs slightly, and truth must be the same query's.
    qv = np.vstack([enc.encode([q], kind="query") for q in pydoc_queries(p["queries"])])
    t0 = time.perf_counter()
    if p["engine"] == "edge_dse":
        lib, _, _ = build_library(folder, enc, texts, full_vectors := full(), p["size"])
        ids = lib.catalog.all_ids()  # ids follow insertion order: row i of the matrix is ids[i]
        lib.close()
    elif p["engine"] == "exact numpy":
        full_vectors = full()
        np.save(folder / "vectors.npy", full_vectors)
        ids = np.arange(p["size"])
    else:
        full_vectors = full()
        client, col = chroma_collection(folder)
        chroma_add(client, col, full_vectors, [texts[i % len(texts)] for i in range(p["size"])])
        ids = np.arange(p["size"])
    t_build = time.perf_counter() - t0
    top = exact_top_k(full_vectors, qv, 10)
    np.save(folder.parent / f"{folder.name}-truth.npy", ids[top])
    return {"build_s": t_build, "build_peak_rss_mb": peak_rss_mb(), "real_by_source": counts,
            "disk_bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())}


def query(p: dict) -> dict:
    enc = search_encoder(p.get("student"))
    queries = pydoc_queries(p["queries"])
    truth = np.load(Path(p["folder"] + "-truth.npy"))
    enc.encode(queries[:8], kind="query")  # warm-up, before the baseline RSS
    before = rss_mb()
    if p["engine"] == "edge_dse":
        from edge_dse import Library

        lib = Library(p["folder"], model=enc, readonly=True, progress=False)
        lib.search(queries[0], k=10, mode="vector")  # loads the HNSW cache
        index = lib.ann_index()
        full = lambda q: lib.search(q, k=10, mode="vector")  # noqa: E731
        only = lambda v: index.search(v, 10)[0]  # noqa: E731
    elif p["engine"] == "exact numpy":
        matrix = np.load(Path(p["folder"]) / "vectors.npy")
        only = lambda v: exact_top_k(matrix, v[None], 10)[0]  # noqa: E731
        full = lambda q: only(enc.encode([q], kind="query")[0])  # noqa: E731
    else:
        _, col = chroma_collection(p["folder"], create=False)
        only = lambda v: np.array(col.query(query_embeddings=[v], n_results=10, include=[])["ids"][0], dtype=np.int64)  # noqa: E731
        full = lambda q: col.query(query_embeddings=enc.encode([q], kind="query"), n_results=10, include=["documents"])  # noqa: E731
        only(enc.encode([queries[0]], kind="query")[0])  # loads the index
    e2e, search_only, hits = [], [], 0
    for q, want in zip(queries, truth):
        t0 = time.perf_counter()
        full(q)
        e2e.append((time.perf_counter() - t0) * 1000)
        v = enc.encode([q], kind="query")[0]
        t0 = time.perf_counter()
        got = only(v)
        search_only.append((time.perf_counter() - t0) * 1000)
        hits += len(set(np.asarray(got).tolist()) & set(want.tolist()))
    return {"p50_ms": percentile(e2e, 50), "p99_ms": percentile(e2e, 99), "search_p50_ms": percentile(search_only, 50),
            "recall": hits / (10 * len(queries)), "ram_mb": rss_mb() - before, "query_peak_rss_mb": peak_rss_mb()}


def measure(p: dict) -> dict:
    return build(p) if p["step"] == "build" else query(p)


def section(sizes: list[int], real: int, queries: int, student: str | None = None,
            timeout: float | None = None, data: str | None = None) -> tuple[str, dict]:
    from edge_dse.store.ann import AnnIndex

    enc_id = search_encoder(student).id
    hnsw = ", ".join(f"{k}={v}" for k, v in AnnIndex.DEFAULTS.items())
    headers = ["engine", "chunks", "build s", "p50 ms end-to-end", "p99 ms", "search-only p50 ms", "recall@10 vs exact",
               "p50 vs exact numpy", "disk bytes/chunk", "RAM bytes/chunk (searching)", "peak RSS MB build / search"]
    table, facts, sources = [], {"p50_ms": {}, "recall": {}}, {}
    for size in sizes:
        got, notes = {}, {}
        for engine in ENGINES:
            if engine == "chroma" and chroma_missing():
                notes[engine] = [engine, f"not available: {chroma_missing()}"]
                continue
            tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
            p = {"engine": engine, "size": size, "real": real, "queries": queries, "student": student,
                 "folder": str(tmp / "store"), "data": data}
            (tmp / "store").mkdir()
            try:
                b = run_child("bench.engines", {**p, "step": "build"}, timeout)
                q = run_child("bench.engines", {**p, "step": "query"}, timeout) if "error" not in b else {}
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if "error" in b or "error" in q:
                notes[engine] = [engine, f"failed: {b.get('error') or q.get('error')}"]
                continue
            got[engine] = {**b, **q}
            sources = b.get("real_by_source") or sources
        if "edge_dse" in got:
            facts["p50_ms"][size], facts["recall"][size] = got["edge_dse"]["p50_ms"], got["edge_dse"]["recall"]
        for engine in ENGINES:
            if engine in notes:
                table.append(notes[engine])
                continue
            r = got[engine]
            table.append([engine, size, r["build_s"], r["p50_ms"], r["p99_ms"], r["search_p50_ms"], r["recall"],
                          times(ratio(got.get("exact numpy", {}).get("p50_ms"), r["p50_ms"])),
                          f"{r['disk_bytes'] / size:.0f}", f"{r['ram_mb'] * 2**20 / size:.0f}",
                          f"{r['build_peak_rss_mb']:.0f} / {r['query_peak_rss_mb']:.0f}"])
    n_real = sum(sources.values())
    made_of = " + ".join(f"{n} {src}" for src, n in sources.items())
    return (f"vectors from `{enc_id}` on {n_real} distinct real passages ({made_of}; an index larger than that holds "
            f"them and jittered copies of them, {max(sizes) / max(n_real, 1):.0f} per passage at {max(sizes)}), "
            f"{queries} real queries (Python docs headings), "
            f"HNSW {hnsw} for edge_dse and Chroma alike; "
            "end-to-end = encode the query + search + fetch (edge_dse: hits with text and file; Chroma: documents; "
            "numpy: row ids only); 'p50 vs exact numpy' > 1 means faster than exact search\n\n" + md_table(headers, table)), facts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--real", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--student")
    ap.add_argument("--data", default="work/distill/data", help="more real passages past the Python docs (distiller's splits)")
    args = ap.parse_args()
    print(section(args.sizes, args.real, args.queries, args.student, data=args.data)[0])


if __name__ == "__main__":
    if not child_main(measure):
        main()
