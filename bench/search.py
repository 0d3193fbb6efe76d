"""Query latency and recall at 10k and 100k chunks, end to end through Library.search.

    python -m bench.search [--sizes 10000 100000] [--queries 200]

Chunks are real: passages of the Python docs embedded by the shipped encoder (cached under
work/bench/). Sizes beyond the real passage count are made by repeating the real passages with
their vectors jittered (Gaussian noise, sigma 0.02 per dimension, then re-normalised), so the
index holds distinct vectors with the neighbourhood structure of real text; the table says how
many were real. Recall@10 is measured against exact numpy search over the same vectors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import exact_top_k, machine, peak_rss_mb, percentile, pydoc_queries, real_passages

# The embedding cache; a test points it at a temporary folder.
WORK = Path(os.environ.get("EDGE_DSE_BENCH_WORK", "work/bench"))


@dataclass
class FakeChunk:
    start: int
    end: int
    text: str
    heading: str = ""


def real_vectors(encoder, n: int, data_dir: str | None = None) -> tuple[list[str], np.ndarray, dict]:
    """(texts, their vectors, {source: count}) for up to n real passages (bench.common.real_passages),
    cached per encoder under WORK with one digest per text: the rows whose texts still match are
    reused, only the rest are embedded (so going from 10k to 100k passages embeds 90k)."""
    import hashlib

    WORK.mkdir(parents=True, exist_ok=True)
    cache = WORK / f"passages-{encoder.id.replace('/', '_')}.npz"
    texts, counts = real_passages(n, data_dir)
    digests = np.array([hashlib.sha256(t.encode("utf-8")).hexdigest()[:16] for t in texts])
    done = np.zeros((0, encoder.dim), np.float32)
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        old = data["digests"][: len(digests)]
        same = np.flatnonzero(old != digests[: len(old)])
        done = data["vectors"][: same[0] if len(same) else len(old)]
    if len(done) < len(texts):
        t0 = time.perf_counter()
        more = encoder.encode(texts[len(done):], batch_size=32, progress=True)
        print(f"(embedded {len(more)} real passages in {time.perf_counter() - t0:.0f} s; cached in {cache})")
        done = np.vstack([done, more])
        np.savez(cache, vectors=done, digests=digests)
    return texts, done[: len(texts)], counts


def replicate(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """`size` rows: the real vectors, then jittered copies of them (each a distinct point near
    its original), so every engine compared is given the very same matrix."""
    full = vectors[np.arange(size) % len(vectors)].copy()
    rng = np.random.default_rng(seed)
    for lo in range(len(vectors), size, 100_000):  # in blocks: 1M x 384 noise at once is 3 GB
        block = full[lo: lo + 100_000]
        block += rng.normal(0, 0.02, block.shape).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return full


def build_library(folder: Path, encoder, texts: list[str], vectors: np.ndarray, size: int, seed: int = 0):
    from edge_dse import Library

    lib = Library(folder, model=encoder, progress=False)
    full = replicate(vectors, size, seed)
    per_file = 100
    t0 = time.perf_counter()
    for f, lo in enumerate(range(0, size, per_file)):
        idx = np.arange(lo, min(size, lo + per_file))
        chunks = [FakeChunk(0, len(texts[i % len(texts)]), texts[i % len(texts)]) for i in idx]
        lib.catalog.put_file("/bench", f"/bench/file-{f:06d}.txt", 1, 1, f"{f:064d}", chunks, full[idx])
    t_insert = time.perf_counter() - t0
    t0 = time.perf_counter()
    lib.refresh_index()
    return lib, t_insert, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--real", type=int, default=10_000, help="real passages to embed (the rest are jittered replicas)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ef", type=int, nargs="*", default=[], help="also sweep these ef_search values (recall vs HNSW latency)")
    args = ap.parse_args()
    sweeps = []

    from edge_dse import Encoder

    encoder = Encoder(threads=args.threads)
    texts, vectors, _ = real_vectors(encoder, args.real)
    queries = pydoc_queries(args.queries)
    print(f"# Search latency and recall — {machine()}, {args.threads} threads, model {encoder.id}\n")
    print("Baseline in the same run: exact numpy search (matrix @ query, argpartition) over the same vectors.\n")
    print("| chunks (real) | insert s | HNSW build s | vector p50 ms end-to-end | p99 ms | hybrid p50 ms | hybrid p99 ms "
          "| HNSW p50 ms | exact numpy p50 ms | HNSW speed-up | recall@10 vs exact | catalog MB | index MB | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix="edge-dse-bench-"))
        try:
            lib, t_insert, t_build = build_library(folder, encoder, texts, vectors, size)
            ids, matrix = [], []
            for i, v in lib.catalog.iter_vectors():
                ids.append(i)
                matrix.append(v)
            ids, matrix = np.concatenate(ids), np.vstack(matrix)
            qv = encoder.encode(queries, kind="query")
            exact = ids[exact_top_k(matrix, qv, 10)]
            index = lib.ann_index()
            recall = np.mean([len(set(index.search(q, 10)[0].tolist()) & set(e.tolist())) / 10 for q, e in zip(qv, exact)])
            end_to_end, hybrid, ann_only, exact_only = [], [], [], []
            for q, v in zip(queries, qv):
                t0 = time.perf_counter()
                lib.search(q, k=10, mode="vector")
                end_to_end.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                lib.search(q, k=10, mode="hybrid")
                hybrid.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                index.search(v, 10)
                ann_only.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                ids[exact_top_k(matrix, v[None], 10)[0]]
                exact_only.append((time.perf_counter() - t0) * 1000)
            default_ef = index.ef_search
            for ef in args.ef:
                index.ef_search = ef
                lat = []
                hits = 0
                for v, e in zip(qv, exact):
                    t0 = time.perf_counter()
                    got = index.search(v, 10)[0]
                    lat.append((time.perf_counter() - t0) * 1000)
                    hits += len(set(got.tolist()) & set(e.tolist()))
                sweeps.append((size, ef, hits / (10 * len(qv)), percentile(lat, 50), percentile(lat, 99)))
            index.ef_search = default_ef
            sizes = {p.name: p.stat().st_size / 1e6 for p in folder.iterdir()}
            catalog_mb = sum(v for k, v in sizes.items() if k.startswith("catalog"))
            index_mb = sum(v for k, v in sizes.items() if k.startswith("ann"))
            print(f"| {size} ({min(size, len(texts))}) | {t_insert:.1f} | {t_build:.1f} | {percentile(end_to_end, 50):.2f} | "
                  f"{percentile(end_to_end, 99):.2f} | {percentile(hybrid, 50):.2f} | {percentile(hybrid, 99):.2f} | "
                  f"{percentile(ann_only, 50):.3f} | {percentile(exact_only, 50):.2f} | "
                  f"{percentile(exact_only, 50) / percentile(ann_only, 50):.0f}x | {recall:.3f} | {catalog_mb:.0f} | {index_mb:.0f} | {peak_rss_mb():.0f} |")
            lib.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if sweeps:
        print("\n| chunks | ef_search | recall@10 vs exact | HNSW p50 ms | HNSW p99 ms |")
        print("|---:|---:|---:|---:|---:|")
        for size, ef, rec, p50, p99 in sweeps:
            print(f"| {size} | {ef} | {rec:.3f} | {p50:.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main()
