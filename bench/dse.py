"""The DSE speed-up: ranking one query against N candidates with the teacher cross-encoder
exhaustively (one forward pass per (query, passage) pair) vs the student bi-encoder with the
passages' vectors precomputed (one query encode + a matrix product + a top-10 partition).

    python -m bench.dse [--sizes 1000 10000] [--teacher-pairs 2000] [--teacher DIR] [--student DIR]
    python -m bench.dse --rerank [--teacher DIR] [--vs NAME=DIR ...]   # rerank latency by depth

Candidates are real Python docs passages (repeated when N is larger than the docs). The teacher's
cost is linear in N (every pair is scored alone), so it is timed on --teacher-pairs pairs at most
and scaled to N; the table says how many pairs were timed. The student's time is the median
over 20 real queries, measured at the full N.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.common import (ASSETS, child_main, exact_top_k, md_table, pydoc_passages, pydoc_queries, run_child,
                          student_or_baseline)

TARGET = 1000  # the distil issue's target at N = 10k


def measure(p: dict) -> dict:
    from edge_dse import Encoder, Reranker

    teacher = Reranker(p["teacher"], threads=p["threads"])
    student = Encoder(p["student"], threads=p["threads"])
    top_n = max(p["sizes"])
    texts = pydoc_passages(min(top_n, max(p["teacher_pairs"], p["real"])))
    queries = pydoc_queries(20)
    base = student.encode(texts[: p["real"]], kind="document")  # the index a user already has
    rng = np.random.default_rng(0)
    rows = []
    for n in p["sizes"]:
        m = min(n, p["teacher_pairs"])
        pairs = [texts[i % len(texts)] for i in range(m)]
        teacher.score(queries[0], pairs[:8])  # warm-up
        t0 = time.perf_counter()
        teacher.score(queries[0], pairs)
        t_teacher = (time.perf_counter() - t0) * n / m
        vecs = base[np.arange(n) % len(base)]
        vecs = vecs + rng.normal(0, 0.02, vecs.shape).astype(np.float32) * (np.arange(n) >= len(base))[:, None]
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        times = []
        for q in queries:
            t0 = time.perf_counter()
            exact_top_k(vecs, student.encode([q], kind="query"), 10)
            times.append(time.perf_counter() - t0)
        rows.append({"n": n, "timed_pairs": m, "teacher_s": t_teacher, "student_s": statistics.median(times)})
    return {"teacher": teacher.id, "student": student.id, "rows": rows}


def section(sizes: list[int], teacher_pairs: int, threads: int, teacher: str | None = None, student: str | None = None,
            real: int = 2000, timeout: float | None = None) -> tuple[str, dict]:
    teacher = teacher or str(ASSETS / "teacher")
    student = str(student_or_baseline(student))
    headers = ["N candidates", "teacher pairs timed", "teacher exhaustive s", "student ms (encode + dot + top-10)", "speed-up"]
    from pathlib import Path

    for what, path in (("teacher", teacher), ("student", student)):
        if not (Path(path) / "model.onnx").is_file():
            return md_table(headers, [[f"not available: no {what} model at {path} (not distilled yet?)"]]), {}
    got = run_child("bench.dse", {"teacher": teacher, "student": student, "sizes": sizes, "teacher_pairs": teacher_pairs,
                                  "threads": threads, "real": real}, timeout)
    if "error" in got:
        return md_table(headers, [[f"failed: {got['error']}"]]), {}
    rows = [[r["n"], r["timed_pairs"], r["teacher_s"], r["student_s"] * 1000, f"{r['teacher_s'] / r['student_s']:.0f}x"]
            for r in got["rows"]]
    return (f"teacher `{got['teacher']}` vs student `{got['student']}`, {threads} threads, one query; target "
            f">= {TARGET}x at 10k\n\n" + md_table(headers, rows)), {"dse": {r["n"]: r["teacher_s"] / r["student_s"] for r in got["rows"]}}


RERANK_DEPTHS = (10, 20, 30, 50)


def rerank_latency(p: dict) -> dict:
    """Median ms to rerank a query's top N chunk-sized passages (Python docs chunks, 256 tokens at
    most), per depth, for each model, through the run-time Reranker: a teacher cross-encoder, or a
    bi-encoder asset (e.g. all-mpnet-base-v2 int8), which the Reranker scores by cosine, one
    forward pass per passage, so it costs what a cross-encoder of its size (12 layers, 768-d for
    mpnet) would."""
    from edge_dse import Reranker

    passages = pydoc_passages(max(p["depths"]) * 4, min_chars=800)
    queries = pydoc_queries(p["queries"])
    out = {}
    for name, path in p["models"].items():
        model = Reranker(path, threads=p["threads"], max_length=256)
        model.score(queries[0], passages[:8])  # warm-up
        rows = {}
        for d in p["depths"]:
            rounds = []
            for r in range(p["rounds"]):
                times = []
                for qi, q in enumerate(queries):
                    docs = passages[(qi * 7 + r) % (len(passages) - d):][:d]
                    t0 = time.perf_counter()
                    model.score(q, docs)
                    times.append((time.perf_counter() - t0) * 1000)
                rounds.append(statistics.median(times))
            rows[d] = statistics.median(rounds)
        out[name] = rows
    return out


def rerank_section(models: dict[str, str], threads: int = 2, depths=RERANK_DEPTHS, queries: int = 20, rounds: int = 3) -> str:
    """The rerank-latency table, each model's ms also as a ratio to the first model's."""
    got = rerank_latency({"models": models, "threads": threads, "depths": list(depths), "queries": queries, "rounds": rounds})
    first = next(iter(got))
    rows = [[name] + [f"{ms[d]:.0f} ({ms[d] / got[first][d]:.2f}x)" for d in depths] for name, ms in got.items()]
    return (f"rerank: median ms over {queries} queries (median of {rounds} rounds) to score the top N chunks "
            f"(Python docs, >= 800 chars, cut at 256 tokens), {threads} threads; (ratio to `{first}`)\n\n"
            + md_table(["model"] + [f"top {d}" for d in depths], rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rerank", action="store_true", help="rerank latency by depth instead of the DSE speed-up")
    ap.add_argument("--vs", action="append", default=[], metavar="NAME=DIR",
                    help="with --rerank: another model to time (a teacher folder or a bi-encoder asset)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--teacher-pairs", type=int, default=2000)
    ap.add_argument("--teacher")
    ap.add_argument("--student")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.rerank:
        models = {"teacher " + (args.teacher or "assets/teacher"): args.teacher or str(ASSETS / "teacher")}
        models.update(dict(v.split("=", 1) for v in args.vs))
        print(rerank_section(models, args.threads))
        return
    print(section(args.sizes, args.teacher_pairs, args.threads, args.teacher, args.student)[0])


if __name__ == "__main__":
    if not child_main(measure):
        main()
