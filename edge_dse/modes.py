"""Search modes, the default one, and how hybrid merges its two lists (kept apart so the CLI can
name them without importing the library, and so the bench that chooses them measures this code).

vector: the encoder + HNSW (by meaning). keyword: SQLite FTS5 BM25 (exact words, names,
identifiers). hybrid: both lists, each read FUSION_DEPTH deep, merged by `fuse`.
"""

from __future__ import annotations

from typing import Sequence

MODES = ("vector", "keyword", "hybrid")

# Chosen by `python -m bench.search modes` (README "Search modes: which one is the default"): every
# held-out split indexed as files in a real Library. VECTOR_WEIGHT is tuned on queries the report
# does not use; the default mode is then the best mean nDCG@10 over the reported splits among the
# modes that lose no split by more than MAX_SPLIT_LOSS to the best mode there.
DEFAULT_MODE = "hybrid"
MAX_SPLIT_LOSS = 0.01

# Score fusion: each list's scores min-max scaled to [0, 1] over its top FUSION_DEPTH, then
# VECTOR_WEIGHT * vector + (1 - VECTOR_WEIGHT) * keyword (0 from a list that lacks the chunk).
# Measured against reciprocal rank fusion, which keeps only ranks: scaled scores keep the gaps,
# so a keyword list of weak partial matches (definitions worded unlike the query) barely moves a
# confident vector order, while a clear exact-word match still rises (that bench's table).
VECTOR_WEIGHT = 0.6
FUSION_DEPTH = 50  # each list is read this deep (at least k)


def _scaled(results: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    if not results:
        return []
    lo, hi = min(s for _, s in results), max(s for _, s in results)
    return [(cid, (s - lo) / (hi - lo) if hi > lo else 1.0) for cid, s in results]


def fuse(vector: Sequence[tuple[int, float]], keyword: Sequence[tuple[int, float]], *,
         vector_weight: float = VECTOR_WEIGHT, depth: int = FUSION_DEPTH) -> list[tuple[int, float]]:
    """The hybrid order: [(chunk_id, fused score in [0, 1])], best first, from the vector and
    keyword lists ([(chunk_id, score)], best first, higher = better), each read `depth` deep.
    Ties keep the vector list's order, then the keyword list's."""
    fused: dict[int, float] = {}
    for weight, results in ((vector_weight, vector), (1.0 - vector_weight, keyword)):
        for cid, scaled in _scaled(list(results[:depth])):
            fused[cid] = fused.get(cid, 0.0) + weight * scaled
    return sorted(fused.items(), key=lambda kv: -kv[1])


def split_losses(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """{mode: its largest loss to the best mode of any split} from {mode: {split: nDCG@10}}
    (over the splits every mode has)."""
    splits = sorted(set.intersection(*(set(v) for v in table.values())))
    best = {s: max(v[s] for v in table.values()) for s in splits}
    return {m: max(best[s] - v[s] for s in splits) for m, v in table.items()}


def choose_default(table: dict[str, dict[str, float]], max_split_loss: float = MAX_SPLIT_LOSS) -> str:
    """The default mode from {mode: {split: nDCG@10}}: the best mean among the modes that lose no
    split by more than max_split_loss to the best mode on that split (if none qualifies, the one
    whose worst loss is smallest)."""
    worst_loss = split_losses(table)
    mean = {m: sum(v.values()) / len(v) for m, v in table.items()}
    ok = [m for m in table if worst_loss[m] <= max_split_loss + 1e-9]
    if ok:
        return max(ok, key=lambda m: mean[m])
    return min(table, key=lambda m: (worst_loss[m], -mean[m]))
