"""Which search mode finds the right answer: vector vs keyword vs hybrid, in one run.

    python -m bench.modes [--distractors 0|N] [--threads 2]

A dev retrieval set from the Python docs FAQ (docs/invariants.md, training data): every question heading that ends in "?"
is a query, its answer section (heading removed, so the query's words are not handed to the
index) is written as one file, and a hit counts when it comes from that file. --distractors N
adds N other Python docs source files (faq/ excluded) to the library, so the right answer has to
be found among many plausible ones. Prints recall@1, recall@10, MRR@10 and p50 latency per mode.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine, need_pydocs

ADORNMENT = re.compile(r"([=\-~^\"'`#*+])\1{2,}")


def faq_pairs() -> list[tuple[str, str]]:
    from edge_dse.ingest import extract

    pairs = []
    for path in sorted((need_pydocs() / "faq").glob("*.rst.txt")):
        ex = extract(path)
        heads = sorted(ex.headings, key=lambda h: h.offset)
        for h, nxt in zip(heads, heads[1:] + [None]):
            if not h.title.endswith("?"):
                continue
            lines = ex.text[h.offset: nxt.offset if nxt else len(ex.text)].split("\n")
            while lines and (lines[0].strip() == h.title or ADORNMENT.fullmatch(lines[0].strip())):
                lines.pop(0)  # the heading line and its over/underline
            body = "\n".join(lines).strip()
            if len(body) >= 80:
                pairs.append((h.title, body))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--distractors", type=int, default=0, help="other Python docs files to index beside the answers")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from edge_dse import Encoder, Library

    pairs = faq_pairs()
    root = Path(tempfile.mkdtemp(prefix="edge-dse-modes-"))
    try:
        docs = root / "docs"
        (docs / "answers").mkdir(parents=True)
        for i, (_, body) in enumerate(pairs):
            (docs / "answers" / f"faq-{i:03d}.txt").write_text(body, encoding="utf-8")
        others = [p for p in sorted(need_pydocs().rglob("*.rst.txt")) if "faq" not in p.parts][: args.distractors]
        for p in others:
            dest = docs / "other" / p.relative_to(need_pydocs())
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest)
        encoder = Encoder(threads=args.threads)
        lib = Library(root / "lib", model=encoder, progress=False)
        t0 = time.perf_counter()
        report = lib.add(docs)
        print(f"# Search modes on the Python FAQ — {machine()}, model {encoder.id}\n")
        print(f"{len(pairs)} questions; library: {report.added} files ({len(others)} distractor docs files), "
              f"{lib.status()['chunks']} chunks, indexed in {time.perf_counter() - t0:.0f} s\n")
        print("| mode | recall@1 | recall@10 | MRR@10 | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for mode in ("vector", "keyword", "hybrid"):
            lib.search("warm up", k=10, mode=mode)
            r1 = r10 = mrr = 0.0
            times = []
            for i, (question, _) in enumerate(pairs):
                want = str(docs / "answers" / f"faq-{i:03d}.txt")
                t = time.perf_counter()
                hits = lib.search(question, k=10, mode=mode)
                times.append((time.perf_counter() - t) * 1000)
                ranks = [h.rank for h in hits if h.path == want]
                if ranks:
                    r1 += ranks[0] == 1
                    r10 += 1
                    mrr += 1 / ranks[0]
            n = len(pairs)
            times.sort()
            print(f"| {mode} | {r1 / n:.3f} | {r10 / n:.3f} | {mrr / n:.3f} | {statistics.median(times):.1f} | "
                  f"{times[int(0.99 * (len(times) - 1))]:.1f} |")
        lib.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
