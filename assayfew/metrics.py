"""Per-assay regression metrics as in the MetaMix paper (squared Pearson r; NaN counts as 0)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def r2_pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Squared Pearson correlation; 0.0 where it is undefined (constant input), as in the paper."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.size < 2 or np.std(t) == 0 or np.std(p) == 0:
        return 0.0
    r = np.corrcoef(t, p)[0, 1]
    return float(r * r) if np.isfinite(r) else 0.0


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float)) ** 2))


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean over episodes and its 95% confidence half-width (1.96 standard errors; NaN for one value)."""
    v = np.asarray(values, dtype=np.float64)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    return float(v.mean()), float(half)


def summarize(r2: Sequence[float], *, threshold: float = 0.3, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean, median, count above threshold, and bootstrap 95% CIs over assays."""
    values = np.nan_to_num(np.asarray(r2, dtype=np.float64), nan=0.0)
    out: dict = {"n": int(values.size)}
    if values.size == 0:
        return out | {"mean": float("nan"), "median": float("nan"), "gt03": 0}
    out["mean"] = float(values.mean())
    out["median"] = float(np.median(values))
    out["gt03"] = int((values > threshold).sum())
    if n_boot <= 0:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    boot = values[idx]
    for name, stat in (("mean", boot.mean(1)), ("median", np.median(boot, 1)), ("gt03", (boot > threshold).sum(1))):
        lo, hi = np.percentile(stat, [2.5, 97.5])
        out[f"{name}_ci"] = [float(lo), float(hi)]
    return out
