"""Reference models on the same fingerprints and support compounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assayfew.chem import OnBits


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge regression: prediction = (x - x_mean) @ weights + y_mean (computed as x @ weights +
    a constant: no centred copy of a large query)."""

    x_mean: np.ndarray
    weights: np.ndarray
    y_mean: float

    def predict(self, query_x: np.ndarray) -> np.ndarray:
        return np.asarray(query_x, dtype=np.float64) @ self.weights + self._offset()

    def predict_bits(self, query: OnBits) -> np.ndarray:
        """`predict(query.dense())`, as a sum of the weights of each row's set bits."""
        return np.bincount(query.rows, weights=self.weights[query.cols], minlength=query.n) + self._offset()

    def _offset(self) -> float:
        return self.y_mean - float(self.x_mean @ self.weights)


def ridge_fit(support_x: np.ndarray, support_y: np.ndarray, *, alpha: float = 10.0) -> RidgeFit:
    """Ridge regression on fingerprint bits with an unpenalised intercept, fitted on the support only.

    Same model as scikit-learn's `Ridge(alpha)`, solved in closed form (dual form when there are fewer
    compounds than bits), without importing scikit-learn at start-up.
    """
    x = np.asarray(support_x, dtype=np.float64)
    y = np.asarray(support_y, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    n, d = xc.shape
    if n <= d:
        w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(n), yc)
    else:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
    return RidgeFit(x_mean=x_mean, weights=w, y_mean=float(y_mean))


def ridge_predict(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray, *,
                  alpha: float = 10.0) -> np.ndarray:
    """`ridge_fit(support_x, support_y, alpha=alpha).predict(query_x)`."""
    return ridge_fit(support_x, support_y, alpha=alpha).predict(query_x)
