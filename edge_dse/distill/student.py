"""The student: a 3-layer bi-encoder with a learned projection, distilled from the teacher (DSE).

Built from all-MiniLM-L6-v2 by keeping 3 of its 6 layers (layer dropping keeps the embedding
space the rest of the model was trained for), then mean pooling and a linear projection to a
compact embedding (HPD), initialised with the principal components of the full model's passage
embeddings so that training starts from the big model's geometry, not from noise.

DSE: for each training query, the teacher scored its candidate list; the student's cosine scores
over the same list are trained to match the teacher's distribution (KL at a temperature), with
teacher annealing (DvBERT): the target moves from the teacher toward the natural positive as
training goes on. Matryoshka: the loss is also taken on prefixes of the embedding, so a shorter
prefix stays usable.

The result is saved as a sentence-transformers folder (Transformer, Pooling, Dense, Normalize)
that edge_dse.distill.export turns into the int8 asset.
Training-time code (torch): not imported by `import edge_dse`.
"""

from __future__ import annotations

import datetime
import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import train_common as tc


@dataclass
class StudentConfig(tc.StudentSettings):
    group: int = 8
    batch_queries: int = 16
    query_max_length: int = 32
    passage_max_length: int = 128
    warmup: float = 0.06
    temperature: float = 1.0  # over the teacher's standardised scores
    scale: float = 20.0  # student cosine -> logits (cosines live in [-1, 1])
    gold_start: float = 0.0  # teacher annealing: gold share at the first step ...
    gold_end: float = 0.5  # ... and at the last
    checkpoint_every: int = 50
    pca_texts: int = 4000
    # Stage 2 on top of stage 1 (hpd.py): `init` is that model, and stage 1's loss on its own
    # batches is kept as a regulariser, weighted by hpd_weight, so the general ability stage 1
    # brought is not traded for the teacher's narrower lists.
    hpd_weight: float = 0.0


class Student:
    """Transformer + mean pooling + projection, in torch (training side)."""

    def __init__(self, transformer, projection, tokenizer):
        self.transformer, self.projection, self.tokenizer = transformer, projection, tokenizer

    def parameters(self):
        return list(self.transformer.parameters()) + list(self.projection.parameters())

    def embed(self, texts: Sequence[str], max_length: int):
        import torch

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = self.transformer(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
        return self.projection(pooled)


def cut_base(base_dir: Path, cfg: tc.StudentSettings, tokenizer, texts: Sequence[str]):
    """The student's transformer before training: the base's `cfg.keep_layers`, and with
    `cfg.ffn_units` only that many feed-forward units per layer, the busiest on `texts`."""
    model = layer_dropped(base_dir, cfg.keep_layers)
    if cfg.ffn_units and cfg.ffn_units < model.config.intermediate_size:
        prune_ffn(model, tokenizer, cfg.ffn_units, texts[:256])
    return model


def layer_dropped(base_dir: Path, keep: Sequence[int]):
    """The base BERT with only the `keep` layers (in order)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(base_dir))
    layers = model.encoder.layer
    keep = [i for i in keep if i < len(layers)] or [0]
    model.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])
    model.config.num_hidden_layers = len(keep)
    return model


def prune_ffn(model, tokenizer, keep: int, texts: Sequence[str], max_length: int = 256) -> list[list[int]]:
    """Keep the `keep` feed-forward units of each layer that carry the most (in place): a unit's
    importance is its |activation| summed over `texts` times the norm of its output weights, so
    units that rarely fire or write little are dropped. A way to make a layer cheaper: the FFN is
    ~60% of a layer's multiply-adds at 256 tokens, though halving it saves only 12-14% of the
    int8 run time (`python -m bench.encode cuts`). Returns the kept units per layer."""
    import torch

    layers = model.encoder.layer
    sums = ffn_activity(model, tokenizer, texts, max_length)
    kept = []
    with torch.no_grad():
        for layer, act in zip(layers, sums):
            up, down = layer.intermediate.dense, layer.output.dense
            score = act * down.weight.norm(dim=0)
            idx = torch.sort(torch.topk(score, keep).indices).values
            new_up, new_down = torch.nn.Linear(up.in_features, keep), torch.nn.Linear(keep, down.out_features)
            new_up.weight.copy_(up.weight[idx]), new_up.bias.copy_(up.bias[idx])
            new_down.weight.copy_(down.weight[:, idx]), new_down.bias.copy_(down.bias)
            layer.intermediate.dense, layer.output.dense = new_up, new_down
            kept.append(idx.tolist())
    model.config.intermediate_size = keep
    return kept


def ffn_activity(model, tokenizer, texts: Sequence[str], max_length: int = 256, batch: int = 32) -> list:
    """Per layer, each feed-forward unit's |activation| summed over the real tokens of `texts`
    (padding positions masked out, so the sums do not depend on how texts were batched)."""
    import torch

    layers = model.encoder.layer
    sums = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    mask = {}  # the batch's attention mask, seen by the hooks

    def add(k, out):
        sums[k].add_((out.abs() * mask["now"][..., None]).sum((0, 1)))

    hooks = [layer.intermediate.register_forward_hook(lambda _m, _i, out, k=k: add(k, out))
             for k, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for lo in range(0, len(texts), batch):
                enc = tokenizer(list(texts[lo:lo + batch]), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                mask["now"] = enc["attention_mask"].to(sums[0].dtype)
                model(**enc)
    finally:
        for h in hooks:
            h.remove()
    return sums


def pca_projection(vectors: np.ndarray, dim: int):
    """A Linear layer onto the top `dim` principal directions of `vectors` (no centring bias, so
    cosine geometry is kept as far as `dim` directions allow)."""
    import torch

    _, _, vt = np.linalg.svd(vectors - vectors.mean(0), full_matrices=False)
    dim = min(dim, vt.shape[0])
    layer = torch.nn.Linear(vectors.shape[1], dim)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(vt[:dim].astype(np.float32)))
        layer.bias.zero_()
    return layer


def load(folder: Path) -> Student:
    """A student saved by save() (a stage-1 model), ready to train further."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    transformer = AutoModel.from_pretrained(str(folder / "0_Transformer"))
    dense = json.loads((folder / "2_Dense" / "config.json").read_text())
    projection = torch.nn.Linear(dense["in_features"], dense["out_features"])
    state = load_file(str(folder / "2_Dense" / "model.safetensors"))
    projection.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
    return Student(transformer, projection, AutoTokenizer.from_pretrained(str(folder / "0_Transformer")))


def build(cfg: StudentConfig, pca_texts: Sequence[str]) -> Student:
    import torch
    from transformers import AutoTokenizer

    if cfg.init:
        return load(Path(cfg.init))
    base_dir = tc.base_transformer_dir(cfg.base)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    transformer = cut_base(base_dir, cfg, tok, pca_texts)
    with torch.no_grad():  # PCA of the *student's* pooled output: the projection starts aligned with it
        probe = Student(transformer, torch.nn.Identity(), tok)
        vecs = np.concatenate([probe.embed(chunk, cfg.passage_max_length).numpy() for chunk in tc.batched(list(pca_texts), 64)])
    return Student(transformer, pca_projection(vecs, cfg.dim), tok)


def listwise_loss(q, p, target, scale: float, prefixes: Sequence[int]):
    """KL(target || softmax(scale * cos)) over each query's group, summed over prefix lengths."""
    import torch

    loss = 0.0
    for d in prefixes:
        qn = torch.nn.functional.normalize(q[:, :d], dim=-1)
        pn = torch.nn.functional.normalize(p[..., :d], dim=-1)
        logits = scale * torch.einsum("bd,bgd->bg", qn, pn)
        loss = loss + (-(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean())
    return loss / len(prefixes)


def train(cfg: StudentConfig, examples: list[tc.ListExample], out: Path, log=print, regulariser=None) -> Path:
    """Train (or resume) the student on teacher-scored lists; returns the sentence-transformers
    folder out/model. `regulariser(student, step)` (hpd.Regulariser) adds stage 1's loss."""
    import torch

    done = tc.finished_or_begin(out, "modules.json", "student", threads=cfg.threads, seed=cfg.seed, log=log)
    if done:
        return done
    final = out / "model"
    rng0 = random.Random(cfg.seed)
    pca_texts = rng0.sample([p for ex in examples for p in ex.passages], min(cfg.pca_texts, sum(len(e.passages) for e in examples)))
    student = build(cfg, pca_texts)
    params = [{"params": list(student.transformer.parameters()), "lr": cfg.lr},
              {"params": list(student.projection.parameters()), "lr": cfg.projection_lr}]
    loop = tc.TrainLoop("student", {"transformer": student.transformer, "projection": student.projection}, params,
                        examples=len(examples), batch=cfg.batch_queries, epochs=cfg.epochs, warmup=cfg.warmup,
                        seed=cfg.seed, checkpoint=out / "checkpoint.pt", checkpoint_every=cfg.checkpoint_every, log=log)
    student.transformer.train()
    prefixes = sorted({cfg.dim, *[d for d in cfg.matryoshka if d < cfg.dim]})
    while not loop.done:
        indexes, rng = loop.next_batch()
        batch = [examples[j] for j in indexes]
        groups = [tc.sample_group(ex, cfg.group, rng) for ex in batch]
        width = min(len(g[0]) for g in groups)
        q = student.embed([ex.query for ex in batch], cfg.query_max_length)
        p = student.embed([t for g in groups for t in g[0][:width]], cfg.passage_max_length).view(len(batch), width, -1)
        # Teacher annealing (DvBERT): the target moves from the teacher toward the natural positive.
        gold = cfg.gold_start + (cfg.gold_end - cfg.gold_start) * loop.step / max(1, loop.total - 1)
        target = tc.soft_target(np.stack([g[1][:width] for g in groups]), gold, cfg.temperature)
        loss = listwise_loss(q, p, target, cfg.scale, prefixes)
        if regulariser is not None and cfg.hpd_weight:
            loss = loss + cfg.hpd_weight * regulariser(student, loop.step)
        loop.update(loss, units=len(batch) * (width + 1), extra=f" gold {gold:.2f} texts")
    save(student, cfg, final)
    tc.write_json(out / "train.json", {"config": asdict(cfg), "examples": len(examples), **loop.summary(),
                                       "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    return final


def save(student: Student, cfg: StudentConfig, final: Path) -> None:
    """A sentence-transformers folder: 0_Transformer, 1_Pooling (mean), 2_Dense, 3_Normalize."""
    from safetensors.torch import save_file

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=final.parent))
    student.transformer.save_pretrained(str(tmp / "0_Transformer"))
    student.tokenizer.save_pretrained(str(tmp / "0_Transformer"))
    tc.write_json(tmp / "0_Transformer" / "sentence_bert_config.json", {"max_seq_length": cfg.passage_max_length, "do_lower_case": False})
    hidden = student.projection.in_features
    tc.write_json(tmp / "1_Pooling" / "config.json", {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True,
                                                      "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False})
    tc.write_json(tmp / "2_Dense" / "config.json", {"in_features": hidden, "out_features": student.projection.out_features,
                                                    "bias": True, "activation_function": "torch.nn.modules.linear.Identity"})
    # sentence-transformers names the Dense weights linear.weight / linear.bias
    state = student.projection.state_dict()
    save_file({"linear.weight": state["weight"].contiguous(), "linear.bias": state["bias"].contiguous()},
              str(tmp / "2_Dense" / "model.safetensors"))
    (tmp / "3_Normalize").mkdir()
    tc.write_json(tmp / "modules.json", [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    tc.write_json(tmp / "sentence_bert_config.json", {"max_seq_length": cfg.passage_max_length, "do_lower_case": False})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
