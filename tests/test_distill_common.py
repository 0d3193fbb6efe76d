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
