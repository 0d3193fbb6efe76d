"""ef_search on real text: recall@10 vs exact search and HNSW-only latency for several ef values,
on the very vectors the search section uses (bench.engines: up to --real distinct real
passages, jittered copies past them), with edge_dse's build settings.

    python -m bench.ef_sweep [--sizes 100000 1000000] [--ef 320 480 640 960 1280]

One index per size (M and ef_construction from AnnIndex.DEFAULTS, built with 2 threads), then
each ef over the same 200 real queries, searched one at a time on one thread as the app does.
This is how AnnIndex.DEFAULTS["ef_search"] is chosen (its docstring has the table).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import machine, md_table, percentile, pydoc_queries


def main() -> None:
    import hnswlib

    from bench.models import search_encoder
    from bench.search import real_vectors, replicate
    from edge_dse.distill.candidates import dense_neighbours
    from edge_dse.store.ann import AnnIndex

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--ef", type=int, nargs="+", default=[320, 480, 640, 960, 1280])
    ap.add_argument("--real", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data", default="work/distill/data")
    ap.add_argument("--student")
    args = ap.parse_args()

    enc = search_encoder(args.student)
    _, vectors, counts = real_vectors(enc, args.real, args.data)
    queries = np.vstack([enc.encode([q], kind="query") for q in pydoc_queries(args.queries)])
    rows = []
    for size in args.sizes:
        matrix = replicate(vectors, size)
        truth = dense_neighbours(matrix, queries, 10)
        index = hnswlib.Index(space="ip", dim=matrix.shape[1])
        index.init_index(max_elements=size, M=AnnIndex.DEFAULTS["M"],
                         ef_construction=AnnIndex.DEFAULTS["ef_construction"], random_seed=100)
        index.set_num_threads(2)
        t0 = time.perf_counter()
        index.add_items(matrix, np.arange(size))
        built = time.perf_counter() - t0
        index.set_num_threads(1)
        for ef in args.ef:
            index.set_ef(ef)
            latency, hits = [], 0
            for q, want in zip(queries, truth):
                t0 = time.perf_counter()
                got = index.knn_query(q, k=10)[0][0]
                latency.append((time.perf_counter() - t0) * 1000)
                hits += len(set(got.tolist()) & set(want.tolist()))
            rows.append([size, f"{built:.0f}", ef, hits / (10 * len(queries)), percentile(latency, 50), percentile(latency, 99)])
            print(rows[-1], flush=True)
    print(f"\n{machine()}; `{enc.id}` on {sum(counts.values())} real passages ({counts}), jittered copies past them; "
          f"M={AnnIndex.DEFAULTS['M']}, ef_construction={AnnIndex.DEFAULTS['ef_construction']}; "
          f"{len(queries)} real queries, one thread\n")
    print(md_table(["chunks", "build s", "ef_search", "recall@10 vs exact", "HNSW p50 ms", "HNSW p99 ms"], rows))


if __name__ == "__main__":
    main()
