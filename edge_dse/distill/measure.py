"""Measuring an exported graph the way the program runs it: the run-time `Encoder` on a graph
that is not in an asset folder yet, speed (texts/s), cosine between two models' vectors, the
CPU measured on, and the real text it is measured on (a seeded sample of Debian package
descriptions, or the caller's). What a card's "Measured" section records comes from here.
Training-time code.
"""

from __future__ import annotations

import hashlib
import platform
import random
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import models
from ..errors import EdgeDSEError
from .data import APT_LISTS, translation_files, translation_records  # the one Translation-en parser

MEASURE_THREADS = 2
MEASURE_REPEATS = 3
MEASURE_BATCH = 32  # the run-time encoder's default batch size


# -- real text for measuring -------------------------------------------------------------------
def debian_texts(n_docs: int = 500, n_queries: int = 500, *, seed: int = 0, max_chars: int = 1500,
                 lists_dir: Path = APT_LISTS) -> tuple[list[str], list[str], str]:
    """A seeded sample of Debian package descriptions: long descriptions as documents (cut to
    `max_chars` at a word boundary, ~up to 256 tokens) and synopsis lines as queries; query i
    is the synopsis of document i (for i < min(n_docs, n_queries)).

    The English long descriptions live in the Translation-en indexes: images that set
    Acquire::Languages "none" have only synopses, so fetch them with
    `apt-get update -o Acquire::Languages=en` (a later plain `apt-get update` deletes them again).
    """
    files = translation_files(lists_dir)
    seen: dict[str, tuple[str, str]] = {}
    for _package, synopsis, body in translation_records(files):
        if len(body.split()) >= 20 and len(synopsis.split()) >= 3 and body not in seen:
            seen[body] = (synopsis, body)
    pairs = sorted(seen.values(), key=lambda p: hashlib.sha256(p[1].encode()).hexdigest())
    n = max(n_docs, n_queries)
    if len(pairs) < n:
        raise EdgeDSEError(f"only {len(pairs)} usable Debian descriptions found, {n} asked for")
    sample = random.Random(seed).sample(pairs, n)

    def cut(text: str) -> str:
        if len(text) <= max_chars:
            return text
        return text[:max_chars].rsplit(None, 1)[0]

    docs = [cut(body) for _, body in sample[:n_docs]]
    queries = [synopsis for synopsis, _ in sample[:n_queries]]
    release = sorted({re.sub(r"^.*_dists_([^_]+)_.*$", r"\1", f.name) for f in files})
    source = (f"Debian package descriptions ({', '.join(release)}, Translation-en): seeded sample (seed {seed}) of "
              f"{n_docs} unique long descriptions cut to {max_chars} chars as documents, {n_queries} synopsis lines as queries")
    return docs, queries, source


@dataclass(frozen=True)
class MeasureTexts:
    """The real text a graph is measured on: documents, queries (optional: measured apart, as
    the run time embeds them apart) and a line saying where they came from, for the card."""

    docs: Sequence[str]
    queries: Sequence[str] = field(default_factory=list)
    source: str = "texts passed by the caller"

    @classmethod
    def debian_sample(cls) -> "MeasureTexts":
        """debian_texts() with its defaults: what an export measures on unless told."""
        docs, queries, source = debian_texts()
        return cls(docs, queries, source)

    @property
    def all(self) -> list[str]:
        """Documents, then queries: one batch of vectors that `int8_vs_fp32` splits again."""
        return list(self.docs) + list(self.queries)


# -- running models ----------------------------------------------------------------------------
def run_time_encoder(model_file: Path, tokenizer_file: Path, *, model_id: str, dim: int, pooling: str,
                     normalize: bool, output: str | None, max_length: int, threads: int = MEASURE_THREADS):
    """The run-time Encoder on a graph that is not in an asset folder yet (the fp32 graph, the
    int8 one before it is copied in): same session options, token batches and pooling as
    `edge-dse` runs, so the card's measurements are of the program, not of a look-alike."""
    from ..encoder import Encoder

    card = {"id": model_id, "dim": int(dim), "pooling": pooling, "normalize": bool(normalize),
            "max_length": int(max_length), "output": output}
    return Encoder(models.ModelCard.from_dict(card, Path(model_file).parent, model_file=model_file,
                                              tokenizer_file=tokenizer_file), threads=threads)


def cosine_stats(a, b) -> dict:
    """Row-wise cosine of two embedding matrices: mean, min and 5th percentile."""
    import numpy as np

    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = (a * b).sum(axis=1)
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6),
            "p5": round(float(np.percentile(cos, 5)), 6)}


def throughput(embedders: dict, texts: Sequence[str], repeats: int = MEASURE_REPEATS) -> dict:
    """texts/s of each embedder: median of `repeats` full passes, the embedders interleaved in
    each round so that load from other processes hits them alike. One warm-up pass first."""
    times: dict = {name: [] for name in embedders}
    for emb in embedders.values():
        emb.encode(texts[: MEASURE_BATCH * 2])
    for _ in range(repeats):
        for name, emb in embedders.items():
            start = time.perf_counter()
            emb.encode(texts)
            times[name].append(time.perf_counter() - start)
    return {name: round(len(texts) / statistics.median(t), 1) for name, t in times.items()}


def cpu_description() -> dict:
    """The measuring CPU: int8 speed and accuracy depend on VNNI (see quantize.QUANTIZATION)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {"model": name, "isa": isa, "threads": MEASURE_THREADS}


# -- what a card records -----------------------------------------------------------------------
def int8_vs_fp32(fp32_emb, int8_emb, fp32_vecs, int8_vecs, texts: MeasureTexts, repeats: int = MEASURE_REPEATS) -> dict:
    """The int8 graph against the fp32 one: cosine of their vectors (`*_vecs` hold texts.all,
    documents then queries) and the speed of each, documents and queries apart."""
    n_docs = len(texts.docs)
    measured = {"text_source": texts.source, "texts": n_docs, "queries": len(texts.queries),
                "threads": MEASURE_THREADS, "batch_size": MEASURE_BATCH,
                "max_batch_tokens": models.MAX_BATCH_TOKENS, "repeats": repeats,
                "cpu": cpu_description()}
    docs_cos = cosine_stats(int8_vecs[:n_docs], fp32_vecs[:n_docs])
    measured.update({"cosine_mean": docs_cos["mean"], "cosine_min": docs_cos["min"], "cosine_p5": docs_cos["p5"]})
    speed = throughput({"fp32": fp32_emb, "int8": int8_emb}, list(texts.docs), repeats)
    measured.update({"docs_per_s_fp32": speed["fp32"], "docs_per_s_int8": speed["int8"],
                     "speedup": round(speed["int8"] / speed["fp32"], 2)})
    if texts.queries:
        q_speed = throughput({"fp32": fp32_emb, "int8": int8_emb}, list(texts.queries), repeats)
        measured["query_cosine"] = cosine_stats(int8_vecs[n_docs:], fp32_vecs[n_docs:])
        measured.update({"queries_per_s_fp32": q_speed["fp32"], "queries_per_s_int8": q_speed["int8"]})
    return measured


def fp32_speed(fp32_emb, texts: MeasureTexts, repeats: int = MEASURE_REPEATS) -> dict:
    """What is measured of a graph shipped unquantised: its speed on the documents."""
    speed = throughput({"fp32": fp32_emb}, list(texts.docs), repeats)
    return {"text_source": texts.source, "texts": len(texts.docs), "threads": MEASURE_THREADS,
            "docs_per_s_fp32": speed["fp32"], "cpu": cpu_description()}
