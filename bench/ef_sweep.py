"""ef_search on real text: recall@10 vs exact search and HNSW-only latency for several ef values,
on the very vectors the search section uses (bench.engines: up to --real distinct real
passages, jittered copies past them), with edge_dse's build settings.

    python -m bench.ef_sweep [--sizes 100000 1000000] [--ef 320 480 640 960 1280]

Per size: one index with AnnIndex.DEFAULTS' M and ef_construction, then each ef over the same
200 real queries, one at a time on one thread as the app searches (bench.ann_recall.measure, on
real vectors instead of its grid). This is how AnnIndex.DEFAULTS["ef_search"] is chosen (its
docstring has the table).
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import machine, pydoc_queries, search_encoder


def main() -> None:
    from bench import ann_recall
    from bench.search import real_vectors, replicate
    from edge_dse.store.ann import AnnIndex

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--ef", type=int, nargs="+", default=[320, 480, 640, 960, 1280])
    ap.add_argument("--real", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="build threads")
    ap.add_argument("--data", default="work/distill/data", help="more real passages past the Python docs (distiller's splits)")
    ap.add_argument("--student")
    args = ap.parse_args()

    enc = search_encoder(args.student)
    _, vectors, counts = real_vectors(enc, args.real, args.data)
    queries = np.vstack([enc.encode([q], kind="query") for q in pydoc_queries(args.queries)])
    print(f"{machine()}; `{enc.id}` on {sum(counts.values())} real passages ({counts}), jittered copies past them; "
          f"{len(queries)} real queries, one search thread\n")
    for size in args.sizes:
        rows = ann_recall.measure(replicate(vectors, size), queries, 1, args.threads, [AnnIndex.DEFAULTS["M"]],
                                  [AnnIndex.DEFAULTS["ef_construction"]], args.ef)
        print(f"\n### {size} chunks\n\n{ann_recall.table(rows)}\n", flush=True)


if __name__ == "__main__":
    main()
