"""The teacher's training lists (teacher v2), drawn from stage 1's text set in every shape.

    python -m edge_dse.distill.teacher_lists --texts work/distill/hpd/texts --vectors work/distill/hpd/mpnet \
        --out work/distill/teacher-lists --lists 16000

Stage 1 (hpd_texts.py) already holds query/passage pairs from every training source in every
shape a user types (titles, "what is X?" / "how do I ...?" questions, keyword queries, GCIDE
definitions, the Debian FAQ's real questions), and all-mpnet-base-v2's vectors of them
(hpd_vectors.py). So the teacher's lists cost no new labelling:
  query      the query side of a labelled pair (each query once)
  positive   its passage side
  negatives  the passages nearest to the query by mpnet (exact dot product) and by BM25 (SQLite
             FTS5, the library's keyword query policy), then random ones; a passage nearly
             identical to the positive (mpnet cosine >= DUPLICATE) is skipped: it is a
             false negative (packages with the same description, a synset's twin gloss)
  labels     mpnet's cosine of each (query, candidate): the bi-encoder side of Trans-Encoder's
             mutual distillation; the teacher's own scores join it in later rounds (teacher.py)
Output: the same files candidates.py and labels.py write (`{name}.candidates.jsonl`,
`{name}.passages.jsonl` and `{name}.labels.npz` under out/), so teacher.py reads them as one
more split. Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from . import candidates as cand_mod
from . import hpd_texts, hpd_vectors

SPLIT = "hpd"  # the split name the lists are written under
DUPLICATE = 0.95


def build(text_dir: Path, vectors_dir: Path, out_dir: Path, *, lists: int, labeller: str = "mpnet", n_bm25: int = 6,
          n_dense: int = 8, n_random: int = 2, seed: int = 0, log=print) -> dict:
    """Write the candidate lists and mpnet labels of the first `lists` distinct queries whose
    pair has vectors; skipped when out_dir already holds that many. Returns the manifest."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / f"{SPLIT}.manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest["lists"] >= lists:
            return manifest
    texts, pairs = hpd_texts.read(text_dir)
    order = hpd_texts.texts_in_order(pairs, len(pairs))
    labelled = min(len(order), hpd_vectors.rows_on_disk(vectors_dir))
    row_of = {t: i for i, t in enumerate(order[:labelled])}
    usable = [(a, b, source, shape) for a, b, source, shape in pairs if a in row_of and b in row_of]
    vectors = hpd_vectors.load(vectors_dir, labelled).astype(np.float32)
    # The pool: every labelled passage, so negatives come from all sources and shapes.
    pool_ids = list(dict.fromkeys(b for _, b, _, _ in usable))
    where = {t: i for i, t in enumerate(pool_ids)}
    pool = cand_mod.Pool([texts[t] for t in pool_ids], [{f"t{t}"} for t in pool_ids], {})
    pool.index = {p: i for i, p in enumerate(pool.passages)}
    chosen, seen = [], set()
    for a, b, source, shape in usable:
        if a in seen or texts[a] == texts[b]:
            continue
        seen.add(a)
        chosen.append((a, b, source, shape))
        if len(chosen) >= lists:
            break
    log(f"teacher lists: {len(chosen)} queries over a pool of {len(pool_ids)} passages ({labelled} texts have mpnet vectors)")
    pv = vectors[[row_of[t] for t in pool_ids]]
    qv = vectors[[row_of[a] for a, *_ in chosen]]
    over = 8  # fetch extra: some neighbours are the positive or its near-duplicates
    dense = cand_mod.dense_neighbours(pv, qv, n_dense + over)
    log("teacher lists: dense neighbours done; BM25 next")
    bm25 = cand_mod.bm25_neighbours(pool.passages, [texts[a] for a, *_ in chosen], n_bm25 + over)
    rng = random.Random(seed)
    cands, labels, shapes = [], [], {}
    width = 1 + n_bm25 + n_dense + n_random
    for qi, (a, b, source, shape) in enumerate(chosen):
        pos = where[b]
        ids, kinds = [pos], ["pos"]

        def take(source_ids, kind: str, n: int) -> None:
            added = 0
            for j in source_ids:
                j = int(j)
                if added >= n:
                    break
                if j in ids or float(pv[j] @ pv[pos]) >= DUPLICATE:
                    continue
                ids.append(j)
                kinds.append(kind)
                added += 1

        take(bm25[qi], "bm25", n_bm25)
        take(dense[qi], "dense", n_dense)
        take([rng.randrange(len(pool_ids)) for _ in range(n_random * 4)], "random", n_random)
        cands.append(cand_mod.Candidates(texts[a], f"t{b}", ids, kinds))
        row = np.full(width, np.nan, dtype=np.float32)
        row[: len(ids)] = pv[ids] @ qv[qi]
        labels.append(row)
        key = f"{source}/{shape}"
        shapes[key] = shapes.get(key, 0) + 1
    cand_mod.write(pool, cands, out_dir, SPLIT)
    tmp = out_dir / f"{SPLIT}.labels.tmp.npz"
    np.savez(tmp, rows=np.arange(len(cands)), **{f"scores__{labeller}": np.stack(labels)})
    tmp.replace(out_dir / f"{SPLIT}.labels.npz")
    manifest = {"lists": len(cands), "pool": len(pool_ids), "labelled_texts": labelled, "width": width,
                "negatives": {"bm25": n_bm25, "dense": n_dense, "random": n_random}, "duplicate_cosine": DUPLICATE,
                "labeller": labeller, "seed": seed, "by_source_shape": dict(sorted(shapes.items()))}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"teacher lists: wrote {len(cands)} lists to {out_dir}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=Path, default=Path("work/distill/hpd/texts"))
    ap.add_argument("--vectors", type=Path, default=Path("work/distill/hpd/mpnet"))
    ap.add_argument("--out", type=Path, default=Path("work/distill/teacher-lists"))
    ap.add_argument("--lists", type=int, default=16000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(build(args.texts, args.vectors, args.out, lists=args.lists, seed=args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
