"""Per-task label scaling from the support set's statistics.

Corpora mix pIC50, pKi, pKd and KIBA scores. The model sees labels shifted (and optionally divided) by the
support set's statistics; predictions are mapped back to the task's own units. Dividing by a small support
set's spread is fragile (see shared notes), so `standardize` floors the spread at `min_std`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALING_MODES = ("none", "center", "standardize")


@dataclass(frozen=True)
class LabelScaling:
    """A task's affine label map: model space = (y - shift) / scale."""

    shift: float = 0.0
    scale: float = 1.0

    def forward(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, dtype=np.float64) - self.shift) / self.scale).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.scale + self.shift

    def inverse_spread(self, s: np.ndarray) -> np.ndarray:
        """Map a spread (standard deviation) back to task units."""
        return np.asarray(s, dtype=np.float64) * self.scale


def fit_scaling(support_y: np.ndarray, mode: str = "center", min_std: float = 0.5) -> LabelScaling:
    """Scaling fitted on the support labels only (never on the query)."""
    if mode not in SCALING_MODES:
        raise ValueError(f"unknown label scaling {mode!r}; choose from {SCALING_MODES}")
    y = np.asarray(support_y, dtype=np.float64)
    if mode == "none" or y.size == 0:
        return LabelScaling()
    shift = float(y.mean())
    if mode == "center":
        return LabelScaling(shift=shift)
    return LabelScaling(shift=shift, scale=max(float(y.std()), min_std))
