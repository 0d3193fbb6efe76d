"""`edge-dse-app --selftest`: index the documents shipped with the program, search, rerank.

Meant for a freshly unpacked desktop bundle (and CI): it runs everything a search needs (text
extraction for several formats, the encoder, SQLite, HNSW, the teacher when one ships) on a
throwaway library in a temporary folder, so the user's own library is never touched, and exits 0
only if every query finds the document written to answer it.

The rerank step needs a teacher. When none ships (assets/ has no teacher yet) the search checks
still decide the result and the output says plainly that rerank was skipped, so a pass without a
teacher cannot be mistaken for a pass with one.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from .errors import EdgeDSEError

# Data files beside this module: found the same way from a checkout, a wheel and the bundle
# (PyInstaller puts them under sys._MEIPASS/edge_dse/, where this module's __file__ points).
DOCS = Path(__file__).resolve().parent / "selftest_docs"

# Paraphrases that share few words with their document: finding them needs the encoder.
CASES = (
    ("my bike wheel lost its air, how do I fix the hole in the tube", "bicycle-puncture.md"),
    ("making bread with a natural leaven", "sourdough.txt"),
    ("what happens if I declare my earnings to the government too late", "tax-return.html"),
    ("keeping potted greenery alive during the cold months", "houseplants.rst"),
    ("order a list of tuples by one field, largest first", "sort_records.py"),
    ("how to stop lying awake at night", "sleep.md"),
    ("getting rid of the chalky white deposits inside my water boiler", "kettle-descaling.pdf"),
    ("draining the old lubricant from the motor of my vehicle", "engine-oil.docx"),
)


def _say(message: str) -> None:
    print(f"selftest: {message}", flush=True)


def _check(label: str, query: str, hits, expected: str, ms: float) -> bool:
    names = [Path(h.path).name for h in hits]
    ok = bool(names) and names[0] == expected
    where = f"rank {names.index(expected) + 1}" if expected in names else "not in the hits"
    _say(f"{label} {'ok  ' if ok else 'FAIL'} {query!r} -> {names[0] if names else '(no hits)'} "
         f"(expected {expected}: {where}; {ms:.1f} ms)")
    return ok


def _find_teacher(teacher: str | os.PathLike | None) -> tuple[Path | None, str]:
    """(teacher folder, '') or (None, why there is none). Only looks for the folder: a teacher
    that is present but broken must fail the selftest, not be skipped."""
    from .rerank import resolve_teacher_dir

    try:
        return resolve_teacher_dir(teacher), ""
    except EdgeDSEError as exc:
        return None, str(exc)


def run(*, model: str | os.PathLike | None = None, teacher: str | os.PathLike | None = None,
        docs: Path = DOCS) -> int:
    """Index `docs`, run every case through search and (when a teacher is there) rerank.
    Returns the process exit status: 0 only if every check passed."""
    from .library import Library

    started = time.perf_counter()
    expected = {name for _, name in CASES}
    missing = sorted(n for n in expected if not (docs / n).is_file())
    if missing:
        _say(f"FAIL: the shipped documents are incomplete: {', '.join(missing)} missing from {docs}")
        return 1
    passed = True
    with tempfile.TemporaryDirectory(prefix="edge-dse-selftest-") as tmp:
        with Library(Path(tmp) / "library", model=model, progress=False) as lib:
            report = lib.add(docs)
            _say(f"model {lib.model_card['id']}; indexed {docs}: {report.summary()}")
            for path, reason in report.errors:
                _say(f"FAIL: could not index {path}: {reason}")
            passed = not report.errors and report.added >= len(expected)
            first_search = None
            for query, name in CASES:
                t0 = time.perf_counter()
                hits = lib.search(query, k=len(expected))
                ms = (time.perf_counter() - t0) * 1000
                first_search = first_search or time.perf_counter() - started
                passed &= _check("search", query, hits, name, ms)

            teacher_dir, problem = _find_teacher(teacher)
            if teacher_dir is None:
                _say(f"rerank SKIPPED: no teacher ships with this program, so only search was checked ({problem})")
            else:
                for query, name in CASES:
                    hits = lib.search(query, k=len(expected))
                    t0 = time.perf_counter()
                    reranked = lib.rerank(query, hits, teacher=teacher_dir)
                    passed &= _check("rerank", query, reranked, name, (time.perf_counter() - t0) * 1000)
                _say(f"rerank checked with the teacher in {teacher_dir}")
    _say(f"first search {first_search:.2f} s after the selftest started; total {time.perf_counter() - started:.2f} s")
    _say("PASSED" if passed else "FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(run())
