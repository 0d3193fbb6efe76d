"""All the comparisons in one run, one markdown table per section, then the targets.

    python -m bench all [--quick] [--out FILE]      # or one section: encode | dse | search | sync

Sections: encode (docs/s, queries/s, peak RSS, held-out nDCG@10 of each encoder), dse (teacher
cross-encoder exhaustively vs the student with precomputed vectors), search (edge_dse vs exact
numpy vs Chroma at each size), sync (edge_dse vs a plain Chroma pipeline on the Python docs).
Every measured row runs in its own child process; every ratio is against a baseline measured in
the same run (the machine is shared: absolute figures drift, same-run ratios much less). A model
or package that is not there gives a row "not available: <why>", never a crash.
Run it from the repository root in the bench environment (bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
import time

from bench.common import machine, md_table

# Sample sizes. full: the sizes (nDCG on 200 queries x 1500 passages a split, as
# `edge-dse eval` made the cards). quick: under 5 minutes on 2 cores. tiny: the test's.
PRESETS = {
    "full": dict(docs=256, queries=512, rounds=3, eval_queries=200, eval_corpus=1500, dse_sizes=[1000, 10_000],
                 teacher_pairs=2000, dse_real=2000, sizes=[10_000, 100_000, 1_000_000], real=100_000,
                 search_queries=200, every=1),
    "quick": dict(docs=64, queries=128, rounds=1, eval_queries=20, eval_corpus=100, dse_sizes=[1000, 10_000],
                  teacher_pairs=200, dse_real=500, sizes=[10_000], real=500, search_queries=100, every=30),
    "tiny": dict(docs=4, queries=8, rounds=1, eval_queries=3, eval_corpus=10, dse_sizes=[50, 100],
                 teacher_pairs=20, dse_real=20, sizes=[300], real=40, search_queries=5, every=20),
}
SECTIONS = ("encode", "dse", "search", "sync")


def run(section: str, s: dict, a) -> tuple[str, dict]:
    overrides = {"assets/student": a.student, "work/distill/student/model": a.student_fp32,
                 "work/models/mpnet/all-mpnet-base-v2": a.mpnet, "work/models/mpnet-int8": a.mpnet_int8}
    if section == "encode":
        from bench.encode import section as encode

        quality = {"data_dir": a.data, "queries": s["eval_queries"], "corpus": s["eval_corpus"]}
        return encode(s["docs"], s["queries"], a.threads, s["rounds"], {k: v for k, v in overrides.items() if v}, quality)
    if section == "dse":
        from bench.dse import section as dse

        return dse(s["dse_sizes"], s["teacher_pairs"], a.threads, a.teacher, a.student, s["dse_real"])
    if section == "search":
        from bench.search import section as search

        return search(s["sizes"], s["real"], s["search_queries"], a.student, data=a.data)
    from bench.sync import section as sync

    return sync(a.sync_folder, s["every"], a.student)


def targets(facts: dict) -> str:
    """Each ratio against the distil and foundation issues' targets."""
    def judge(value, ok):
        return ("n/a (row not available)", "") if value is None or value != value else (f"{value:.3g}", "yes" if ok(value) else "NO")

    p50 = facts.get("p50_ms", {})
    p50_size = 100_000 if 100_000 in p50 else max(p50, default=None)
    recall = facts.get("recall", {})
    dse = facts.get("dse", {})
    dse_size = 10_000 if 10_000 in dse else max(dse, default=None)
    rows = [
        ("encode docs/s, student int8 / all-MiniLM-L6-v2 torch", ">= 5x", *judge(facts.get("encode_docs_ratio"), lambda v: v >= 5)),
        (f"query p50 ms end-to-end at {p50_size or 'n/a'} chunks (target at 100k)", "<= 5 ms", *judge(p50.get(p50_size), lambda v: v <= 5)),
        ("recall@10 vs exact, worst size", ">= 0.98", *judge(min(recall.values(), default=None), lambda v: v >= 0.98)),
        (f"DSE speed-up at N = {dse_size or 'n/a'} (target at 10k)", ">= 1000x", *judge(dse.get(dse_size), lambda v: v >= 1000)),
    ]
    return md_table(["target", "wanted", "measured", "met"], [list(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("all",) + SECTIONS)
    ap.add_argument("--quick", action="store_true", help="small samples: under 5 minutes")
    ap.add_argument("--tiny", action="store_true", help="tiny samples (the harness test)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--student", help="student asset folder (default assets/student)")
    ap.add_argument("--student-fp32", help="student sentence-transformers folder (default work/distill/student/model)")
    ap.add_argument("--teacher", help="teacher asset folder (default assets/teacher)")
    ap.add_argument("--mpnet", help="all-mpnet-base-v2 sentence-transformers folder (default work/models/mpnet/...)")
    ap.add_argument("--mpnet-int8", help="all-mpnet-base-v2 int8 asset folder (default work/models/mpnet-int8)")
    ap.add_argument("--data", default="work/distill/data", help="held-out splits for nDCG@10")
    ap.add_argument("--sync-folder", help="folder to index (default: the Python docs sources)")
    ap.add_argument("--out", help="also write the report to this file")
    a = ap.parse_args(argv)
    preset = "tiny" if a.tiny else "quick" if a.quick else "full"
    s = PRESETS[preset]
    t0 = time.perf_counter()
    parts = [f"# edge_dse vs the alternatives — {datetime.date.today().isoformat()}\n",
             f"machine: {machine()}; {a.threads} threads; preset `{preset}`\n",
             f"command: `python -m bench {shlex.join(sys.argv[1:] if argv is None else argv)}`\n"]
    facts: dict = {}
    for section in SECTIONS if a.what == "all" else (a.what,):
        t = time.perf_counter()
        text, got = run(section, s, a)
        facts.update(got)
        parts.append(f"## {section}\n\n{text}\n\n({time.perf_counter() - t:.0f} s)\n")
        print(parts[-1], flush=True)
    if a.what == "all":  # one section alone cannot judge the others' targets
        parts.append("## targets\n\n" + targets(facts) + "\n")
    parts.append(f"total {math.ceil(time.perf_counter() - t0)} s\n")
    print("\n".join(parts[-2 if a.what == "all" else -1:]))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
