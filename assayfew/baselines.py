"""Reference models on the same fingerprints and support compounds."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge


def ridge_predict(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray, *,
                  alpha: float = 10.0) -> np.ndarray:
    """Ridge regression on fingerprint bits, fitted on the support only."""
    model = Ridge(alpha=alpha)
    model.fit(np.asarray(support_x, dtype=np.float32), np.asarray(support_y, dtype=np.float64))
    return model.predict(np.asarray(query_x, dtype=np.float32))
