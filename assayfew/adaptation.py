"""An assay's adapted model, kept to score more compounds later (a screening library, in chunks).

`predict.adapt_and_predict` adapts the model to the measured compounds and returns an `AssayAdaptation`;
`AssayAdaptation.predict` gives any compound the prediction, uncertainty and similarity to the measured set
that `adapt_and_predict` gives a compound of the assay table (the same adaptation, the same calibrated
uncertainty function).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assayfew.checkpoint import Adaptation, MetaModel
from assayfew.chem import max_tanimoto
from assayfew.uncertainty import UncertaintyCalibration


@dataclass(frozen=True)
class AssayAdaptation:
    """The model adapted to the measured compounds, and what scoring other compounds needs."""

    model: MetaModel
    full: Adaptation  # adapted on all measured compounds
    support_fingerprints: np.ndarray  # (n_measured, bits) 0/1, for similarity to the measured set
    calibration: UncertaintyCalibration
    cv_rmse: float  # the measured compounds' cross-validated RMSE (an input of the uncertainty)
    standardize: bool = False  # whether structures were standardised before featurizing (do the same to others)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction in p-units, uncertainty, max Tanimoto similarity to the measured compounds) of each row
        of the fingerprint matrix x; rows are independent of each other."""
        if len(x) == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        similarity = max_tanimoto(x, self.support_fingerprints)
        prediction = self.model.predict(self.full, x)
        return prediction, self.calibration.sd(similarity, self.cv_rmse), similarity
