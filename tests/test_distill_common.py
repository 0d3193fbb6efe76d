"""Training-side helpers that need no torch: rank agreement and the ensemble's soft targets."""

import numpy as np
import pytest

from edge_dse.distill.train_common import ensemble, spearman, zscore_rows


def test_spearman_uses_average_ranks_for_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks of [1, 2, 2, 3, 5] are [0, 1.5, 1.5, 3, 4]; of [2, 1, 4, 4, 9]: [1, 0, 2.5, 2.5, 4]
    assert spearman([1, 2, 2, 3, 5], [2, 1, 4, 4, 9]) == pytest.approx(0.763158, abs=1e-6)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_ensemble_standardises_each_models_list_before_averaging():
    # Two models that agree on the order but not on the scale: the ensemble follows the order.
    a = np.array([[0.9, 0.5, 0.1, np.nan]], dtype=np.float32)
    b = a * 100 + 7
    z = zscore_rows(a)
    assert np.nanmean(z) == pytest.approx(0.0, abs=1e-6) and np.isnan(z[0, 3])
    np.testing.assert_allclose(ensemble({"a": a, "b": b}), z, atol=1e-5)
    # A model that disagrees pulls the average toward a tie.
    c = a[:, ::-1].copy()
    mixed = ensemble({"a": a[:, :3], "c": c[:, 1:]})
    assert np.allclose(mixed, 0.0, atol=1e-5)


def test_the_teacher_scores_the_positive_and_a_stable_sample_and_unscored_ones_are_dropped(tmp_path):
    from edge_dse.distill import candidates as cand_mod
    from edge_dse.distill.pipeline import scored_columns
    from edge_dse.distill.train_common import list_examples

    cols = scored_columns(21, 12, seed=0, row=7)
    assert cols[0] == 0 and len(set(cols)) == 12 and all(0 < c < 21 for c in cols[1:])
    assert cols == scored_columns(21, 12, seed=0, row=7)  # a resumed run scores the same ones
    assert scored_columns(21, 12, seed=0, row=8) != cols
    assert scored_columns(5, 12, 0, 0) == [0, 1, 2, 3, 4] and scored_columns(5, None, 0, 0) == [0, 1, 2, 3, 4]

    pool = cand_mod.Pool(["pos", "a", "b", "c"], [{"d0"}, {"d1"}, {"d2"}, {"d3"}], {})
    cand_mod.write(pool, [cand_mod.Candidates("q", "d0", [0, 1, 2, 3], ["pos", "bm25", "dense", "random"])], tmp_path, "s")
    [ex] = list_examples(tmp_path, "s", np.array([0]), np.array([[np.nan, 0.5, np.nan, -1.0]]))
    assert ex.passages == ["pos", "a", "c"]  # the positive stays even unscored; b was not scored
    assert np.isnan(ex.targets[0]) and list(ex.targets[1:]) == [0.5, -1.0]
