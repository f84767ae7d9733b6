"""An assay's adapted model: adapted once on the measured compounds, then predicts any compounds in batches.

`adapt_to_assay` adapts the model to the measured set and to bootstrap resamples of it (the uncertainty
ensemble); `AssayAdaptation.predict` gives each compound's prediction and uncertainty. `predict.adapt_and_predict`
(the assay table) and `screen.score_library` (a separate library, streamed in chunks) both use it, so a
compound gets the same numbers from either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assayfew.checkpoint import Adaptation, MetaModel


@dataclass(frozen=True)
class AssayAdaptation:
    """The model adapted to the measured compounds (`full`) and to bootstrap resamples of them (`members`)."""

    model: MetaModel
    full: Adaptation
    members: list[Adaptation]
    support_fingerprints: np.ndarray  # (n_measured, bits) 0/1, for similarity to the measured set
    standardize: bool = False  # whether structures were standardised before featurizing (do the same to others)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, uncertainty) of each row of the fingerprint matrix x, in the assay's p-units.

        Uncertainty: spread (standard deviation) of the bootstrap members' predictions; NaN with fewer
        than two members. Rows are independent of each other.
        """
        if len(x) == 0:
            return np.zeros(0), np.zeros(0)
        preds = self.model.predict([self.full, *self.members], x)
        spread = np.std(np.stack(preds[1:]), axis=0) if len(self.members) >= 2 else np.full(len(x), np.nan)
        return preds[0], spread


def adapt_to_assay(model: MetaModel, support_x: np.ndarray, support_y: np.ndarray, *, steps: int | None,
                   n_ensemble: int, rng: np.random.Generator, standardize: bool = False,
                   progress: Callable[[int], None] | None = None) -> AssayAdaptation:
    """Adapt to the measured set and to `n_ensemble` bootstrap resamples of it (drawn from `rng`; resamples
    whose activities are all equal are skipped). `standardize`: how the measured structures were featurized
    (compounds scored later are featurized the same way). `progress(b)` after each resample."""
    full = model.adapt(support_x, support_y, steps=steps)
    members = []
    for b in range(n_ensemble):
        boot = rng.integers(0, len(support_y), len(support_y))
        if np.ptp(support_y[boot]) > 0:
            members.append(model.adapt(support_x[boot], support_y[boot], steps=steps))
        if progress is not None:
            progress(b)
    return AssayAdaptation(model=model, full=full, members=members,
                           support_fingerprints=np.asarray(support_x) != 0, standardize=standardize)
