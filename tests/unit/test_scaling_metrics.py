import numpy as np
import pytest

from assayfew.metrics import r2_pearson, summarize
from assayfew.scaling import fit_scaling


def test_center_and_standardize_round_trip():
    y = np.array([5.0, 6.0, 7.0, 8.0])
    for mode in ("none", "center", "standardize"):
        s = fit_scaling(y, mode)
        np.testing.assert_allclose(s.inverse(s.forward(y)), y, atol=1e-5)
    assert fit_scaling(y, "center").forward(y).mean() == pytest.approx(0.0, abs=1e-6)


def test_standardize_floors_small_spread():
    y = np.array([6.0, 6.01, 6.02])
    assert fit_scaling(y, "standardize", min_std=0.5).scale == 0.5


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown label scaling"):
        fit_scaling(np.ones(3), "zscore")


def test_r2_matches_corrcoef_and_nan_counts_as_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert r2_pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1] ** 2)
    assert r2_pearson(a, np.ones(50)) == 0.0


def test_summary_counts_and_intervals():
    values = [0.1, 0.2, 0.35, 0.5, float("nan")]
    s = summarize(values, n_boot=500)
    assert s["n"] == 5 and s["gt03"] == 2
    assert s["mean"] == pytest.approx(np.mean([0.1, 0.2, 0.35, 0.5, 0.0]))
    assert s["mean_ci"][0] <= s["mean"] <= s["mean_ci"][1]
