"""The promotion rule (edge_dse/distill/promote.py) on eval results shaped as `edge-dse eval` makes them."""

from edge_dse.distill.promote import BASELINE_ROW, STUDENT_ROW, decide


def result(student: dict, baseline: dict, speed=(600.0, 250.0)) -> dict:
    return {"splits": {s: {"rows": {STUDENT_ROW: {"ndcg@10": student[s]}, BASELINE_ROW: {"ndcg@10": baseline[s]}}} for s in student},
            "speed": {STUDENT_ROW: speed[0], BASELINE_ROW: speed[1]}}


SPLITS = ("debian.test", "wordnet.test", "pydoc.test", "pydoc_faq.test")


def test_promoted_only_when_every_split_and_the_speed_pass():
    base = dict.fromkeys(SPLITS, 0.5)
    assert decide(result(dict.fromkeys(SPLITS, 0.5), base))["default"] is True
    verdict = decide(result({**dict.fromkeys(SPLITS, 0.9), "pydoc_faq.test": 0.49}, base))
    assert verdict["default"] is False and verdict["short"] == ["pydoc_faq.test: nDCG@10 0.490 < 0.500 (-0.010)"]
    slow = decide(result(dict.fromkeys(SPLITS, 0.9), base, speed=(400.0, 250.0)))
    assert slow["default"] is False and slow["speedup"] == 1.6 and "speed" in slow["short"][0]


def test_a_missing_row_or_speed_is_never_a_pass():
    r = result(dict.fromkeys(SPLITS, 0.9), dict.fromkeys(SPLITS, 0.5))
    r["speed"] = {}
    assert decide(r)["default"] is False
    assert decide({"splits": {}, "speed": {}})["default"] is False


def test_ndcg10_counts_one_positive_only_inside_the_top_10():
    import math

    import pytest

    from edge_dse.distill.evaluate import metrics, ndcg10

    assert ndcg10([4, 9, 2], 4) == 1.0
    assert ndcg10([4, 9, 2], 2) == pytest.approx(1 / math.log2(4))
    assert ndcg10(list(range(20)), 10) == 0.0  # 11th place is outside the cut
    assert metrics([[4, 9, 2], list(range(20))], [2, 10])["ndcg@10"] == round(0.5 / math.log2(4), 4)
