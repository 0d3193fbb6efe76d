"""Candidate mining on real pairs with the real shipped encoder and real SQLite FTS5."""

from __future__ import annotations

import numpy as np

from conftest import TOPICS
from edge_dse.distill.candidates import bm25_neighbours, dense_neighbours, mine, passage_pool, read, write
from edge_dse.distill.data import Pair


def topic_pairs() -> list[Pair]:
    pairs = [Pair(q, body, f"doc:{key}", "test") for key, (_, body, q) in TOPICS.items()]
    # a second query of the bread document: its passage is shared, never a negative for it
    pairs.append(Pair("baking with a starter", TOPICS["bread"][1], "doc:bread", "test"))
    pairs.append(Pair("bread crust", "Bread crust gets crisp in a hot oven; a covered pot keeps steam in.", "doc:bread2", "test"))
    return pairs


def test_pool_dedupes_passages_and_keeps_their_documents():
    pool = passage_pool(topic_pairs())
    assert len(pool.passages) == len(TOPICS) + 1
    assert pool.doc_ids[pool.index[TOPICS["bread"][1]]] == {"doc:bread"}


def test_bm25_finds_word_overlap_first():
    passages = ["the cat sat on the mat", "dogs bark at night", "a cat and a dog", "nothing here"]
    got = bm25_neighbours(passages, ["cat mat", 'odd "quote* NEAR(', ""], 3)
    assert got[0][0] == 0 and set(got[0]) == {0, 2}
    assert got[1] == [] and got[2] == []


def test_dense_neighbours_are_exact_top_k():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    got = dense_neighbours(p, q, 5, block=3)
    want = np.argsort(-(q @ p.T), axis=1)[:, :5]
    assert (got == want).all()


def test_mine_builds_positive_first_lists_without_own_document_negatives(encoder, tmp_path):
    pairs = topic_pairs()
    pool, cands = mine(pairs, encoder=encoder, n_bm25=2, n_dense=2, n_random=2, seed=1, cache_dir=tmp_path / "v")
    assert len(cands) == len(pairs)
    for pair, c in zip(pairs, cands):
        assert c.kinds[0] == "pos" and pool.passages[c.passage_ids[0]] == pair.passage
        assert len(set(c.passage_ids)) == len(c.passage_ids)  # no passage twice
        assert all(pair.doc_id not in pool.doc_ids[j] for j in c.passage_ids[1:])
        assert c.kinds.count("bm25") <= 2 and c.kinds.count("dense") <= 2 and c.kinds.count("random") <= 2
    # the "bread crust" query's hardest negatives are the other bread text, by words and by meaning
    crust = cands[-1]
    bread = pool.index[TOPICS["bread"][1]]
    assert crust.passage_ids[crust.kinds.index("bm25")] == bread
    _, dense_only = mine(pairs, encoder=encoder, n_bm25=0, n_dense=2, n_random=0, cache_dir=tmp_path / "v")
    assert dense_only[-1].passage_ids[1] == bread and dense_only[-1].kinds == ["pos", "dense", "dense"]
    # embeddings are cached: a second run reads them instead of encoding again
    assert len(list((tmp_path / "v").glob("*.npy"))) == 2  # passages and queries, once
    _, again = mine(pairs, encoder=encoder, n_bm25=2, n_dense=2, n_random=2, seed=1, cache_dir=tmp_path / "v")
    assert [c.passage_ids for c in again] == [c.passage_ids for c in cands]
    write(pool, cands, tmp_path / "out", "t")
    pool2, cands2 = read(tmp_path / "out", "t")
    assert pool2.passages == pool.passages and cands2 == cands


def test_miner_scores_are_the_cached_cosines_of_the_scored_candidates(encoder, tmp_path):
    from edge_dse.distill.candidates import miner_scores

    pairs = topic_pairs()
    pool, cands = mine(pairs, encoder=encoder, n_bm25=2, n_dense=2, n_random=0, seed=1, cache_dir=tmp_path / "out" / "vectors")
    write(pool, cands, tmp_path / "out", "t")
    rows = np.array([len(cands) - 1, 0])
    like = np.ones((2, 5), np.float32)
    like[0, 3] = like[1, 1] = np.nan  # candidates the teacher did not score
    got = miner_scores(encoder, *read(tmp_path / "out", "t"), tmp_path / "out" / "vectors", rows, like)
    for i, r in enumerate(rows):
        c = cands[r]
        q = encoder.encode(c.query, kind="query")[0]
        want = encoder.encode([pool.passages[j] for j in c.passage_ids]) @ q
        for j in range(5):
            if j >= len(want) or np.isnan(like[i, j]):
                assert np.isnan(got[i, j])
            else:
                assert abs(got[i, j] - want[j]) < 0.03  # int8 activations are quantised per batch: a few 0.01s
    assert got[0, 0] > np.nanmax(got[0, 1:])  # "bread crust": its own passage is the nearest
