"""Held-out evaluation: every model on every held-out split, in one run (`edge-dse eval`).

For each held-out split (never trained on: split by document, data.py) the queries are a seeded
sample, the corpus is the split's passages (capped by a seeded sample that always keeps every
sampled query's positive). Each retriever ranks the whole corpus; one relevant passage per query:
nDCG@10 = 1/log2(rank+1) when the positive is in the top 10, MRR@10, recall@10. The teacher
reranks the default encoder's top N for every N of --rerank-depths (one scoring of the deepest
list; a shallower rerank re-orders its prefix), and the time to score N pairs is measured per
query (median); rerank.choose_depth turns that table into the default depth. Spearman: per query,
between the encoder's and the teacher's scores over its top 50, averaged. Encode docs/s: one pass
over the same 256 passages, 2 threads, each model in turn.

Training-time code (the torch rows need the train extra): not imported by `import edge_dse`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..models import DEFAULT, OPT_IN, ROLE_TITLES, read_card, write_card  # `models` is a dict of rows here
from ..rerank import blend
from .candidates import bm25_neighbours, dense_neighbours
from .data import read_jsonl
from .train_common import spearman

HELD_OUT = ("debian.test", "wordnet.test", "pydoc.test", "pydoc_faq.test")
K = 10
RERANK_DEPTHS = (10, 20, 30, 50)
AGREEMENT_DEPTH = 50
STUDENT_ROW = "student int8"
BASELINE_ROW = "baseline int8 (all-MiniLM-L6-v2, ours)"


@dataclass
class Split:
    name: str
    queries: list[str]
    corpus: list[str]
    positive: list[int]  # index into corpus, per query


def load_split(data_dir: Path, name: str, *, max_queries: int, max_corpus: int, seed: int = 0) -> Split:
    pairs = read_jsonl(data_dir / f"{name}.jsonl")
    rng = random.Random(seed)
    chosen = rng.sample(pairs, min(max_queries, len(pairs)))
    passages = list(dict.fromkeys(p.passage for p in pairs))
    must = list(dict.fromkeys(p.passage for p in chosen))
    others = [p for p in passages if p not in set(must)]
    corpus = must + rng.sample(others, max(0, min(len(others), max_corpus - len(must))))
    where = {p: i for i, p in enumerate(corpus)}
    return Split(name, [p.query for p in chosen], corpus, [where[p.passage] for p in chosen])


def ndcg10(ranked: Sequence[int], positive: int) -> float:
    """nDCG@10 of one query with one relevant item: 1/log2(rank + 1) when it is in the top 10.

    The one definition the eval tables, the teacher's blend choice and `python -m bench.search
    modes` share."""
    top = list(ranked[:K])
    return 1 / math.log2(top.index(positive) + 2) if positive in top else 0.0


def metrics(rankings: Sequence[Sequence[int]], positive: Sequence[int]) -> dict:
    ndcg = mrr = rec = 0.0
    for ranked, pos in zip(rankings, positive):
        top = list(ranked[:K])
        if pos in top:
            r = top.index(pos)
            ndcg += ndcg10(top, pos)
            mrr += 1 / (r + 1)
            rec += 1
    n = max(1, len(positive))
    return {"ndcg@10": round(ndcg / n, 4), "mrr@10": round(mrr / n, 4), "recall@10": round(rec / n, 4)}


# -- retrievers: texts -> vectors --------------------------------------------------------------
Embed = Callable[[Sequence[str], str], np.ndarray]  # (texts, "query" | "document") -> rows


def onnx_embedder(asset: Path, threads: int) -> Embed:
    from ..encoder import Encoder

    enc = Encoder(asset, threads=threads)
    return lambda texts, kind: enc.encode(list(texts), kind=kind)


def torch_embedder(model_dir: Path, threads: int, max_length: int = 256) -> Embed:
    import torch

    from .onnx_export import torch_embed
    from .sources import read_source_info

    torch.set_num_threads(threads)
    info = read_source_info(model_dir)
    return lambda texts, kind: torch_embed(Path(info["transformer_dir"]), list(texts), max_length=max_length,
                                           pooling=info["pooling"] or "mean", normalize=True,
                                           dense_dir=info.get("dense_dir"))


def docs_per_s(embed: Embed, texts: Sequence[str]) -> float:
    embed(texts[:16], "document")  # warm-up
    t = time.perf_counter()
    embed(texts, "document")
    return round(len(texts) / (time.perf_counter() - t), 1)


def evaluate(models: dict[str, Embed], splits: Sequence[Split], *, reranker=None, rerank_base: str | None = None,
             rerank_depths: Sequence[int] = RERANK_DEPTHS, speed_texts: Sequence[str] = (), log=print) -> dict:
    """{split: {row: metrics}}, plus "speed" (docs/s), "agreement" (Spearman) and "rerank"
    (per depth: the median ms to score that many pairs, per split) tables."""
    out: dict = {"splits": {}, "speed": {}, "agreement": {}, "rerank": {"base": rerank_base, "ms": {}}}
    deepest = max(rerank_depths) if reranker is not None else AGREEMENT_DEPTH
    for split in splits:
        rows: dict = {}
        rows["BM25"] = metrics(bm25_neighbours(split.corpus, split.queries, K), split.positive)
        tops: dict = {}
        for name, embed in models.items():
            t = time.perf_counter()
            pv = embed(split.corpus, "document")
            qv = embed(split.queries, "query")
            top = dense_neighbours(pv, qv, max(deepest, AGREEMENT_DEPTH))
            tops[name] = (top, qv, pv)
            rows[name] = metrics(top, split.positive)
            log(f"eval: {split.name}: {name} {rows[name]} ({time.perf_counter() - t:.0f} s)")
        if reranker is not None and rerank_base in tops:
            top, qv, pv = tops[rerank_base]
            weight = float(getattr(reranker, "encoder_weight", 0.0))
            reranked = {d: [] for d in rerank_depths}
            alone = {d: [] for d in rerank_depths}  # the teacher's own order, shown beside the blend
            rhos, ms = [], {d: [] for d in rerank_depths}
            for qi, q in enumerate(split.queries):
                cand = [int(i) for i in top[qi][:deepest]]
                scores = reranker.score(q, [split.corpus[i] for i in cand])
                for d in rerank_depths:  # as the run-time reranker orders them (its card's blend)
                    order = np.argsort(-blend(scores[:d], weight), kind="stable")
                    reranked[d].append([cand[i] for i in order] + cand[d:])
                    order = np.argsort(-scores[:d], kind="stable")
                    alone[d].append([cand[i] for i in order] + cand[d:])
                if qi % 4 == 0:  # the latency a user sees at each depth, on a quarter of the queries
                    for d in rerank_depths:
                        t = time.perf_counter()
                        reranker.score(q, [split.corpus[i] for i in cand[:d]])
                        ms[d].append((time.perf_counter() - t) * 1000)
                n = min(len(cand), AGREEMENT_DEPTH)
                if n > 2:
                    rho = spearman(pv[cand[:n]] @ qv[qi], scores[:n])
                    if not np.isnan(rho):
                        rhos.append(rho)
            for d in rerank_depths:
                rows[f"{rerank_base} + teacher rerank@{d}"] = metrics(reranked[d], split.positive)
            if weight:
                for d in rerank_depths:
                    rows[f"{rerank_base} + teacher alone (no blend) @{d}"] = metrics(alone[d], split.positive)
            out["rerank"]["ms"][split.name] = {str(d): round(float(np.median(v)), 1) for d, v in ms.items() if v}
            out["agreement"][split.name] = round(float(np.mean(rhos)), 4) if rhos else None
            log(f"eval: {split.name}: rerank " + ", ".join(f"@{d} {rows[f'{rerank_base} + teacher rerank@{d}']['ndcg@10']}"
                                                            for d in rerank_depths))
        out["splits"][split.name] = {"queries": len(split.queries), "corpus": len(split.corpus), "rows": rows}
    for name, embed in models.items():
        if speed_texts:
            out["speed"][name] = docs_per_s(embed, speed_texts)
    return out


def markdown(result: dict) -> str:
    splits = list(result["splits"])
    names = list(dict.fromkeys(r for s in splits for r in result["splits"][s]["rows"]))
    head = "| model | " + " | ".join(f"{s} nDCG@10 / MRR@10 / R@10" for s in splits) + " | docs/s |"
    lines = [head, "|" + "---|" * (len(splits) + 2)]
    for name in names:
        cells = []
        for s in splits:
            m = result["splits"][s]["rows"].get(name)
            cells.append(f"{m['ndcg@10']:.3f} / {m['mrr@10']:.3f} / {m['recall@10']:.3f}" if m else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {result['speed'].get(name, '')} |")
    sizes = ", ".join(f"{s}: {result['splits'][s]['queries']} queries over {result['splits'][s]['corpus']} passages" for s in splits)
    lines.append("")
    lines.append(f"Held-out sets: {sizes}.")
    if result["agreement"]:
        base = (result.get("rerank") or {}).get("base") or "the encoder"
        lines.append(f"Spearman between {base} and the teacher over its top {AGREEMENT_DEPTH}: " +
                     ", ".join(f"{s} {v}" for s, v in result["agreement"].items()) + ".")
    ms = (result.get("rerank") or {}).get("ms") or {}
    if ms:
        lines.append("Teacher rerank, median ms to score the top N (2 threads): " + "; ".join(
            f"{s} " + ", ".join(f"@{d} {v}" for d, v in row.items()) for s, row in ms.items()) + ".")
    return "\n".join(lines)


def default_models(args, threads: int) -> tuple[dict[str, Embed], list[str]]:
    """The rows that exist here; a missing model is named in the notes, not silently dropped."""
    from .. import config

    models: dict[str, Embed] = {}
    notes = []
    student_asset = Path(args.student) if args.student else config.assets_dir() / "student"
    if (student_asset / "model.onnx").is_file():
        models[STUDENT_ROW] = onnx_embedder(student_asset, threads)
    else:
        notes.append(f"no student asset at {student_asset}")
    if args.student_fp32 and Path(args.student_fp32).is_dir():
        models["student fp32 (torch)"] = torch_embedder(Path(args.student_fp32), threads)
    models[BASELINE_ROW] = onnx_embedder(config.assets_dir() / "baseline", threads)
    for spec in args.onnx or []:  # further asset folders, e.g. the int8 mpnet that labels.py uses
        name, _, path = spec.partition("=")
        models[name] = onnx_embedder(Path(path), threads)
    if not args.no_torch:
        from .train_common import BASE_L6
        from .sources import resolve_source

        models["all-MiniLM-L6-v2 (torch)"] = torch_embedder(resolve_source(BASE_L6), threads)
        if args.mpnet and Path(args.mpnet).is_dir():
            models["all-mpnet-base-v2 (torch)"] = torch_embedder(Path(args.mpnet), threads)
        else:
            notes.append(f"no all-mpnet-base-v2 folder at {args.mpnet}")
    return models, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-dse eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("work/distill/data"))
    ap.add_argument("--splits", nargs="+", default=list(HELD_OUT))
    ap.add_argument("--queries", type=int, default=300, help="seeded sample of queries per split")
    ap.add_argument("--corpus", type=int, default=3000, help="passages per split at most (positives always kept)")
    ap.add_argument("--student", default=None, help="student asset folder (default: assets/student)")
    ap.add_argument("--student-fp32", default="work/distill/student/model", help="the torch student folder")
    ap.add_argument("--teacher", default=None, help="teacher asset folder (default: assets/teacher)")
    ap.add_argument("--mpnet", default="work/models/mpnet/all-mpnet-base-v2")
    ap.add_argument("--no-torch", action="store_true", help="only the ONNX rows (no train extra needed)")
    ap.add_argument("--onnx", action="append", metavar="NAME=FOLDER", help="another encoder asset folder as a row")
    ap.add_argument("--rerank-depths", type=int, nargs="+", default=list(RERANK_DEPTHS),
                    help="rerank the default encoder's top N for each N (default %(default)s)")
    ap.add_argument("--rerank-base", default=None,
                    help="the row whose hits the teacher reranks (default: the default encoder's row)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    ap.add_argument("--card", type=Path, action="append", default=[], metavar="ASSET",
                    help="record the result in this asset folder's card.json and card.md (repeatable)")
    ap.add_argument("--promote", type=Path, default=None, metavar="ASSET",
                    help="decide whether this student asset becomes the default encoder (promote.py) and record it in its card")
    args = ap.parse_args(argv)
    from ..errors import EdgeDSEError

    splits = [load_split(args.data, s, max_queries=args.queries, max_corpus=args.corpus, seed=args.seed)
              for s in args.splits if (args.data / f"{s}.jsonl").is_file()]
    if not splits:
        raise SystemExit(f"edge-dse eval: no held-out splits in {args.data}: run `edge-dse distill` (its data step) first")
    models, notes = default_models(args, args.threads)
    reranker, base = None, None
    try:
        from ..rerank import Reranker

        reranker = Reranker(args.teacher, threads=args.threads)
        from .. import config

        base = args.rerank_base or (STUDENT_ROW if config.default_model_name() == "student" else BASELINE_ROW)
    except EdgeDSEError as exc:
        notes.append(f"no teacher rerank row: {exc}")
    speed = random.Random(args.seed).sample([p for s in splits for p in s.corpus], min(256, sum(len(s.corpus) for s in splits)))
    result = evaluate(models, splits, reranker=reranker, rerank_base=base, rerank_depths=args.rerank_depths,
                      speed_texts=speed)
    result["notes"] = notes
    print(markdown(result))
    for n in notes:
        print(f"note: {n}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.promote:  # before the cards are rendered, so a card.md shows the verdict
        from .promote import decide

        verdict = decide(result)
        card = read_card(args.promote)
        card["promotion"] = verdict
        write_card(args.promote, card)
    for asset in args.card:
        record_in_card(asset, result, argv, args.threads)
    if args.promote:
        role = ROLE_TITLES[DEFAULT if verdict["default"] else OPT_IN]
        print(f"promotion: {role} ({verdict['rule']}); "
              + ("; ".join(verdict["short"]) or "every condition met"))
    return 0


MIN_DEPTH = 20  # a rerank of fewer hits cannot bring up what the encoder ranked 11th to 20th
LATENCY_BUDGET_MS = 500  # the rerank a user waits for after each search
TIE = 0.002  # mean nDCG@10 closer than this is a tie: the shallower (faster) depth wins


def choose_depth(result: dict) -> dict | None:
    """The default rerank depth from an eval run: of the measured depths >= MIN_DEPTH whose median
    time stays within LATENCY_BUDGET_MS on every split, the best mean nDCG@10 (ties: shallower)."""
    rr = result.get("rerank") or {}
    base, ms = rr.get("base"), rr.get("ms") or {}
    if not ms:
        return None
    splits = list(ms)
    depths = sorted({int(d) for row in ms.values() for d in row})
    table = ["| depth | " + " | ".join(f"{s} nDCG@10" for s in splits) + " | mean | median ms (slowest split) |",
             "|---:|" + "---:|" * len(splits) + "---:|---:|",
             f"| 0 (encoder alone) | " + " | ".join(f"{result['splits'][s]['rows'][base]['ndcg@10']:.3f}" for s in splits) +
             f" | {np.mean([result['splits'][s]['rows'][base]['ndcg@10'] for s in splits]):.3f} | 0 |"]
    best = None
    for d in depths:
        scores = [result["splits"][s]["rows"][f"{base} + teacher rerank@{d}"]["ndcg@10"] for s in splits]
        slowest = max(ms[s][str(d)] for s in splits)
        mean = float(np.mean(scores))
        table.append(f"| {d} | " + " | ".join(f"{v:.3f}" for v in scores) + f" | {mean:.3f} | {slowest:.0f} |")
        if d >= MIN_DEPTH and slowest <= LATENCY_BUDGET_MS and (best is None or mean > best[1] + TIE):
            best = (d, mean)
    if best is None:
        return {"default_depth": MIN_DEPTH, "rule": f"no depth >= {MIN_DEPTH} fits {LATENCY_BUDGET_MS} ms here: the smallest", "table": table}
    return {"default_depth": best[0], "table": table,
            "rule": f"of the depths >= {MIN_DEPTH} within {LATENCY_BUDGET_MS} ms, the best mean nDCG@10 over the held-out splits, "
                    f"the shallower when within {TIE}"}


def record_in_card(asset: Path, result: dict, argv: Sequence[str] | None, threads: int) -> None:
    """Write the evaluation into an asset's card.json and re-render its card.md, so the shipped
    card carries the held-out numbers with the command that measured them."""
    import datetime
    import shlex
    import sys

    from .cards import render_card_md, write_cards
    from .measure import cpu_description
    from .teacher import render_teacher_card_md

    card = read_card(asset)
    cpu = cpu_description()
    card["evaluation"] = {
        "command": "edge-dse eval " + shlex.join(list(sys.argv[1:] if argv is None else argv)),
        "date": datetime.date.today().isoformat(),
        "cpu": f"{cpu.get('model')} ({', '.join(cpu.get('isa', []))}), {threads} threads",
        "table": markdown(result), "result": result,
    }
    if card.get("kind") == "cross-encoder" and choose_depth(result):
        # the depth the UI, CLI and API rerank by default; the blend weight chosen on dev stays
        card["rerank"] = {**(card.get("rerank") or {}), **choose_depth(result)}
    write_cards(asset, card, render_teacher_card_md if card.get("kind") == "cross-encoder" else render_card_md)


if __name__ == "__main__":
    raise SystemExit(main())
