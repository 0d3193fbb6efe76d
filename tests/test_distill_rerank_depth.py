"""The default rerank depth (evaluate.choose_depth) on eval results shaped as `edge-dse eval` makes them."""

from edge_dse.distill.evaluate import BASELINE_ROW, LATENCY_BUDGET_MS, MIN_DEPTH, TIE, choose_depth

SPLITS = ("debian.test", "wordnet.test")


def result(ndcg_by_depth: dict, ms_by_depth: dict, alone: float = 0.5) -> dict:
    rows = {BASELINE_ROW: {"ndcg@10": alone}}
    rows.update({f"{BASELINE_ROW} + teacher rerank@{d}": {"ndcg@10": v} for d, v in ndcg_by_depth.items()})
    return {"splits": {s: {"rows": rows} for s in SPLITS},
            "rerank": {"base": BASELINE_ROW, "ms": {s: {str(d): v for d, v in ms_by_depth.items()} for s in SPLITS}}}


def test_the_best_depth_within_the_budget_wins_and_ties_go_to_the_shallower():
    fast = {10: 50.0, 20: 100.0, 30: 150.0, 50: 250.0}
    assert choose_depth(result({10: 0.9, 20: 0.6, 30: 0.7, 50: 0.65}, fast))["default_depth"] == 30  # 10 is below MIN_DEPTH
    tie = {20: 0.7, 30: 0.7 + TIE / 2, 50: 0.7}
    assert choose_depth(result(tie, {d: fast[d] for d in tie}))["default_depth"] == 20
    assert MIN_DEPTH == 20


def test_a_depth_over_the_latency_budget_is_never_the_default():
    slow50 = {20: 100.0, 30: 150.0, 50: LATENCY_BUDGET_MS + 1}
    chosen = choose_depth(result({20: 0.6, 30: 0.62, 50: 0.9}, slow50))
    assert chosen["default_depth"] == 30
    assert any(line.startswith("| 50 |") for line in chosen["table"])  # still shown
    too_slow = choose_depth(result({20: 0.6, 50: 0.9}, {20: 900.0, 50: 2000.0}))
    assert too_slow["default_depth"] == MIN_DEPTH and "no depth" in too_slow["rule"]


def test_no_rerank_measured_means_no_choice():
    assert choose_depth({"splits": {}, "rerank": {"base": None, "ms": {}}}) is None
