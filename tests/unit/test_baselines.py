import numpy as np
import pytest
from sklearn.linear_model import Ridge

from assayfew.baselines import ridge_predict


@pytest.mark.parametrize("n", [20, 300])  # fewer and more compounds than bits
def test_ridge_matches_scikit_learn(n):
    rng = np.random.default_rng(n)
    x = (rng.random((n, 128)) < 0.1).astype(np.float32)
    y = 6 + x @ rng.normal(size=128) + rng.normal(0, 0.1, n)
    xq = (rng.random((50, 128)) < 0.1).astype(np.float32)
    expected = Ridge(alpha=10.0).fit(x.astype(np.float64), y).predict(xq.astype(np.float64))
    np.testing.assert_allclose(ridge_predict(x, y, xq, alpha=10.0), expected, atol=1e-6)
