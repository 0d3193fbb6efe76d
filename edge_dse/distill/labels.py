"""Bi-encoder pseudo-labels: every candidate pair scored by each bi-encoder of the ensemble.

    python -m edge_dse.distill.labels --models work/models/mpnet-int8 baseline

No cross-encoder weights exist offline (docs/invariants.md, training data), so the teacher learns from these (Trans-Encoder):
the cosine of each (query, candidate) pair under several bi-encoders, which the teacher training
standardises per model and averages (mutual distillation), next to the natural positive (gold).
Each model's scores are kept apart, so that an ensemble can be re-weighted without re-embedding.

Output per split: `{split}.labels.npz` with one float32 array per model, shape (queries, list
length), NaN where a candidate list is shorter, and `rows` (which candidate lists, a seeded
sample when `--limit` is given).
Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from . import candidates as cand_mod


def _key(model_id: str) -> str:
    return "scores__" + model_id.replace("/", "__")


def pair_scores(encoder, pool: cand_mod.Pool, cands: Sequence[cand_mod.Candidates], cache: Path | None) -> np.ndarray:
    """Cosine of each (query, candidate) under `encoder`; (queries, longest list), NaN padded."""
    used = sorted({j for c in cands for j in c.passage_ids})
    where = {j: i for i, j in enumerate(used)}
    pv = cand_mod.cached_vectors(encoder, [pool.passages[j] for j in used], "document", cache)
    qv = cand_mod.cached_vectors(encoder, [c.query for c in cands], "query", cache)
    width = max(len(c.passage_ids) for c in cands)
    out = np.full((len(cands), width), np.nan, dtype=np.float32)
    for qi, c in enumerate(cands):
        rows = [where[j] for j in c.passage_ids]
        out[qi, : len(rows)] = pv[rows] @ qv[qi]
    return out


def label_split(cand_dir: Path, split: str, encoders: Sequence, out_dir: Path, *, limit: int | None = None) -> Path:
    """Scores of every model on one split; models already in the file are kept, not redone."""
    path = out_dir / f"{split}.labels.npz"
    have: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            have = {k: z[k] for k in z.files if k.startswith("scores__") or k == "rows"}
    pool, cands = cand_mod.read(cand_dir, split)
    rows = choose_rows(len(cands), limit)
    if "rows" in have and not np.array_equal(have["rows"], rows):
        have = {}  # made with another limit: start over
    have["rows"] = rows
    cands = [cands[i] for i in rows]
    for enc in encoders:
        key = _key(enc.id)
        if key in have and len(have[key]) == len(cands):
            print(f"{split}: {enc.id} done, skipped")
            continue
        print(f"{split}: scoring {len(cands)} lists with {enc.id}")
        have[key] = pair_scores(enc, pool, cands, cand_dir / "vectors")
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f"{split}.labels.tmp.npz"
        np.savez(tmp, **have)
        tmp.replace(path)  # each model's scores land whole, so a killed run resumes per model
    return path


def choose_rows(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Which candidate lists to use: all, or a seeded random `limit` of them (in file order)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def load(out_dir: Path, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(rows into the split's candidate lists, {model id: scores of those rows})."""
    with np.load(out_dir / f"{split}.labels.npz") as z:
        scores = {k[len("scores__"):].replace("__", "/"): z[k] for k in z.files if k.startswith("scores__")}
        return z["rows"], scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=Path, default=Path("work/distill/candidates"))
    ap.add_argument("--out", type=Path, default=Path("work/distill/labels"))
    ap.add_argument("--splits", nargs="+", default=["pydoc.train", "wordnet.train", "debian.train"])
    ap.add_argument("--models", nargs="+", default=["baseline"], help="bi-encoder asset folders or shipped names")
    ap.add_argument("--limit", type=int, default=None, help="a seeded sample of N candidate lists per split")
    ap.add_argument("--max-length", type=int, default=128,
                    help="token limit for scoring (default 128: the start of a passage says what it is about)")
    args = ap.parse_args(argv)
    from ..encoder import Encoder

    encoders = [Encoder(m, max_length=args.max_length) for m in args.models]
    for split in args.splits:
        label_split(args.candidates, split, encoders, args.out, limit=args.limit)
    print(json.dumps({"splits": args.splits, "models": [e.id for e in encoders]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
