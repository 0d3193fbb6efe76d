"""Pick the HNSW parameters by measurement: recall@10 against exact search, build time, index
size and query latency over a small grid of (M, ef_construction) and ef.

    python -m bench.ann_recall                          # synthetic clustered vectors, N=10k
    python -m bench.ann_recall --vectors work/bench/pydoc-<model>.npz   # real embeddings
    python -m bench.ann_recall --large                  # also N=100k (takes several minutes)

--vectors takes a .npy matrix or an .npz with a "vectors" array (bench/search.py caches the
shipped encoder's embeddings of the Python docs that way); --query-vectors the same for real
queries (else the last --queries passages are held out as queries and never indexed). Without
--vectors the data are SYNTHETIC (see synthetic(): a power-law spectrum, nested topics, and
queries off the passages' manifold), and every table says so. Real embeddings decide; the
synthetic set is for when none exist yet.

Truth is exact numpy search (dot product of unit vectors = cosine, top 10). Each (M,
ef_construction) is built --runs times (hnswlib inserts with several threads, so builds differ);
the table gives medians over runs of build time and recall, and p50/p99 latency of single
queries (one thread, as the app searches) pooled over runs.

The build parameters in edge_dse/store/ann.py (AnnIndex.DEFAULTS: M=16, ef_construction=200)
came from `python -m bench.ann_recall --large` on synthetic data (N=10k: 3 runs; N=100k: 1 run),
dim 384, 200 queries, a 2-core shared AMD EPYC; ef_search=640 from `python -m bench.ef_sweep` on
90,888 real passages (and their jittered copies up to 1M). Its docstring has the rows that decided. Build times on a
shared machine vary up to 2x between runs; recall does not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import exact_top_k, machine, percentile

GRID_M = (8, 16, 32)
GRID_EF_CONSTRUCTION = (100, 200)
GRID_EF = (10, 20, 40, 80, 160, 320)
TARGET_RECALL = 0.98
K = 10


def synthetic(n: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(passages, queries): clustered unit vectors shaped like a bi-encoder's embeddings.

    - a power-law spectrum (variance of the i-th direction ~ 1/i), as learned embeddings have,
      instead of isotropic noise;
    - topics within topics: 100 broad ones, ~0.3*n narrow ones inside them;
    - a direction shared by all passages (random passage pairs have cosine ~0.13, as
      sentence-transformer embeddings do);
    - queries from the same topics but off the passages' manifold (their own shared direction,
      more noise): a query's best passage has cosine ~0.5, not ~0.9. In-distribution queries
      (held-out passages) make HNSW look better than it is for real search.
    """
    rng = np.random.default_rng(seed)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    scale = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)

    def gaussian(m):
        return unit((rng.normal(size=(m, dim)).astype(np.float32) * scale) @ rotation)

    broad = gaussian(100)
    n_narrow = max(100, int(0.3 * n))
    narrow = unit(broad[rng.integers(0, len(broad), n_narrow)] + 0.8 * gaussian(n_narrow))
    topic = rng.integers(0, n_narrow, n + n_queries)
    passage_dir, query_dir = unit(rng.normal(size=(2, dim)))
    passages = unit(0.5 * passage_dir + narrow[topic[:n]] + 0.9 * gaussian(n))
    queries = unit(0.5 * query_dir + narrow[topic[n:]] + 1.5 * gaussian(n_queries))
    return passages.astype(np.float32), queries.astype(np.float32)


def load_vectors(path: Path) -> np.ndarray:
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        data = data["vectors"]
    x = np.asarray(data, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build(base: np.ndarray, M: int, ef_construction: int, threads: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=ef_construction)
    t0 = time.perf_counter()
    index.add_items(base, np.arange(len(base)), num_threads=threads)
    return index, time.perf_counter() - t0


def index_bytes(index) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.hnsw"
        index.save_index(str(path))
        return path.stat().st_size


def measure(base: np.ndarray, queries: np.ndarray, runs: int, threads: int, grid_m, grid_efc, grid_ef) -> list[dict]:
    truth = exact_top_k(base, queries, K)
    rows = []
    for M in grid_m:
        for efc in grid_efc:
            builds, size = [], 0
            per_ef = {ef: {"recall": [], "lat": []} for ef in grid_ef}
            for _ in range(runs):
                index, seconds = build(base, M, efc, threads)
                builds.append(seconds)
                size = index_bytes(index)
                index.set_num_threads(1)
                for ef in grid_ef:
                    index.set_ef(max(ef, K))
                    found = np.empty((len(queries), K), dtype=np.int64)
                    for i, q in enumerate(queries):
                        t0 = time.perf_counter()
                        labels, _ = index.knn_query(q, k=K)
                        per_ef[ef]["lat"].append((time.perf_counter() - t0) * 1000)
                        found[i] = labels[0]
                    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
                    per_ef[ef]["recall"].append(hits / truth.size)
                del index
            for ef in grid_ef:
                rows.append({
                    "M": M, "efc": efc, "ef": ef, "build_s": statistics.median(builds), "bytes": size,
                    "recall": statistics.median(per_ef[ef]["recall"]),
                    "p50": percentile(per_ef[ef]["lat"], 50), "p99": percentile(per_ef[ef]["lat"], 99),
                })
            print(f"  (M={M}, ef_construction={efc}: built {runs}x, median {statistics.median(builds):.2f} s)", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| M | ef_construction | ef | build s | index MB | recall@10 | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " **" if r["recall"] >= TARGET_RECALL else ""
        lines.append(f"| {r['M']} | {r['efc']} | {r['ef']} | {r['build_s']:.2f} | {r['bytes'] / 1e6:.1f} | "
                     f"{r['recall']:.4f}{mark} | {r['p50']:.3f} | {r['p99']:.3f} |")
    return "\n".join(lines)


def pick(rows: list[dict]) -> dict | None:
    """The cheapest point that reaches the target: lowest p50 latency, then smaller index,
    then faster build."""
    ok = [r for r in rows if r["recall"] >= TARGET_RECALL]
    return min(ok, key=lambda r: (round(r["p50"], 2), r["bytes"], r["build_s"])) if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors", type=Path, help=".npy matrix or .npz with 'vectors' (real embeddings)")
    ap.add_argument("--query-vectors", type=Path, help="real query embeddings (default: hold out passages)")
    ap.add_argument("--n", type=int, default=10_000, help="vectors indexed (default 10k)")
    ap.add_argument("--large", action="store_true", help="also N=100k (one run each)")
    ap.add_argument("--dim", type=int, default=384, help="synthetic data only")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="build threads")
    ap.add_argument("--M", type=int, nargs="+", default=list(GRID_M))
    ap.add_argument("--ef-construction", type=int, nargs="+", default=list(GRID_EF_CONSTRUCTION))
    ap.add_argument("--ef", type=int, nargs="+", default=list(GRID_EF))
    args = ap.parse_args()

    sizes = [(args.n, args.runs)] + ([(100_000, 1)] if args.large else [])
    print(f"machine: {machine()}; build threads {args.threads}, queries on 1 thread")
    for n, runs in sizes:
        if args.vectors:
            data = load_vectors(args.vectors)
            held_out = 0 if args.query_vectors else args.queries
            if len(data) < n + held_out:
                print(f"{args.vectors} holds {len(data)} vectors: fewer than N={n} + {held_out} held-out queries")
                n = len(data) - held_out
            base = data[:n]
            if args.query_vectors:
                queries = load_vectors(args.query_vectors)[: args.queries]
                label = f"real embeddings from {args.vectors}, queries from {args.query_vectors}"
            else:
                queries = data[len(data) - held_out :]
                label = f"real embeddings from {args.vectors} (queries: held-out passages, easier than real queries)"
        else:
            base, queries = synthetic(n, args.queries, args.dim)
            label = "SYNTHETIC clustered unit vectors shaped like text embeddings (not real text)"
        print(f"\n### N={n:,}, dim {base.shape[1]}, {len(queries)} queries, {runs} run(s): {label}\n", flush=True)
        t0 = time.perf_counter()
        rows = measure(base, queries, runs, args.threads, args.M, args.ef_construction, args.ef)
        print()
        print(table(rows))
        best = pick(rows)
        print(f"\n(** = recall@10 >= {TARGET_RECALL}; measured in {time.perf_counter() - t0:.0f} s)")
        if best:
            print(f"cheapest at target: M={best['M']}, ef_construction={best['efc']}, ef={best['ef']} "
                  f"(recall {best['recall']:.4f}, p50 {best['p50']:.3f} ms)")
        else:
            print(f"no grid point reaches recall {TARGET_RECALL}: widen --ef / --M")


if __name__ == "__main__":
    main()
