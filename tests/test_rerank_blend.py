"""The teacher's scores blended with the encoder's order (rerank.blend, the card's encoder_weight),
on the shipped teacher model: what the run-time reranker, and so the UI, CLI and API, return."""

import json
import shutil

import numpy as np
import pytest

from conftest import TOPICS
from edge_dse.encoder import passage_text
from edge_dse.errors import EdgeDSEError
from edge_dse.rerank import Reranker, blend, card_encoder_weight, resolve_teacher_dir

QUERY = "rotate and compress log files"
# The encoder's order: the right answer third, as a bi-encoder might rank it.
PASSAGES = ["a puzzle game with falling blocks", "a library for reading JPEG images",
            "logrotate rotates, compresses and mails system logs", "an IRC client for the terminal"]


def test_weight_zero_is_the_teacher_alone_and_a_heavy_weight_gives_back_the_encoder_order():
    scores = np.array([0.1, 3.0, -1.0, 2.0], dtype=np.float32)
    assert np.array_equal(blend(scores, 0.0), scores)
    assert list(np.argsort(-blend(scores, 0.0), kind="stable")) == [1, 3, 0, 2]
    assert list(np.argsort(-blend(scores, 100.0), kind="stable")) == [0, 1, 2, 3]
    # in between, a pair the teacher barely separates follows the encoder, a clear call does not
    close = np.array([1.00, 1.01, 5.0, -3.0], dtype=np.float32)
    order = list(np.argsort(-blend(close, 0.5), kind="stable"))
    assert order[0] == 2 and order.index(0) < order.index(1) and order[-1] == 3
    # the teacher's scale does not matter, only its order within the list
    assert np.allclose(blend(scores, 0.7), blend(scores * 40 + 3, 0.7), atol=1e-5)


def test_the_card_weight_is_checked():
    assert card_encoder_weight({}) == 0.0
    assert card_encoder_weight({"rerank": {"encoder_weight": 0.5}}) == 0.5
    for bad in (-1, "0.5", True):
        with pytest.raises(EdgeDSEError, match="encoder_weight"):
            card_encoder_weight({"rerank": {"encoder_weight": bad}})


@pytest.fixture
def teacher_with_weight(tmp_path):
    def make(weight, by_mode: dict | None = None):
        folder = tmp_path / ("teacher-" + "-".join([str(weight)] + [f"{m}-{w}" for m, w in (by_mode or {}).items()]))
        if folder.exists():
            return folder
        shutil.copytree(resolve_teacher_dir(None), folder)
        card = json.loads((folder / "card.json").read_text())
        rerank = {k: v for k, v in (card.get("rerank") or {}).items() if k not in ("encoder_weight_by_mode", "by_mode")}
        card["rerank"] = {**rerank, "encoder_weight": weight, **({"encoder_weight_by_mode": by_mode} if by_mode else {})}
        (folder / "card.json").write_text(json.dumps(card))
        return folder
    return make


def test_the_reranker_orders_by_the_blend_its_card_records(teacher_with_weight):
    alone = Reranker(teacher_with_weight(0.0))
    raw = alone.score(QUERY, PASSAGES)
    assert [r.index for r in alone.rerank(QUERY, PASSAGES)] == list(np.argsort(-raw, kind="stable"))
    for weight in (0.5, 1000.0):
        rr = Reranker(teacher_with_weight(weight))
        assert rr.encoder_weight == weight and rr.describe()["encoder_weight"] == weight
        got = rr.rerank(QUERY, PASSAGES)
        assert [r.index for r in got] == list(np.argsort(-blend(raw, weight), kind="stable"))
        assert [r.score for r in got] == pytest.approx(sorted(blend(raw, weight), reverse=True), abs=1e-5)
    assert [r.index for r in Reranker(teacher_with_weight(1000.0)).rerank(QUERY, PASSAGES)] == [0, 1, 2, 3]


def test_the_reranker_blends_by_the_weight_of_the_mode_that_ranked_the_passages(teacher_with_weight):
    rr = Reranker(teacher_with_weight(0.0, {"hybrid": 1000.0}))
    assert rr.describe()["encoder_weight_by_mode"] == {"hybrid": 1000.0}
    alone = list(np.argsort(-rr.score(QUERY, PASSAGES), kind="stable"))
    assert alone != [0, 1, 2, 3]  # the teacher alone re-orders these: the two weights give different orders
    assert [r.index for r in rr.rerank(QUERY, PASSAGES)] == alone  # vector's order by default: weight 0
    assert [r.index for r in rr.rerank(QUERY, PASSAGES, mode="vector")] == alone
    assert [r.index for r in rr.rerank(QUERY, PASSAGES, mode="keyword")] == alone  # no weight of its own
    assert [r.index for r in rr.rerank(QUERY, PASSAGES, mode="hybrid")] == [0, 1, 2, 3]  # the hybrid's order kept
    with pytest.raises(EdgeDSEError, match="unknown search mode"):
        rr.rerank(QUERY, PASSAGES, mode="semantic")


def test_a_hybrid_searchs_rerank_uses_the_hybrid_weight(teacher_with_weight, library, corpus):
    """Library.rerank (what the CLI, the UI and the bench call) blends with the weight of the mode
    the hits were searched in: here the teacher alone for vector hits, the hybrid's own order
    kept for hybrid hits, on real files."""
    library.add(corpus)
    teacher = teacher_with_weight(0.0, {"hybrid": 1000.0})
    scorer = Reranker(teacher)
    differs = 0
    for _, _, query in TOPICS.values():
        for mode in ("vector", "hybrid"):
            hits = library.search(query, k=8, mode=mode)
            assert hits.mode == mode and len(hits) > 3
            reranked = library.rerank(query, hits, teacher=teacher)
            scores = scorer.score(query, [passage_text(h.text, h.heading) for h in hits])
            teacher_order = [hits[int(i)].chunk_id for i in np.argsort(-scores, kind="stable")]
            got = [h.chunk_id for h in reranked]
            if mode == "vector":
                assert got == teacher_order, query
            else:
                assert got == [h.chunk_id for h in hits], query
                differs += teacher_order != got
    assert differs  # on these files the two weights give different orders
