"""Candidate lists for distillation: each training query with its positive passage and hard
negatives, the lists the teacher scores and the student learns to rank (DSE).

    python -m edge_dse.distill.candidates --data work/distill/data --out work/distill/candidates

Per query: the positive, then the best BM25 passages (SQLite FTS5, the same tokenizer and query
policy as the library's keyword search), then the nearest passages by a bi-encoder (exact dot
product), then random ones. Hard negatives make the teacher's scores informative: a random
passage is trivially wrong, a BM25 or dense neighbour is the kind of mistake the student makes.
Passages of the query's own document are never negatives: they are often near-paraphrases of the
positive (a synset's other examples, a package's other text), i.e. false negatives.

Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..store.catalog import FTS_TOKENIZE, keyword_ranked, query_terms
from .data import Pair, read_jsonl

KINDS = ("pos", "bm25", "dense", "random")


@dataclass
class Candidates:
    query: str
    doc_id: str
    passage_ids: list[int]  # indexes into the passage pool; [0] is the positive
    kinds: list[str]  # why each one is there (KINDS), same length


@dataclass
class Pool:
    """Distinct passages, each with the documents it belongs to."""

    passages: list[str]
    doc_ids: list[set[str]]
    index: dict[str, int]


def passage_pool(pairs: Sequence[Pair]) -> Pool:
    pool = Pool([], [], {})
    for p in pairs:
        i = pool.index.get(p.passage)
        if i is None:
            i = pool.index[p.passage] = len(pool.passages)
            pool.passages.append(p.passage)
            pool.doc_ids.append(set())
        pool.doc_ids[i].add(p.doc_id)
    return pool


def bm25_neighbours(passages: Sequence[str], queries: Sequence[str], k: int) -> list[list[int]]:
    """The k best passages per query by FTS5 BM25 (any of the query's words), best first."""
    con = sqlite3.connect(":memory:")
    con.execute(f"CREATE VIRTUAL TABLE p USING fts5 (text, tokenize='{FTS_TOKENIZE}')")
    con.executemany("INSERT INTO p (rowid, text) VALUES (?, ?)", ((i, t) for i, t in enumerate(passages)))
    out = []
    for q in queries:
        terms = query_terms(q)
        if not terms or k <= 0:
            out.append([])
            continue
        rows = con.execute("SELECT rowid FROM p WHERE p MATCH ? ORDER BY bm25(p) LIMIT ?", (" OR ".join(terms), k)).fetchall()
        out.append([r[0] for r in rows])
    con.close()
    return out


def bm25_ranked(passages: Sequence[str], queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
    """The k best passages per query as a library's keyword search ranks them: [(index, -bm25)],
    best first, by store.catalog.keyword_ranked (every word first, then any of them), over an FTS5
    table with the library's tokenizer. (bm25_neighbours, any word alone, mines the training lists.)"""
    con = sqlite3.connect(":memory:")
    con.execute(f"CREATE VIRTUAL TABLE p USING fts5 (text, tokenize='{FTS_TOKENIZE}')")
    con.executemany("INSERT INTO p (rowid, text) VALUES (?, ?)", ((i, t) for i, t in enumerate(passages)))

    def fts(match: str, n: int) -> list[tuple[int, float]]:
        rows = con.execute("SELECT rowid, bm25(p) AS rank FROM p WHERE p MATCH ? ORDER BY rank LIMIT ?", (match, int(n)))
        return [(int(i), float(-score)) for i, score in rows.fetchall()]

    try:
        return [keyword_ranked(fts, q, k) for q in queries]
    finally:
        con.close()


def dense_neighbours(passage_vectors: np.ndarray, query_vectors: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Exact top-k passage indexes per query by dot product, best first (blocks bound memory)."""
    k = min(k, len(passage_vectors))
    out = np.zeros((len(query_vectors), k), dtype=np.int64)
    for lo in range(0, len(query_vectors), block):
        scores = query_vectors[lo : lo + block] @ passage_vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(np.arange(scores.shape[1]), (len(scores), 1))
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out[lo : lo + block] = np.take_along_axis(top, order, axis=1)
    return out


def cached_vectors(encoder, texts: Sequence[str], kind: str, cache: Path | None) -> np.ndarray:
    """Embeddings of texts, cached on disk by model and content (embedding is the slow step)."""
    if cache is not None:
        digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
        length = getattr(encoder, "max_length", "")  # the same texts cut at another length embed otherwise
        path = cache / f"{encoder.id.replace('/', '_')}-{length}-{kind}-{len(texts)}-{digest}.npy"
        if path.is_file():
            return np.load(path)
    vectors = encoder.encode(list(texts), kind=kind, progress=True)
    if cache is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return vectors


def mine(pairs: Sequence[Pair], *, encoder=None, pool: Pool | None = None, n_bm25: int = 8, n_dense: int = 8,
         n_random: int = 4, seed: int = 0, cache_dir: Path | None = None) -> tuple[Pool, list[Candidates]]:
    """Candidate lists for `pairs` over the passage pool (default: the pairs' own passages).

    encoder: an edge_dse.Encoder (or anything with .id and .encode(texts, kind=...)) for the
    dense neighbours; None skips them. Each list holds the positive and up to
    n_bm25 + n_dense + n_random distinct negatives, none from the query's own document.
    """
    pool = pool or passage_pool(pairs)
    queries = [p.query for p in pairs]
    over = 4  # fetch extra: some neighbours are the positive or from the same document
    bm25 = bm25_neighbours(pool.passages, queries, (n_bm25 + over) if n_bm25 else 0)
    dense = None
    if encoder is not None and n_dense:
        pv = cached_vectors(encoder, pool.passages, "document", cache_dir)
        qv = cached_vectors(encoder, queries, "query", cache_dir)
        dense = dense_neighbours(pv, qv, n_dense + over)
    rng = random.Random(seed)
    out = []
    for qi, pair in enumerate(pairs):
        pos = pool.index[pair.passage]
        ids, kinds = [pos], ["pos"]

        def take(source: Sequence[int], kind: str, n: int) -> None:
            added = 0
            for j in source:
                j = int(j)
                if added >= n:
                    break
                if j in ids or pair.doc_id in pool.doc_ids[j]:
                    continue
                ids.append(j)
                kinds.append(kind)
                added += 1

        take(bm25[qi], "bm25", n_bm25)
        if dense is not None:
            take(dense[qi], "dense", n_dense)
        tries = [rng.randrange(len(pool.passages)) for _ in range(n_random * 4)] if n_random else []
        take(tries, "random", n_random)
        out.append(Candidates(pair.query, pair.doc_id, ids, kinds))
    return pool, out


def write(pool: Pool, candidates: Sequence[Candidates], out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{name}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for c in candidates:
            fh.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
    tmp.replace(out_dir / f"{name}.candidates.jsonl")
    tmp = out_dir / f"{name}.passages.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for text, docs in zip(pool.passages, pool.doc_ids):
            fh.write(json.dumps({"text": text, "doc_ids": sorted(docs)}, ensure_ascii=False) + "\n")
    tmp.replace(out_dir / f"{name}.passages.jsonl")


def read(out_dir: Path, name: str) -> tuple[Pool, list[Candidates]]:
    pool = Pool([], [], {})
    with open(out_dir / f"{name}.passages.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            pool.index[row["text"]] = len(pool.passages)
            pool.passages.append(row["text"])
            pool.doc_ids.append(set(row["doc_ids"]))
    with open(out_dir / f"{name}.candidates.jsonl", encoding="utf-8") as fh:
        cands = [Candidates(**json.loads(line)) for line in fh]
    return pool, cands


def miner_scores(encoder, pool: Pool, cands: list[Candidates], cache_dir: Path, rows: np.ndarray,
                 like: np.ndarray) -> np.ndarray:
    """The candidate miner's cosine of each (query, candidate) that `like` (the teacher's scores
    of those rows of `cands`) holds, NaN where it holds none; the vectors are the ones mining
    cached in `cache_dir`."""
    pv = cached_vectors(encoder, pool.passages, "document", cache_dir)
    qv = cached_vectors(encoder, [c.query for c in cands], "query", cache_dir)
    out = np.full(like.shape, np.nan, np.float32)
    for i, r in enumerate(rows):
        ids = cands[int(r)].passage_ids[: like.shape[1]]
        out[i, : len(ids)] = pv[ids] @ qv[int(r)]
    return np.where(np.isnan(like), np.nan, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("work/distill/data"))
    ap.add_argument("--out", type=Path, default=Path("work/distill/candidates"))
    ap.add_argument("--splits", nargs="+", default=["debian.train", "wordnet.train", "pydoc.train"])
    ap.add_argument("--model", default=None, help="bi-encoder for dense neighbours (default: the shipped model)")
    ap.add_argument("--limit", type=int, default=None, help="first N pairs of each split (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from ..encoder import Encoder

    encoder = Encoder(args.model)
    for split in args.splits:
        if (args.out / f"{split}.candidates.jsonl").is_file():
            print(f"{split}: done, skipped")
            continue
        pairs = read_jsonl(args.data / f"{split}.jsonl")[: args.limit]
        pool, cands = mine(pairs, encoder=encoder, seed=args.seed, cache_dir=args.out / "vectors")
        write(pool, cands, args.out, split)
        print(f"{split}: {len(cands)} queries, {len(pool.passages)} passages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
