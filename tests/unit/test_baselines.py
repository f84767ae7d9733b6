import numpy as np
import pytest
from sklearn.linear_model import Ridge

from assayfew.baselines import BASELINES, build_baseline, ridge_predict, tanimoto
from assayfew.chem import max_tanimoto


@pytest.mark.parametrize("n", [20, 300])  # fewer and more compounds than bits
def test_ridge_matches_scikit_learn(n):
    rng = np.random.default_rng(n)
    x = (rng.random((n, 128)) < 0.1).astype(np.float32)
    y = 6 + x @ rng.normal(size=128) + rng.normal(0, 0.1, n)
    xq = (rng.random((50, 128)) < 0.1).astype(np.float32)
    expected = Ridge(alpha=10.0).fit(x.astype(np.float64), y).predict(xq.astype(np.float64))
    np.testing.assert_allclose(ridge_predict(x, y, xq, alpha=10.0), expected, atol=1e-6)


def _toy(seed: int = 0, n: int = 24, bits: int = 64):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, bits)) < 0.2).astype(np.float32)
    y = 6 + x @ rng.normal(0, 0.5, bits) + rng.normal(0, 0.1, n)
    xq = (rng.random((10, bits)) < 0.2).astype(np.float32)
    return x, y, xq


def test_tanimoto_by_hand_and_against_max_tanimoto():
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.uint8)
    b = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], np.uint8)
    np.testing.assert_allclose(tanimoto(a, b), [[1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]])
    x, _, xq = _toy()
    np.testing.assert_allclose(tanimoto(xq, x).max(1), max_tanimoto(xq, x), rtol=1e-6)


def test_knn_on_a_toy_set():
    support = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], np.float32)
    y = np.array([5.0, 6.0, 8.0, 9.0])
    query = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.float32)
    # query 0: similarities 2/3, 1, 0, 0 -> two nearest are support 1 (1.0) and support 0 (2/3)
    np.testing.assert_allclose(build_baseline("knn", k=2).predict(support, y, query)[0],
                               (1.0 * 6 + 2 / 3 * 5) / (1 + 2 / 3))
    np.testing.assert_allclose(build_baseline("knn", k=2, weighted=False).predict(support, y, query)[0], 5.5)
    # query 1 has no bits: every similarity is 0 -> plain mean of the first k in a stable order
    np.testing.assert_allclose(build_baseline("knn", k=4).predict(support, y, query)[1], y.mean())
    with pytest.raises(ValueError, match="k must be"):
        build_baseline("knn", k=0)


def test_gp_equals_a_direct_numpy_solve():
    x, y, xq = _toy()
    a, s = 0.7, 0.05
    gram = a * tanimoto(x, x) + s * np.eye(len(y))
    expected = y.mean() + a * tanimoto(xq, x) @ np.linalg.inv(gram) @ (y - y.mean())
    np.testing.assert_allclose(build_baseline("gp", amplitude=a, noise=s).predict(x, y, xq), expected, rtol=1e-8)


def test_gp_hyperparameters_maximise_the_marginal_likelihood():
    x, y, xq = _toy(seed=3)
    gp = build_baseline("gp")
    chosen = gp.hyperparameters(x, y)

    def loglik(a: float, s: float) -> float:  # the textbook form, without the eigendecomposition
        cov = a * tanimoto(x, x) + s * np.eye(len(y))
        r = y - y.mean()
        return float(-0.5 * r @ np.linalg.solve(cov, r) - 0.5 * np.linalg.slogdet(cov)[1])

    scale = y.var()
    grid = [(scale * a, scale * s) for a in gp.GRID for s in gp.GRID]
    assert loglik(*chosen) == pytest.approx(max(loglik(a, s) for a, s in grid), abs=1e-8)
    expected = build_baseline("gp", amplitude=chosen[0], noise=chosen[1]).predict(x, y, xq)
    np.testing.assert_allclose(gp.predict(x, y, xq), expected)


def test_random_forest_is_seeded_and_fits_its_support():
    x, y, xq = _toy()
    first = build_baseline("rf", n_estimators=30, seed=1).predict(x, y, xq)
    np.testing.assert_array_equal(first, build_baseline("rf", n_estimators=30, seed=1).predict(x, y, xq))
    assert not np.array_equal(first, build_baseline("rf", n_estimators=30, seed=2).predict(x, y, xq))
    on_support = build_baseline("rf", n_estimators=30, seed=1).predict(x, y, x)
    assert np.corrcoef(on_support, y)[0, 1] > 0.9


def test_registry_names_and_options():
    assert {"ridge", "rf", "knn", "gp"} <= set(BASELINES)
    with pytest.raises(ValueError, match="no option"):
        build_baseline("gp", lengthscale=1.0)
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("svm")
