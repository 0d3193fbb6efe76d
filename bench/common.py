"""Shared pieces of the benchmarks: real text, the models and the Chroma store several questions
use, exact search, timing, memory, child processes, tables."""

from __future__ import annotations

import importlib.util
import os
import platform
import random
import resource
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
BENCH_EXTRA = "pip install -e '.[bench]' (its own venv: bench/README.md)"

# The real text of every benchmark; the harness test points it at a small folder of its own.
PYDOC_SOURCES = Path(os.environ.get("EDGE_DSE_BENCH_DOCS", "/usr/share/doc/python3.11/html/_sources"))


def source_folder(arg: str) -> Path:
    """A benchmark's folder argument, checked (the default is the Python docs)."""
    src = Path(arg)
    if not src.is_dir():
        raise SystemExit(f"{src} is not a folder (for the default: apt-get install -y python3.11-doc)")
    return src


def copy_sample(src: Path, dest: Path, every: int = 1) -> int:
    """Copy every Nth file of src (sorted by path) to dest, keeping the tree; returns how many.
    Benchmarks index a copy: the runs see the same files, and nothing system-wide is touched."""
    copied = 0
    for i, f in enumerate(sorted(x for x in src.rglob("*") if x.is_file())):
        if i % every == 0:
            (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / f.relative_to(src))
            copied += 1
    return copied


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


def real_passages(limit: int, data_dir: str | os.PathLike | None = None, seed: int = 0) -> tuple[list[str], dict]:
    """Up to `limit` distinct real passages for the search section: the Python docs passages
    first (pydoc_passages' seeded order, so a cache of the first ones stays valid), then the
    passages of the distiller's splits in `data_dir` (Debian descriptions, WordNet glosses:
    the Debian text sources), seeded order. With only the Python docs (~15k passages) a 1M-chunk index
    would be ~70 near-copies of each passage, and recall@10 "vs exact" would mostly measure how
    an index orders those near-ties; more real text keeps the copies per passage low.
    Returns (passages, {source: count})."""
    import json

    texts = list(dict.fromkeys(pydoc_passages()))[:limit]  # the docs repeat some paragraphs
    counts = {"Python docs": len(texts)}
    files = sorted(Path(data_dir).glob("*.jsonl")) if data_dir and Path(data_dir).is_dir() else []
    if len(texts) < limit and files:
        seen, more = set(texts), []
        for path in files:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    passage = json.loads(line).get("passage", "")
                    if len(passage) >= 40 and passage not in seen:
                        seen.add(passage)
                        more.append(passage)
        random.Random(seed).shuffle(more)
        more = more[: limit - len(texts)]
        texts += more
        counts[f"{Path(data_dir)} splits"] = len(more)
    return texts, counts


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


def student_or_baseline(student: str | None = None) -> Path:
    """The bi-encoder the search, sync and DSE benchmarks run: the student when it has been
    distilled, else the shipped baseline (every table names the model it used)."""
    path = Path(student) if student else ASSETS / "student"
    return path if (path / "model.onnx").is_file() else ASSETS / "baseline"


def search_encoder(student: str | None = None):
    from edge_dse import Encoder

    return Encoder(student_or_baseline(student), threads=2)


# Chroma is the store users would pick instead, in the search and the sync comparisons: a
# PersistentClient given our vectors (it embeds nothing), with edge_dse's HNSW settings (M,
# ef_construction, ef_search), cosine space.
def chroma_missing() -> str | None:
    """Why Chroma cannot run here (the bench extra is not installed), or None."""
    return None if importlib.util.find_spec("chromadb") else f"chromadb is not installed: {BENCH_EXTRA}"


def chroma_collection(path, create: bool = True):
    """(client, collection) of the benchmarks' Chroma store at path, made with edge_dse's HNSW
    settings when `create`, else opened as it is."""
    import chromadb
    from edge_dse.store.ann import AnnIndex

    client = chromadb.PersistentClient(path=str(path), settings=chromadb.Settings(anonymized_telemetry=False))
    if not create:
        return client, client.get_collection("bench", embedding_function=None)
    hnsw = {"space": "cosine", "max_neighbors": AnnIndex.DEFAULTS["M"],
            "ef_construction": AnnIndex.DEFAULTS["ef_construction"], "ef_search": AnnIndex.DEFAULTS["ef_search"]}
    return client, client.get_or_create_collection("bench", configuration={"hnsw": hnsw}, embedding_function=None)


def chroma_add(client, col, vectors, documents, metadatas=None) -> None:
    """Everything in batches of the client's maximum (Chroma refuses larger adds)."""
    step = client.get_max_batch_size()
    for lo in range(0, len(vectors), step):
        hi = min(len(vectors), lo + step)
        col.add(ids=[str(i) for i in range(lo, hi)], embeddings=vectors[lo:hi], documents=documents[lo:hi],
                metadatas=metadatas[lo:hi] if metadatas else None)


# Scores held at once by exact_top_k: 2**26 float32 = 256 MB (200 queries x 1M rows would be 800 MB).
EXACT_BLOCK_SCORES = 1 << 26


def exact_top_k(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indexes of the k best rows of `matrix` for each query by dot product (cosine for unit
    vectors), best first: matrix @ query, argpartition, then a sort of the k kept. The truth every
    recall is measured against, and what the "exact numpy" search engine row times. Queries go in
    blocks so that the scores held at once stay under EXACT_BLOCK_SCORES at any matrix size."""
    k = min(k, len(matrix))
    out = np.empty((len(queries), k), dtype=np.int64)
    block = max(1, EXACT_BLOCK_SCORES // max(1, len(matrix)))
    for lo in range(0, len(queries), block):
        scores = queries[lo: lo + block] @ matrix.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[lo: lo + block] = np.take_along_axis(top, order, axis=1)
    return out


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


def rss_mb() -> float:
    """Resident memory of this process now (peak_rss_mb cannot go down, so growth needs this)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(module: str, payload: dict, timeout: float | None = None) -> dict:
    """Run `python -m MODULE --one PAYLOAD.json` and return the JSON dict it prints last.

    Each measured row runs in its own process so its peak RSS is its own and a crash (or a
    missing package) costs that row only: the failure comes back as {"error": ...}."""
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump(payload, fh)
    try:
        out = subprocess.run([sys.executable, "-m", module, "--one", fh.name], capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        os.unlink(fh.name)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {out.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def child_main(measure) -> bool:
    """In a child started by run_child: read the payload, print measure(payload) as JSON."""
    import json

    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        payload = json.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))
        print(json.dumps(measure(payload)))
        return True
    return False


def md_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; numbers right-aligned. A row of one string is a note row ("not
    available: why") spanning the first cell, the rest left blank."""
    def cell(v):
        if isinstance(v, float):
            return "n/a" if v != v else (f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}")
        return "" if v is None else str(v)

    align = ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        r = list(r) + [""] * (len(headers) - len(r))
        lines.append("| " + " | ".join(cell(v) for v in r) + " |")
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float:
    """a / b, or nan when either is missing: a ratio needs both rows from the same run."""
    try:
        return float(a) / float(b) if a and b else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def times(x: float) -> str:
    """A ratio as "2.50x" ("n/a" when its baseline row is missing)."""
    return "n/a" if x != x else f"{x:.2f}x"
