"""nDCG@10 of one encoder on the held-out splits (never trained on), for the encode table.

Reuses edge_dse.distill.evaluate (load_split, metrics) so these numbers are the ones `edge-dse
eval` prints for the same sample sizes; this is a smaller seeded sample when --quick.
"""

from __future__ import annotations

from pathlib import Path


def ndcg_by_split(embed, data_dir: str, queries: int, corpus: int, seed: int = 0) -> dict[str, float]:
    from bench.common import exact_top_k
    from edge_dse.distill.evaluate import HELD_OUT, K, load_split, metrics

    out = {}
    for name in HELD_OUT:
        if not (Path(data_dir) / f"{name}.jsonl").is_file():
            continue
        split = load_split(Path(data_dir), name, max_queries=queries, max_corpus=corpus, seed=seed)
        top = exact_top_k(embed(split.corpus, "document"), embed(split.queries, "query"), K)
        out[name] = metrics(top, split.positive)["ndcg@10"]
    return out
