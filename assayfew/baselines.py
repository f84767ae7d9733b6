"""Single-task reference models on the same fingerprints and support compounds as the meta-learned ones.

Each baseline is a small class registered by name in `BASELINES` (its options are its constructor's keyword
arguments) with `predict(support_x, support_y, query_x)`: fitted on one assay's support only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assayfew.chem import OnBits
from assayfew.meta.registry import Registry

__all__ = ["BASELINES", "Baseline", "RidgeFit", "ridge_fit", "ridge_predict", "tanimoto", "build_baseline"]


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


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto similarity of every row of `a` to every row of `b` (0/1 bit rows); 0 between two empty rows."""
    a = (np.asarray(a) != 0).astype(np.float64)
    b = (np.asarray(b) != 0).astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class Baseline:
    """A single-task model: `predict` fits on the support and predicts the query (float64 array)."""

    name = ""

    def predict(self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


BASELINES: Registry[Baseline] = Registry("baseline")


def build_baseline(name: str, **options: object) -> Baseline:
    """An instance of baseline `name` with these options (an option it does not have is an error)."""
    return BASELINES.build(name, **options)


@BASELINES.register
class Ridge(Baseline):
    """Ridge regression on the fingerprint bits (`ridge_fit`)."""

    name = "ridge"

    def __init__(self, alpha: float = 10.0) -> None:
        self.alpha = float(alpha)

    def predict(self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
        return ridge_predict(support_x, support_y, query_x, alpha=self.alpha)


@BASELINES.register
class RandomForest(Baseline):
    """scikit-learn's random forest regressor on the fingerprint bits (seeded)."""

    name = "rf"

    def __init__(self, n_estimators: int = 100, max_features: float = 0.33, min_samples_leaf: int = 1,
                 seed: int = 0) -> None:
        self.n_estimators, self.max_features = int(n_estimators), float(max_features)
        self.min_samples_leaf, self.seed = int(min_samples_leaf), int(seed)

    def predict(self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
        from sklearn.ensemble import RandomForestRegressor

        forest = RandomForestRegressor(n_estimators=self.n_estimators, max_features=self.max_features,
                                       min_samples_leaf=self.min_samples_leaf, random_state=self.seed, n_jobs=1)
        forest.fit(np.asarray(support_x, dtype=np.float32), np.asarray(support_y, dtype=np.float64))
        return forest.predict(np.asarray(query_x, dtype=np.float32)).astype(np.float64)


@BASELINES.register
class TanimotoKNN(Baseline):
    """The mean label of the `k` support compounds most Tanimoto-similar to each query compound, weighted by
    similarity (`weighted`; plain mean otherwise, and where every neighbour has similarity 0)."""

    name = "knn"

    def __init__(self, k: int = 5, weighted: bool = True) -> None:
        if int(k) < 1:
            raise ValueError(f"knn: k must be at least 1, not {k}")
        self.k, self.weighted = int(k), bool(weighted)

    def predict(self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
        y = np.asarray(support_y, dtype=np.float64)
        sim = tanimoto(query_x, support_x)
        k = min(self.k, len(y))
        nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        labels = y[nearest]
        weights = np.take_along_axis(sim, nearest, axis=1) if self.weighted else np.ones_like(labels)
        total = weights.sum(1)
        plain = labels.mean(1)
        return np.where(total > 0, (weights * labels).sum(1) / np.where(total > 0, total, 1.0), plain)


@BASELINES.register
class TanimotoGP(Baseline):
    """Exact Gaussian-process regression with the Tanimoto kernel: constant mean (the support mean), kernel
    `amplitude · T(x, x')` plus `noise` on the diagonal; the posterior mean is the prediction.

    `amplitude` / `noise` None: each is chosen per assay by maximising the exact log marginal likelihood
    over a log-spaced grid (one eigendecomposition of the support kernel serves every grid point)."""

    name = "gp"
    GRID = np.logspace(-2, 1, 13)

    def __init__(self, amplitude: float | None = None, noise: float | None = None) -> None:
        for what, value in (("amplitude", amplitude), ("noise", noise)):
            if value is not None and not float(value) > 0:
                raise ValueError(f"gp: {what} must be positive, not {value}")
        self.amplitude = None if amplitude is None else float(amplitude)
        self.noise = None if noise is None else float(noise)

    def hyperparameters(self, support_x: np.ndarray, support_y: np.ndarray) -> tuple[float, float]:
        """(amplitude, noise) for this support: the given ones, or those of highest marginal likelihood."""
        y = np.asarray(support_y, dtype=np.float64)
        resid = y - y.mean()
        eig, vec = np.linalg.eigh(tanimoto(support_x, support_x))
        z2 = (vec.T @ resid) ** 2
        scale = max(float(resid.var()), 1e-6)  # the grids are relative to the labels' variance
        amps = [self.amplitude] if self.amplitude is not None else list(scale * self.GRID)
        noises = [self.noise] if self.noise is not None else list(scale * self.GRID)
        best, choice = -np.inf, (amps[0], noises[0])
        for a in amps:
            for s in noises:
                var = a * np.clip(eig, 0.0, None) + s
                loglik = -0.5 * float((z2 / var).sum() + np.log(var).sum())
                if loglik > best:
                    best, choice = loglik, (a, s)
        return choice

    def predict(self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
        y = np.asarray(support_y, dtype=np.float64)
        amplitude, noise = self.hyperparameters(support_x, support_y)
        gram = amplitude * tanimoto(support_x, support_x) + noise * np.eye(len(y))
        weights = np.linalg.solve(gram, y - y.mean())
        return y.mean() + amplitude * tanimoto(query_x, support_x) @ weights
