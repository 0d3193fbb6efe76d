"""The fp32 ONNX graph of a bi-encoder, through Optimum, and the PyTorch reference it is checked
against.

Optimum exports the transformer alone (task feature-extraction: `last_hidden_state`); a
sentence-transformers Dense projection is appended to the graph per token (`token_embeddings`),
and pooling and normalisation are left to the run-time encoder. `torch_embed` is the same model
in PyTorch, pooled like sentence-transformers: the fp32 graph must agree with it to
`FP32_MIN_COSINE`. Training-time code: needs the train extra (torch, optimum-onnx).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import EdgeDSEError
from .measure import MEASURE_BATCH, cosine_stats
from .sources import read_dense

# fp32 ONNX and PyTorch run the same arithmetic: anything below this is a broken export, not noise.
FP32_MIN_COSINE = 0.9999


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


def graph_io(model: Path) -> tuple[list[str], list[str], int | None]:
    """A graph's input names, output names and ai.onnx opset (weights not loaded)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    return [i.name for i in graph.graph.input], [o.name for o in graph.graph.output], opset


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


@dataclass(frozen=True)
class Fp32Graph:
    """The exported fp32 graph and what its card needs to know of it."""

    path: Path
    inputs: list[str]
    output: str  # the per-token output the run time pools
    opset: int | None


def export_fp32_graph(info: dict, work: Path, log=print) -> Fp32Graph:
    """The source's transformer (read_source_info's `info`) as fp32 ONNX under work/fp32, with
    its Dense projection appended when it has one."""
    path = export_fp32(Path(info["transformer_dir"]), work / "fp32")
    inputs, outputs, opset = graph_io(path)
    if "last_hidden_state" not in outputs:
        raise EdgeDSEError(f"the exported graph has no last_hidden_state output (outputs: {outputs})")
    output = "last_hidden_state"
    if info.get("dense_dir"):  # a learned projection (the student's): appended to the graph, per token
        weight, bias = read_dense(info["dense_dir"])
        output = "token_embeddings"
        path = append_projection(path, weight, bias, work / "fp32" / "model.projected.onnx", output=output)
        log(f"export: appended the Dense projection {weight.shape[1]} -> {weight.shape[0]} as {output!r}")
    return Fp32Graph(path, inputs, output, opset)


def source_tokenizer_json(info: dict, model_dir: Path, work: Path) -> Path:
    """The source's tokenizer.json (the transformer's folder, else the model folder's); a folder
    with only vocab.txt gets one written by transformers under work/tokenizer."""
    transformer_dir = Path(info["transformer_dir"])
    for candidate in (transformer_dir / "tokenizer.json", Path(model_dir) / "tokenizer.json"):
        if candidate.is_file():
            return candidate
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(transformer_dir)).save_pretrained(str(work / "tokenizer"))
    return work / "tokenizer" / "tokenizer.json"


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


def fp32_vs_torch(fp32_vecs, reference) -> dict:
    """The fp32 graph's vectors against torch_embed's on the same texts (the card's
    export.fp32_onnx_vs_torch); refuses a graph below FP32_MIN_COSINE."""
    import numpy as np

    record = cosine_stats(fp32_vecs, reference)
    record["max_abs_diff"] = float(np.abs(fp32_vecs - reference).max())
    record["texts"] = len(reference)
    if record["min"] < FP32_MIN_COSINE:
        raise EdgeDSEError(f"fp32 ONNX disagrees with PyTorch (cosine min {record['min']}): the export is broken")
    return record
