"""Which search mode should be the default: vector, keyword or hybrid, on every held-out split.

    python -m bench.modes [--data work/distill/data] [--model NAME|DIR] [--json FILE]

Every held-out split that `edge-dse distill` writes (debian, wordnet, pydoc, the Python FAQ) is
indexed as files in a real Library (one passage a file: the reported corpus of `edge-dse eval`,
the same seeded 200 queries over up to 1500 passages, plus the positives of the dev queries), and
every query is searched through Library.search in each mode. A hit counts when it comes from the
query's file; nDCG@10 over files.
- The hybrid's vector weight (modes.fuse: min-max scaled scores, mixed) is tuned on dev queries:
  a seeded sample of the queries the report does not use (as the teacher's dev lists; the FAQ has
  none to spare, all its questions are reported), by the same rule as the default: the best mean
  dev nDCG@10 among the weights whose hybrid loses no dev split by more than MAX_SPLIT_LOSS to
  vector, keyword or itself there.
- Reciprocal rank fusion with equal weights (the hybrid before, Cormack et al. 2009, k = 60) is
  measured beside it, for comparison only.
- The default is then chosen on the reported queries by modes.choose_default: the best mean among
  the modes that lose no split by more than modes.MAX_SPLIT_LOSS to the best mode there.
- The fusion of the shipped weight is also run through the real hybrid search, which must give the
  same top 10 as fusing the two lists here (else the measurement would not be of the shipped code).
Prints the dev grid, the reported table with p50 search latency, and what edge_dse/modes.py
should say; --json writes it all (bench/results/modes.json is what the shipped settings came from).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine, md_table
from edge_dse import modes
from edge_dse.distill.evaluate import ndcg10

WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
K = 10
RRF = "hybrid, RRF (before)"


def split_sets(data_dir: Path, name: str, queries: int, corpus: int, dev_queries: int):
    """(corpus passages, reported [(query, passage index)], dev [(query, passage index)])."""
    from edge_dse.distill.data import read_jsonl
    from edge_dse.distill.evaluate import load_split

    reported = load_split(data_dir, name, max_queries=queries, max_corpus=corpus)
    asked = set(reported.queries)
    spare = [p for p in read_jsonl(data_dir / f"{name}.jsonl") if p.query not in asked]
    dev = random.Random(1).sample(spare, min(dev_queries, len(spare)))
    docs = list(dict.fromkeys(reported.corpus + [p.passage for p in dev]))
    where = {d: i for i, d in enumerate(docs)}
    return (docs, list(zip(reported.queries, reported.positive)), [(p.query, where[p.passage]) for p in dev])


def first_per_file(ranked: list[tuple[int, float]], file_of: dict[int, int]) -> list[int]:
    """The files of a ranked chunk list, each at its best chunk's place."""
    return list(dict.fromkeys(file_of[cid] for cid, _ in ranked))


def rrf(vector, keyword, depth: int, k: int = 60) -> list[tuple[int, float]]:
    """Equal-weight reciprocal rank fusion, the hybrid before modes.fuse (for comparison)."""
    fused: dict[int, float] = {}
    for results in (vector, keyword):
        for rank, (cid, _) in enumerate(results[:depth]):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank + 1)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def weight_choice(dev: dict[str, dict[str, float]], weights, max_split_loss: float) -> float:
    """The dev rule for the hybrid's weight (see the module doc); dev: {mode: {split: nDCG}}."""
    def table(w):
        return {m: dev[m] for m in ("vector", "keyword", f"hybrid w={w:g}")}

    loss = {w: modes.split_losses(table(w))[f"hybrid w={w:g}"] for w in weights}
    mean = {w: sum(dev[f"hybrid w={w:g}"].values()) / len(dev[f"hybrid w={w:g}"]) for w in weights}
    ok = [w for w in weights if loss[w] <= max_split_loss + 1e-9]
    return max(ok, key=lambda w: mean[w]) if ok else min(weights, key=lambda w: (loss[w], -mean[w]))


def measure_split(lib, folder: Path, name: str, docs, reported, dev, weights, reranker=None, log=print) -> dict:
    split_dir = folder / name
    split_dir.mkdir(parents=True)
    for i, text in enumerate(docs):
        (split_dir / f"p{i:05d}.txt").write_text(text, encoding="utf-8")
    t = time.perf_counter()
    lib.add(split_dir)
    log(f"{name}: {len(docs)} files indexed in {time.perf_counter() - t:.0f} s; "
        f"{len(reported)} reported queries, {len(dev)} dev queries")
    file_index = {str(split_dir / f"p{i:05d}.txt"): i for i in range(len(docs))}
    depth = max(K, modes.FUSION_DEPTH)

    def lists(query):
        out, ms = {}, {}
        for mode in ("vector", "keyword"):
            t0 = time.perf_counter()
            hits = lib.search(query, k=depth, mode=mode)
            ms[mode] = (time.perf_counter() - t0) * 1000
            out[mode] = hits
        return out, ms

    def score(pairs, with_latency: bool):
        by = {f"hybrid w={w:g}": [] for w in weights} | {"vector": [], "keyword": [], RRF: []}
        times = {"vector": [], "keyword": [], "hybrid": []}
        mismatches = 0
        for query, positive in pairs:
            hits, ms = lists(query)
            file_of = {h.chunk_id: file_index[h.path] for mode in hits for h in hits[mode]}
            ranked = {mode: [(h.chunk_id, h.score) for h in hits[mode]] for mode in hits}
            for mode in ("vector", "keyword"):
                by[mode].append(ndcg10(first_per_file(ranked[mode], file_of), positive))
                times[mode].append(ms[mode])
            for w in weights:
                fused = modes.fuse(ranked["vector"], ranked["keyword"], vector_weight=w, depth=depth)
                by[f"hybrid w={w:g}"].append(ndcg10(first_per_file(fused, file_of), positive))
            by[RRF].append(ndcg10(first_per_file(rrf(ranked["vector"], ranked["keyword"], depth), file_of), positive))
            if with_latency:  # the shipped hybrid, through the real search: same top 10 as fused here?
                t0 = time.perf_counter()
                real = lib.search(query, k=K, mode="hybrid")
                times["hybrid"].append((time.perf_counter() - t0) * 1000)
                shipped = modes.fuse(ranked["vector"], ranked["keyword"], depth=depth)[:K]
                mismatches += [h.chunk_id for h in real] != [cid for cid, _ in shipped]
        return ({m: round(sum(v) / len(v), 4) for m, v in by.items()},
                {m: round(statistics.median(v), 1) for m, v in times.items() if v}, mismatches)

    dev_scores = score(dev, False)[0] if dev else None
    rep_scores, p50, mismatches = score(reported, True)
    if reranker is not None:  # the whole default pipeline: the default mode's hits, the teacher on top
        for mode in ("vector", modes.DEFAULT_MODE) if modes.DEFAULT_MODE != "vector" else ("vector",):
            gains, times = [], []
            for query, positive in reported:
                hits = lib.search(query, k=max(K, reranker.default_depth), mode=mode)
                t0 = time.perf_counter()
                order = lib.rerank(query, hits, teacher=reranker)
                times.append((time.perf_counter() - t0) * 1000)
                gains.append(ndcg10(list(dict.fromkeys(file_index[h.path] for h in order)), positive))
            rep_scores[f"{mode} + teacher@{reranker.default_depth}"] = round(sum(gains) / len(gains), 4)
            p50[f"{mode} + teacher"] = round(statistics.median(times), 1)
    return {"files": len(docs), "reported_queries": len(reported), "dev_queries": len(dev),
            "dev": dev_scores, "reported": rep_scores, "p50_ms": p50, "hybrid_mismatches": mismatches}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("work/distill/data"), help="the held-out splits (edge-dse distill's data step)")
    ap.add_argument("--model", default=None, help="the encoder (default: the default encoder)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--corpus", type=int, default=1500)
    ap.add_argument("--dev-queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rerank", action="store_true", help="also the shipped teacher over vector's and the default mode's hits, "
                    "at the depth its card records (slow: one rerank a query)")
    args = ap.parse_args(argv)

    from edge_dse import Encoder, Library
    from edge_dse.distill.evaluate import HELD_OUT

    splits = [s for s in HELD_OUT if (args.data / f"{s}.jsonl").is_file()]
    if not splits:
        raise SystemExit(f"bench.mode_choice: no held-out splits in {args.data}: make them with "
                         f"`edge-dse distill --until data` (or pass --data DIR)")
    encoder = Encoder(args.model, threads=args.threads) if args.model else Encoder(threads=args.threads)
    reranker = None
    if args.rerank:
        from edge_dse.rerank import Reranker

        reranker = Reranker(threads=args.threads)
    root = Path(tempfile.mkdtemp(prefix="edge-dse-mode-choice-"))
    results = {}
    try:
        for name in splits:
            docs, reported, dev = split_sets(args.data, name, args.queries, args.corpus, args.dev_queries)
            # One library a split: a query's hits come from its own split's passages only.
            with Library(root / f"lib-{name}", model=encoder, progress=False) as lib:
                results[name.replace(".test", "")] = measure_split(lib, root / "docs", name, docs, reported, dev, WEIGHTS, reranker)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    names = list(results)
    dev_names = [n for n in names if results[n]["dev"]]
    print(f"# Search modes on every held-out split — {machine()}, model {encoder.id}\n")
    dev = {m: {n: results[n]["dev"][m] for n in dev_names} for m in (results[dev_names[0]]["dev"] if dev_names else [])}
    if dev:
        print("Dev queries (not reported), nDCG@10; the hybrid's vector weight w is chosen here:\n")
        print(md_table(["mode", *dev_names, "mean"],
                       [[m, *[f"{v[n]:.3f}" for n in dev_names], f"{sum(v.values()) / len(v):.3f}"] for m, v in dev.items()]) + "\n")
        best_w = weight_choice(dev, WEIGHTS, modes.MAX_SPLIT_LOSS)
    else:
        best_w = modes.VECTOR_WEIGHT
        print(f"No dev queries (every split's queries are reported): the shipped weight {best_w:g} is measured.\n")
    hybrid = f"hybrid w={best_w:g}"
    table = {m: {n: results[n]["reported"][m] for n in names} for m in ("vector", "keyword", hybrid)}
    print(f"Reported queries (the eval's sample), nDCG@10, and the median search time (ms, per split):\n")
    rows = []
    extra = [m for m in results[names[0]]["reported"] if "teacher@" in m]
    for mode in (*table, RRF, *extra):
        vals = {n: results[n]["reported"][mode] for n in names}
        key = mode.split("@")[0] if "teacher@" in mode else mode.split()[0]
        lat = "/".join(f"{results[n]['p50_ms'][key]:.1f}" for n in names) if mode != RRF else ""
        rows.append([mode, *[f"{vals[n]:.3f}" for n in names], f"{sum(vals.values()) / len(vals):.3f}", lat])
    print(md_table(["mode", *names, "mean", "p50 ms"], rows) + "\n")
    default = modes.choose_default(table)
    default_mode = default.split()[0]
    print(f"default by the rule (the best mean among modes losing no split by more than {modes.MAX_SPLIT_LOSS:g}): {default}")
    mismatches = sum(results[n]["hybrid_mismatches"] for n in names)
    print(f"the real hybrid search (shipped weight {modes.VECTOR_WEIGHT:g}) against fusing the two lists here: "
          f"{mismatches} of {sum(results[n]['reported_queries'] for n in names)} queries differ in the top {K}")
    shipped = (modes.DEFAULT_MODE, modes.VECTOR_WEIGHT)
    if shipped != (default_mode, best_w):
        print(f"edge_dse/modes.py ships DEFAULT_MODE={shipped[0]!r}, VECTOR_WEIGHT={shipped[1]:g}; "
              f"this run chose DEFAULT_MODE={default_mode!r}, VECTOR_WEIGHT={best_w:g}")
    else:
        print("edge_dse/modes.py ships what this run chose")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(), "model": encoder.id, "weights": list(WEIGHTS), "splits": results,
            "vector_weight": best_w, "table": table, "default": default_mode,
            "max_split_loss": modes.MAX_SPLIT_LOSS, "hybrid_mismatches": mismatches}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
