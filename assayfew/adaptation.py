"""An assay's adapted model, kept to score more compounds later (a screening library, in chunks).

`predict.adapt_and_predict` adapts the model to the measured compounds and returns an `AssayAdaptation`;
`AssayAdaptation.predict` gives any compound the prediction, uncertainty and similarity to the measured set
that `adapt_and_predict` gives a compound of the assay table (the same adaptation, the same calibrated
uncertainty function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from assayfew.checkpoint import Adaptation, MetaModel
from assayfew.chem import (OnBits, max_tanimoto_from_counts, nearest_tanimoto, tanimoto_from_counts,
                           top_similarities)
from assayfew.uncertainty import LOCAL_NEIGHBOURS, UncertaintyCalibration, local_error, nearest_measured, padded_top


@dataclass(frozen=True)
class AssayAdaptation:
    """The model adapted to the measured compounds, and what scoring other compounds needs."""

    model: MetaModel
    full: Adaptation  # adapted on all measured compounds
    support_fingerprints: np.ndarray  # (n_measured, spec.structure_bits) 0/1: the ECFP part, for similarity
    calibration: UncertaintyCalibration
    cv_rmse: float  # the measured compounds' cross-validated RMSE (an input of the uncertainty)
    standardize: bool = False  # whether structures were standardised before featurizing (do the same to others)
    support_residuals: np.ndarray | None = None  # (n_measured,) |CV error|, for the local error (when calibrated so)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction in p-units, uncertainty, max Tanimoto similarity to the measured compounds) of each row
        of the fingerprint matrix x; rows are independent of each other."""
        if len(x) == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        structure = self.model.spec.structure_part(x)
        local: np.ndarray | None
        if self.calibration.uses_local_error:
            similarity, local = nearest_measured(structure, self.support_fingerprints, self._residuals)
        else:
            similarity, local = padded_top(nearest_tanimoto(structure, self.support_fingerprints,
                                                            self.calibration.neighbours_needed)[0]), None
        prediction = self.model.predict(self.full, x)
        return prediction, self.calibration.sd(similarity, self.cv_rmse, local), similarity[:, 0]

    def predict_bits(self, query: OnBits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict(query.dense())` from the set bits alone (`MetaModel.predict_bits`; the intersections with
        the measured compounds as one sparse product): the same numbers, faster for libraries."""
        if query.n == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        similarity, local = self._nearest_bits(query.first_columns(self.model.spec.structure_bits))
        prediction = self._bits_scorer(query)
        return prediction, self.calibration.sd(similarity, self.cv_rmse, local), similarity[:, 0]

    def _nearest_bits(self, query: OnBits) -> tuple[np.ndarray, np.ndarray | None]:
        """(similarities to the nearest measured compounds (n, k) as `nearest_measured` gives them (k = 1 when
        the calibration reads only the max), local error or None when the calibration does not use it) of each
        query row."""
        support_t, support_counts = self._support_columns
        use_local = self.calibration.uses_local_error
        use_top = self.calibration.neighbours_needed > 1
        best = np.zeros((query.n, LOCAL_NEIGHBOURS if use_top else 1), dtype=np.float64)
        local = np.full(query.n, np.nan) if use_local else None
        if support_t.shape[1] == 0:
            return best, local
        starts = query.starts()
        counts = np.diff(starts).astype(np.float32)
        cols = torch.from_numpy(query.cols)
        step = max(1, 2_000_000 // support_t.shape[1])  # bound the (step, n_measured) intersections
        with torch.no_grad():
            for a in range(0, query.n, step):
                b = min(a + step, query.n)
                inter = F.embedding_bag(cols[starts[a]:starts[b]], support_t,
                                        torch.from_numpy(starts[a:b] - starts[a]), mode="sum").numpy()
                if not use_top:
                    best[a:b, 0] = max_tanimoto_from_counts(inter, counts[a:b], support_counts)
                    continue
                top, neighbours = top_similarities(tanimoto_from_counts(inter, counts[a:b], support_counts),
                                                   LOCAL_NEIGHBOURS)
                best[a:b] = padded_top(top)
                if local is not None:
                    local[a:b] = local_error(top, neighbours, self._residuals)
        return best, local

    @property
    def _residuals(self) -> np.ndarray:
        if self.support_residuals is None:
            raise ValueError("this model's uncertainty needs the measured compounds' CV residuals (support_residuals)")
        return self.support_residuals

    @cached_property
    def _bits_scorer(self) -> Callable[[OnBits], np.ndarray]:
        return self.model.bits_scorer(self.full)

    @cached_property
    def _support_columns(self) -> tuple[torch.Tensor, np.ndarray]:
        """The measured fingerprints as a (bits, n_measured) float32 table (row j: which compounds have bit
        j; exact intersection counts as sums) and their bit counts."""
        support = np.asarray(self.support_fingerprints) != 0
        return (torch.from_numpy(np.ascontiguousarray(support.T, dtype=np.float32)),
                support.sum(axis=1).astype(np.float32))
