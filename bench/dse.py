"""The DSE speed-up: ranking one query against N candidates with the teacher cross-encoder
exhaustively (one forward pass per (query, passage) pair) vs the student bi-encoder with the
passages' vectors precomputed (one query encode + a matrix product + a top-10 partition).

    python -m bench.dse [--sizes 1000 10000] [--teacher-pairs 2000] [--teacher DIR] [--student DIR]

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

from bench.common import child_main, md_table, pydoc_passages, pydoc_queries, run_child
from bench.models import ASSETS, student_or_baseline

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
            qv = student.encode([q], kind="query")[0]
            np.argpartition(-(vecs @ qv), 10)[:10]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--teacher-pairs", type=int, default=2000)
    ap.add_argument("--teacher")
    ap.add_argument("--student")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(section(args.sizes, args.teacher_pairs, args.threads, args.teacher, args.student)[0])


if __name__ == "__main__":
    if not child_main(measure):
        main()
