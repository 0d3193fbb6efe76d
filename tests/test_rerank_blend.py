"""The teacher's scores blended with the encoder's order (rerank.blend, the card's encoder_weight),
on the shipped teacher model: what the run-time reranker, and so the UI, CLI and API, return."""

import json
import shutil

import numpy as np
import pytest

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
    def make(weight):
        folder = tmp_path / f"teacher-{weight}"
        if folder.exists():
            return folder
        shutil.copytree(resolve_teacher_dir(None), folder)
        card = json.loads((folder / "card.json").read_text())
        card["rerank"] = {**(card.get("rerank") or {}), "encoder_weight": weight}
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
