"""Stage 1 of the student: projective distillation (HPD) of a big bi-encoder's embedding space.

The 3-layer student (student.py's layer-dropped MiniLM-L6 + a linear projection) learns to put
every text where the big model (all-mpnet-base-v2) puts it, reduced to the student's dimension by
a fixed projection (hpd_vectors.projection), on a broad text set in every shape (hpd_texts.py):
  - vector regression: |s - t|^2 between the unit vectors (the position of each text);
  - in-batch similarity distributions: each query-side text over the batch's passage-side texts
    and back, softmax(cos / temperature), student matched to the big model by KL (the ranking
    structure: which passage is nearer, not only where each one lies).
Both are taken on the Matryoshka prefixes too (the target's leading components are its leading
principal directions). The projection starts as the least-squares map from the student's pooled
output to the targets, so step 0 already sits close to the target space.

Batches hold pairs of about the same passage length (bucketed within seeded chunks), so a CPU
spends little on padding; on a CPU with bf16 matrix units (AMX) the forward runs under bf16
autocast. Every `eval_every` steps the dev splits are measured (a small seeded sample of each
held-out split): that is the learning curve written to curve.json and the card.
Training-time code (torch): not imported by `import edge_dse`.
"""

from __future__ import annotations

import datetime
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import hpd_texts, hpd_vectors
from . import train_common as tc


@dataclass
class HPDConfig(tc.StudentSettings):
    pairs: int = 50000  # the first N pairs of the shuffled text set
    batch_pairs: int = 32
    query_max_length: int = 64
    passage_max_length: int = 256
    warmup: float = 0.05
    temperature: float = 0.05  # big-model cosines of a batch span ~0-0.8: 0.05 makes them a sharp ranking
    rank_weight: float = 1.0
    checkpoint_every: int = 100
    eval_every: int = 0  # steps between dev measurements (0: only at the start and the end)
    eval_queries: int = 100
    eval_corpus: int = 500
    precision: str = "fp32"  # or "bf16" (autocast): measured 5x slower to train here, see the card
    dropout: bool = True  # trials: see TRIALS
    # The share of batches made of pairs near each other in the target space (topic_batches):
    # their in-batch negatives are hard, so the similarity loss teaches fine distinctions (which
    # of several Python answers fits a question), not only the easy ones between a dictionary
    # gloss and a package description that random batches hold. 0: every batch random.
    topic_share: float = 0.0


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bucketed_batches(lengths: Sequence[int], batch: int, seed: int, epoch: int, chunk_batches: int = 50) -> list[list[int]]:
    """All indexes in batches of `batch` (the last one may be short), each batch from pairs of
    similar length: a seeded shuffle, cut into chunks of chunk_batches batches, each chunk sorted
    by length and cut; then the batch order is shuffled. ceil(n / batch) batches."""
    order = list(range(len(lengths)))
    rng = random.Random(seed * 7919 + epoch)
    rng.shuffle(order)
    out = []
    span = batch * chunk_batches
    for lo in range(0, len(order), span):
        part = sorted(order[lo:lo + span], key=lengths.__getitem__)
        out += [part[i:i + batch] for i in range(0, len(part), batch)]
    last = out.pop() if len(out[-1]) < batch else None  # the one short batch stays last
    rng.shuffle(out)
    return out + ([last] if last else [])


def topic_batches(vectors: np.ndarray, batch: int, seed: int, epoch: int, iters: int = 6, block: int = 4096) -> list[list[int]]:
    """All indexes in ceil(n / batch) batches of neighbours: spherical k-means of the (unit)
    vectors into ~n / batch clusters, the indexes ordered by cluster (randomly within one) and cut;
    the batch order shuffled. Seeded by seed and epoch, so a resumed run sees the same batches."""
    n = len(vectors)
    rng = np.random.default_rng(seed * 7919 + epoch)
    vectors = np.asarray(vectors, np.float32)
    centres = vectors[rng.choice(n, max(1, n // batch), replace=False)].copy()
    assign = np.zeros(n, np.int64)
    for _ in range(iters):
        for lo in range(0, n, block):
            assign[lo:lo + block] = np.argmax(vectors[lo:lo + block] @ centres.T, axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centres = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centres)  # an empty cluster keeps its centre
    order = np.lexsort((rng.random(n), assign))
    out = [order[i:i + batch].tolist() for i in range(0, n, batch)]
    last = out.pop() if len(out[-1]) < batch else None
    rng.shuffle(out)
    return out + ([last] if last else [])


def epoch_batches(lengths: Sequence[int], vectors: np.ndarray, batch: int, seed: int, epoch: int, topic_share: float) -> list[list[int]]:
    """One epoch's ceil(n / batch) batches: a topic_share of them (a multiple of `batch` pairs,
    drawn at random) of neighbours (topic_batches), the rest of similar lengths (bucketed_batches)."""
    n = len(lengths)
    m = int(n * topic_share) // batch * batch
    if not m:
        return bucketed_batches(lengths, batch, seed, epoch)
    perm = np.random.default_rng(seed * 104729 + epoch).permutation(n)
    topic, rest = perm[:m], perm[m:]
    out = [[int(topic[j]) for j in b] for b in topic_batches(vectors[topic], batch, seed, epoch)]
    if len(rest):
        out += [[int(rest[j]) for j in b] for b in bucketed_batches([lengths[i] for i in rest], batch, seed, epoch)]
    random.Random(seed * 31 + epoch).shuffle(out)
    return out


def hpd_loss(sa, sb, ta, tb, prefixes: Sequence[int], temperature: float, rank_weight: float):
    """Vector regression + in-batch similarity KL (both directions), averaged over prefixes.
    s*: student outputs (fp32), t*: target unit vectors; a = query side, b = passage side."""
    import torch
    import torch.nn.functional as F

    total = 0.0
    for d in prefixes:
        sa_n, sb_n = F.normalize(sa[:, :d], dim=-1), F.normalize(sb[:, :d], dim=-1)
        ta_n, tb_n = F.normalize(ta[:, :d], dim=-1), F.normalize(tb[:, :d], dim=-1)
        vec = ((sa_n - ta_n) ** 2).sum(-1).mean() + ((sb_n - tb_n) ** 2).sum(-1).mean()
        s, t = sa_n @ sb_n.T / temperature, ta_n @ tb_n.T / temperature
        kl = (F.kl_div(torch.log_softmax(s, 1), torch.log_softmax(t, 1), log_target=True, reduction="batchmean")
              + F.kl_div(torch.log_softmax(s.T, 1), torch.log_softmax(t.T, 1), log_target=True, reduction="batchmean"))
        total = total + vec + rank_weight * kl
    return total / len(prefixes)


def batch_loss(student, run: "Run", batch: Sequence[int], cfg: HPDConfig, prefixes: Sequence[int]):
    """Stage 1's loss on some pairs of `run` (indexes into its pairs)."""
    import torch

    sa = student.embed([run.texts[run.a[j]] for j in batch], cfg.query_max_length).float()
    sb = student.embed([run.texts[run.b[j]] for j in batch], cfg.passage_max_length).float()
    ta, tb = torch.from_numpy(run.targets[run.a[batch]]), torch.from_numpy(run.targets[run.b[batch]])
    return hpd_loss(sa, sb, ta, tb, prefixes, cfg.temperature, cfg.rank_weight)


class Regulariser:
    """Stage 1's loss on stage 1's own batches, for stage 2 (student.train's `regulariser`): the
    batch of step k is fixed by the seed, so a resumed run sees the same ones."""

    def __init__(self, cfg: HPDConfig, text_dir: Path, vector_dir: Path, projection_path: Path, batch_pairs: int = 16, log=print):
        self.cfg, self.run = cfg, Run(text_dir, vector_dir, cfg, projection_path, log=log)
        self.batches = bucketed_batches([len(self.run.texts[b]) for b in self.run.b], batch_pairs, cfg.seed + 1, 0)
        self.prefixes = sorted({cfg.dim, *[d for d in cfg.matryoshka if d < cfg.dim]})

    def __call__(self, student, step: int):
        return batch_loss(student, self.run, self.batches[step % len(self.batches)], self.cfg, self.prefixes)


class Run:
    """The data of one stage-1 run: texts, pairs and their target vectors (projected)."""

    def __init__(self, text_dir: Path, vector_dir: Path, cfg: HPDConfig, proj_path: Path, log=print):
        texts, pairs = hpd_texts.read(text_dir)
        pairs = pairs[: cfg.pairs]
        order = hpd_texts.texts_in_order(pairs, len(pairs))
        have = hpd_vectors.labelled_count(vector_dir, len(order))
        if have < len(order):
            raise SystemExit(f"hpd: only {have} of the {len(order)} texts of {len(pairs)} pairs have vectors in {vector_dir}: "
                             f"label them first (python -m edge_dse.distill.hpd_vectors ... --pairs {len(pairs)})")
        big = hpd_vectors.load(vector_dir, len(order))
        if proj_path.is_file():
            proj = np.load(proj_path)
        else:
            proj = hpd_vectors.projection(big, cfg.dim, seed=cfg.seed)
            proj_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(proj_path, proj)
        row = {t: i for i, t in enumerate(order)}
        self.targets = hpd_vectors.project(big, proj).astype(np.float32)
        self.texts = [texts[t] for t in order]
        self.a = np.array([row[p[0]] for p in pairs], dtype=np.int64)
        self.b = np.array([row[p[1]] for p in pairs], dtype=np.int64)
        self.kinds = [f"{p[2]}/{p[3]}" for p in pairs]
        self.retained = float(np.mean(np.linalg.norm(np.asarray(big[:5000], np.float32) @ proj, axis=1) ** 2))
        log(f"hpd: {len(pairs)} pairs, {len(order)} texts; the {cfg.dim}-d projection keeps {self.retained:.3f} of the "
            f"big model's squared norm")


def fit_projection(student, texts: Sequence[str], targets: np.ndarray, max_length: int, ridge: float = 1e-2):
    """The ridge-regularised least-squares linear map (with bias) from the student's pooled
    output to the targets. Unregularised, the fit uses directions the pooled outputs barely
    span and gets large weights that turn small changes of the transformer into large ones of
    the output: training then diverges (seen: nDCG 0.58 -> 0.06 in 47 steps)."""
    import torch

    with torch.no_grad():
        pooled = np.concatenate([student.embed(chunk, max_length).float().numpy() for chunk in tc.batched(list(texts), 64)])
    mean = pooled.mean(0)
    x = pooled - mean
    gram = x.T @ x
    w = np.linalg.solve(gram + ridge * np.trace(gram) / len(gram) * np.eye(len(gram)), x.T @ (targets - targets.mean(0)))
    layer = torch.nn.Linear(pooled.shape[1], targets.shape[1])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        layer.bias.copy_(torch.from_numpy((targets.mean(0) - mean @ w).astype(np.float32)))
    return layer


def dev_splits(data_dir: Path, cfg: HPDConfig):
    from .evaluate import HELD_OUT, load_split

    return [load_split(data_dir, s, max_queries=cfg.eval_queries, max_corpus=cfg.eval_corpus, seed=cfg.seed)
            for s in HELD_OUT if (Path(data_dir) / f"{s}.jsonl").is_file()]


def dev_ndcg(student, splits, cfg: HPDConfig, autocast) -> dict:
    """nDCG@10 of the torch student on each dev split sample, and their mean."""
    import torch

    from .candidates import dense_neighbours
    from .evaluate import K, metrics

    def embed(texts, max_length):
        out = np.zeros((len(texts), cfg.dim), np.float32)
        with torch.no_grad(), autocast():
            for chunk in _length_chunks(texts, 32):
                vecs = student.embed([texts[i] for i in chunk], max_length).float()
                out[chunk] = torch.nn.functional.normalize(vecs, dim=-1).numpy()
        return out

    was_training = student.transformer.training
    student.transformer.eval()  # (dropout off for measuring, whatever cfg.dropout says)
    scores = {}
    for split in splits:
        pv = embed(split.corpus, cfg.passage_max_length)
        qv = embed(split.queries, cfg.query_max_length)
        scores[split.name.replace(".test", "")] = metrics(dense_neighbours(pv, qv, K), split.positive)["ndcg@10"]
    student.transformer.train(was_training)
    scores["mean"] = round(float(np.mean(list(scores.values()))), 4) if scores else None
    return scores


def _length_chunks(texts: Sequence[str], size: int) -> list[list[int]]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i:i + size] for i in range(0, len(order), size)]


def train(cfg: HPDConfig, text_dir: Path, vector_dir: Path, out: Path, *, data_dir: Path | None = None, target: str = "mpnet",
          log=print) -> Path:
    """Train (or resume) stage 1 on `target`'s vectors (the labeller's name, for the record);
    returns the sentence-transformers folder out/model."""
    import contextlib

    import torch

    from . import student as student_mod

    done = tc.finished_or_begin(out, "modules.json", "hpd", threads=cfg.threads, seed=cfg.seed, log=log)
    if done:
        return done
    final = out / "model"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cpu_has_bf16())
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    run = Run(text_dir, vector_dir, cfg, out / "projection.npy", log=log)
    base_dir = tc.base_transformer_dir(cfg.base)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    # From a saved student (e.g. one that first learned the base model's own space), the
    # projection is fitted again: it maps the pooled output to *these* targets.
    fit_rows = np.random.default_rng(cfg.seed).choice(len(run.texts), min(2000, len(run.texts)), replace=False)
    transformer = (student_mod.load(Path(cfg.init)).transformer if cfg.init
                   else student_mod.cut_base(base_dir, cfg, tok, [run.texts[i] for i in fit_rows]))
    probe = student_mod.Student(transformer, torch.nn.Identity(), tok)
    projection = fit_projection(probe, [run.texts[i] for i in fit_rows], run.targets[fit_rows], cfg.passage_max_length)
    student = student_mod.Student(transformer, projection, tok)
    params = [{"params": list(transformer.parameters()), "lr": cfg.lr},
              {"params": list(projection.parameters()), "lr": cfg.projection_lr}]
    loop = tc.TrainLoop("hpd", {"transformer": transformer, "projection": projection}, params, examples=len(run.a),
                        batch=cfg.batch_pairs, epochs=cfg.epochs, warmup=cfg.warmup, seed=cfg.seed,
                        checkpoint=out / "checkpoint.pt", checkpoint_every=cfg.checkpoint_every, log=log)
    splits = dev_splits(data_dir, cfg) if data_dir else []
    curve_path = out / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() and loop.step else []

    def measure():
        if splits and not any(p["step"] == loop.step for p in curve):
            t = time.perf_counter()
            point = {"step": loop.step, "pairs_seen": loop.step * cfg.batch_pairs, **dev_ndcg(student, splits, cfg, autocast)}
            curve.append(point)
            tc.write_json(curve_path, curve)
            log(f"hpd: dev nDCG@10 at step {loop.step}: {point} ({time.perf_counter() - t:.0f} s)")

    measure()
    lengths = [len(run.texts[b]) for b in run.b]
    prefixes = sorted({cfg.dim, *[d for d in cfg.matryoshka if d < cfg.dim]})
    transformer.train(cfg.dropout)  # dropout on or off: a measured choice (TRIALS)
    started = time.perf_counter()
    batches: dict[int, list] = {}
    while not loop.done:
        epoch, i = divmod(loop.step, loop.steps_per_epoch)
        if epoch not in batches:
            batches = {epoch: epoch_batches(lengths, run.targets[run.b], cfg.batch_pairs, cfg.seed, epoch, cfg.topic_share)}
        batch = batches[epoch][i]
        with autocast():
            loss = batch_loss(student, run, batch, cfg, prefixes)
        loop.update(loss, units=2 * len(batch), extra=" texts")
        if cfg.eval_every and loop.step % cfg.eval_every == 0:
            measure()
    measure()
    student_mod.save(student, cfg, final)
    tc.write_json(out / "train.json", {
        "stage": f"1: projective distillation (HPD) of the {target} model's embedding space", "config": asdict(cfg), "pairs": len(run.a),
        "text_set": json.loads((Path(text_dir) / "manifest.json").read_text()),
        "texts": len(run.texts), "projection_keeps": round(run.retained, 4), "bf16_autocast": bf16,
        "train_seconds": round(time.perf_counter() - started), "curve": curve, **loop.summary(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    return final


TRIALS = (  # (name, overrides): which 3 layers, dropout, learning rate, the in-batch loss; on a small slice
    ("layers 0,2,5", {}),
    ("layers 0,1,2", {"keep_layers": (0, 1, 2)}),
    ("layers 1,3,5", {"keep_layers": (1, 3, 5)}),
    ("layers 0,2,5, no dropout", {"dropout": False}),
    ("layers 0,2,5, lr 3e-4", {"lr": 3e-4}),
    ("layers 0,2,5, regression only (no in-batch KL)", {"rank_weight": 0.0}),
)


SHAPE_TRIALS = (  # (name, overrides): the student's shape and stage 1's batches, on the run's own settings
    ("layers 0,2,5", {"keep_layers": (0, 2, 5), "ffn_units": None, "topic_share": 0.0}),
    ("layers 0,2,5, 768 FFN units", {"keep_layers": (0, 2, 5), "ffn_units": 768, "topic_share": 0.0}),
    ("layers 0,2,5, topic batches", {"keep_layers": (0, 2, 5), "ffn_units": None, "topic_share": 1.0}),
    ("layers 0,2,4,5", {"keep_layers": (0, 2, 4, 5), "ffn_units": None, "topic_share": 0.0}),
)


def run_trials(base: HPDConfig, text_dir: Path, vector_dir: Path, out: Path, *, data_dir: Path, pairs: int = 2000,
               trials=TRIALS, log=print) -> list[dict]:
    """Short runs on the first `pairs` pairs, one per trial: dev nDCG@10 at the start and the end.
    Cached in out/trials.json (a trial already measured is not run again)."""
    import dataclasses
    import shutil

    path = out / "trials.json"
    done = json.loads(path.read_text()) if path.is_file() else []
    for name, overrides in trials:
        if any(t["trial"] == name for t in done):
            continue
        cfg = dataclasses.replace(base, pairs=pairs, eval_every=0, checkpoint_every=10**9, **overrides)
        folder = out / "trial"
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        train(cfg, text_dir, vector_dir, folder, data_dir=data_dir, log=log)
        curve = json.loads((folder / "curve.json").read_text())
        done.append({"trial": name, "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
                     "pairs": pairs, "steps": curve[-1]["step"], "start": curve[0], "end": curve[-1],
                     "seconds": round(time.perf_counter() - t)})
        tc.write_json(path, done)
        shutil.rmtree(folder, ignore_errors=True)
    return done
