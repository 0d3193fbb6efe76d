"""Shared pieces of the benchmarks: real text, timing, memory."""

from __future__ import annotations

import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

PYDOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
PYDOC_HTML = Path("/usr/share/doc/python3.11/html")


def need_pydocs() -> Path:
    if not PYDOC_SOURCES.is_dir():
        sys.exit("the Python docs are missing: apt-get install -y python3.11-doc")
    return PYDOC_SOURCES


def pydoc_passages(limit: int | None = None, seed: int = 0, min_chars: int = 200) -> list[str]:
    """Real documents: the Python 3.11 docs split into paragraphs-groups of up to ~1000 chars
    (our chunk size), shuffled with a fixed seed."""
    from edge_dse.ingest import chunk_text, extract

    passages = []
    for path in sorted(need_pydocs().rglob("*.rst.txt")):
        try:
            passages += [c.text for c in chunk_text(extract(path)) if len(c.text) >= min_chars]
        except Exception:
            continue
    random.Random(seed).shuffle(passages)
    return passages[:limit] if limit else passages


def pydoc_queries(limit: int = 200, seed: int = 0) -> list[str]:
    """Short real queries: the headings of the Python FAQ and library docs."""
    import re

    titles = []
    for path in sorted(need_pydocs().rglob("*.rst.txt")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for above, below in zip(lines, lines[1:]):
            if re.fullmatch(r"([=\-~^\"'])\1{3,}", below.strip()) and 10 <= len(above.strip()) <= 120 and not re.fullmatch(r"[=\-~^\"']+", above.strip()):
                titles.append(above.strip())
    random.Random(seed).shuffle(titles)
    return titles[:limit]


def timed(fn, repeats: int = 3) -> tuple[float, list[float]]:
    """Median wall time of `repeats` calls (after one warm-up call)."""
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]
