"""Predictive uncertainty: the standard deviation of a prediction's error in log units, calibrated on held-out assays.

A prediction's error grows with the compound's distance from the measured compounds and with how hard the assay
is, which the measured compounds' own cross-validated error shows:

    uncertainty = exp(intercept + cv_slope · log(max(cv_rmse, cv_rmse_floor)) + distance_slope · (1 − similarity)
                      + local_slope · log(max(local_error, local_floor)))

`similarity` is the compound's mean Tanimoto similarity to its `distance_neighbours` most similar measured compounds
(1: the max similarity, which the `similarity_to_support` column shows; models calibrated before stop 13 use 1,
newer ones 2: the single nearest neighbour is close by chance more often the more compounds were measured),
`cv_rmse` the root mean squared
error of the measured compounds' cross-validated predictions, and `local_error` the similarity-weighted mean
absolute cross-validated error of its `LOCAL_NEIGHBOURS` most similar measured compounds (how well the model did
near this compound; models calibrated without it have local_slope 0). The coefficients are fitted by maximum likelihood
(Gaussian errors, every episode weighted equally) on validation assays (`fit_calibration`, `assayfew calibrate`)
and stored in the model's `config.json` under "uncertainty"; ±1.96·uncertainty is then a 95% interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from assayfew.checkpoint import CONFIG_FILE
from assayfew.chem import nearest_tanimoto
from assayfew.evaluate import evaluation_episodes
from assayfew.io import read_json, write_json
from assayfew.tasks import Task, TaskSet

CONFIG_KEY = "uncertainty"
CV_FOLDS = 5
#: How many of the most similar measured compounds the local error averages over (and the most the distance
#: term may average over).
LOCAL_NEIGHBOURS = 3
#: The distance term's neighbours for new calibrations (`assayfew calibrate --distance-neighbours`).
DISTANCE_NEIGHBOURS = 2
Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class UncertaintyCalibration:
    """Coefficients of the uncertainty model (defaults: the shipped model's calibration, rounded)."""

    intercept: float = -0.45
    cv_slope: float = 0.75
    distance_slope: float = 1.0
    cv_rmse_floor: float = 0.1
    local_slope: float = 0.0
    local_floor: float = 0.05
    distance_neighbours: int = 1

    def __post_init__(self) -> None:
        if self.cv_rmse_floor <= 0 or self.local_floor <= 0:
            raise ValueError(f"{CONFIG_KEY}.cv_rmse_floor and local_floor must be > 0")
        if not 1 <= self.distance_neighbours <= LOCAL_NEIGHBOURS:
            raise ValueError(f"{CONFIG_KEY}.distance_neighbours must be 1..{LOCAL_NEIGHBOURS}, "
                             f"not {self.distance_neighbours!r}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UncertaintyCalibration:
        """The calibration in a model config (its "uncertainty" section; the defaults where it has none)."""
        section = config.get(CONFIG_KEY, {})
        if not isinstance(section, dict):
            raise ValueError(f"model config: {CONFIG_KEY!r} must be an object, not {type(section).__name__}")
        values = {}
        for f in fields(cls):
            if f.name not in section:
                continue
            value = section[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"model config: {CONFIG_KEY}.{f.name} must be a finite number, not {value!r}")
            if f.name == "distance_neighbours" and value != int(value):
                raise ValueError(f"model config: {CONFIG_KEY}.{f.name} must be a whole number, not {value!r}")
            values[f.name] = int(value) if f.name == "distance_neighbours" else float(value)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"model config: {exc}") from exc

    def to_config(self, **provenance: Any) -> dict[str, Any]:
        """The config section: coefficients plus how they were fitted."""
        return asdict(self) | provenance

    @property
    def uses_local_error(self) -> bool:
        return self.local_slope != 0.0

    @property
    def neighbours_needed(self) -> int:
        """How many nearest measured compounds' similarities `sd` reads (1: the max similarity alone)."""
        return LOCAL_NEIGHBOURS if self.uses_local_error else self.distance_neighbours

    def sd(self, similarity: np.ndarray, cv_rmse: float | np.ndarray,
           local_error: np.ndarray | None = None) -> np.ndarray:
        """Standard deviation of the prediction error (log units) at these similarities, support CV RMSE and
        local errors (`local_error` is required when the calibration uses it, ignored otherwise). similarity:
        (n,) max similarities, or (n, k) similarities to each row's k nearest measured compounds, descending
        (`nearest_measured`; NaN where fewer were measured); (n,) only when `distance_neighbours` is 1."""
        log_cv = np.log(np.maximum(np.asarray(cv_rmse, dtype=np.float64), self.cv_rmse_floor))
        distance = 1.0 - self.distance_similarity(similarity)
        log_sd = self.intercept + self.cv_slope * log_cv + self.distance_slope * distance
        if self.uses_local_error:
            if local_error is None:
                raise ValueError("this uncertainty calibration needs the local error of the nearest measured "
                                 "compounds")
            local = np.maximum(np.asarray(local_error, np.float64), self.local_floor)
            log_sd = log_sd + self.local_slope * np.log(local)
        return np.exp(log_sd)

    def distance_similarity(self, similarity: np.ndarray) -> np.ndarray:
        """What the distance term reads: the mean of each row's `distance_neighbours` highest similarities
        (fewer where fewer were measured; `sd` explains the shapes)."""
        similarity = np.asarray(similarity, dtype=np.float64)
        if similarity.ndim == 1:
            if self.distance_neighbours != 1:
                raise ValueError(f"this uncertainty calibration reads the similarity to the "
                                 f"{self.distance_neighbours} nearest measured compounds, not the max alone")
            return similarity
        top = similarity[:, : self.distance_neighbours]
        count = np.sum(~np.isnan(top), axis=1)
        return np.where(count > 0, np.nansum(top, axis=1) / np.maximum(count, 1), 0.0)

    def sd_of(self, evidence: Evidence) -> np.ndarray:
        """`sd` at every held-out value of `evidence`."""
        return self.sd(evidence.top_similarity, evidence.cv_rmse, evidence.local_error)


def support_residuals(y: np.ndarray, cv_pred: np.ndarray) -> np.ndarray:
    """|y − cross-validated prediction| of each measured compound; the CV RMSE where no prediction was made."""
    residuals = np.abs(np.asarray(y, np.float64) - cv_pred)
    return np.where(np.isfinite(residuals), residuals, support_error(y, cv_pred))


def nearest_measured(query: np.ndarray, support: np.ndarray, residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Tanimoto similarities to the `LOCAL_NEIGHBOURS` most similar measured compounds (n, LOCAL_NEIGHBOURS),
    descending, NaN where fewer were measured: column 0 is the max similarity; local error) of each query
    fingerprint row; support: the measured compounds' fingerprints (the same columns), residuals: their
    `support_residuals`."""
    similarity, neighbours = nearest_tanimoto(query, support, LOCAL_NEIGHBOURS)
    top = padded_top(similarity)
    if similarity.shape[1] == 0:
        top[:, 0] = 0.0
        return top, np.full(len(query), np.nan)
    return top, local_error(similarity, neighbours, residuals)


def padded_top(similarity: np.ndarray) -> np.ndarray:
    """(n, k ≤ LOCAL_NEIGHBOURS) nearest similarities as (n, LOCAL_NEIGHBOURS), NaN-padded."""
    top = np.full((len(similarity), LOCAL_NEIGHBOURS), np.nan)
    top[:, : similarity.shape[1]] = similarity
    return top


def local_error(similarity: np.ndarray, neighbours: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Similarity-weighted mean of the residuals of each row's nearest measured compounds (similarity, neighbours:
    (n, k) as `chem.nearest_tanimoto` gives them)."""
    weight = np.asarray(similarity, np.float64) + 1e-6
    return (np.asarray(residuals, np.float64)[neighbours] * weight).sum(axis=1) / weight.sum(axis=1)


def cv_folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`k` (at most `n`) random folds of range(n)."""
    return [f for f in np.array_split(rng.permutation(n), min(k, n)) if len(f)]


def cross_validated(predictor: Predictor, x: np.ndarray, y: np.ndarray, folds: Sequence[np.ndarray]) -> np.ndarray:
    """Each compound predicted by the model adapted on the other folds (NaN where a fold cannot be held out)."""
    pred = np.full(len(y), np.nan)
    for fold in folds:
        train = np.setdiff1d(np.arange(len(y)), fold)
        if len(train) >= 2 and np.ptp(y[train]) > 0:
            pred[fold] = predictor(x[train], y[train], x[fold])
    return pred


def support_error(y: np.ndarray, cv_pred: np.ndarray) -> float:
    """RMSE of the cross-validated predictions; the labels' spread when none could be made."""
    ok = np.isfinite(cv_pred)
    if not ok.any():
        return float(np.std(y))
    return float(np.sqrt(np.mean((np.asarray(y)[ok] - cv_pred[ok]) ** 2)))


@dataclass
class Evidence:
    """Per held-out value: its assay and episode, support size, similarities to its nearest measured compounds
    ((n, LOCAL_NEIGHBOURS), as `nearest_measured` gives them), support CV RMSE, local error, error."""

    assay: np.ndarray
    episode: np.ndarray
    support_k: np.ndarray
    top_similarity: np.ndarray
    cv_rmse: np.ndarray
    local_error: np.ndarray
    error: np.ndarray

    @property
    def similarity(self) -> np.ndarray:
        """The max similarity to the measured compounds."""
        return self.top_similarity[:, 0]


def episode_evidence(predictor: Predictor, episodes: Sequence[Task], *, seed: int = 0,
                     n_folds: int = CV_FOLDS, structure_bits: int | None = None) -> Evidence:
    """Adapt on each episode's support, predict its query, and record what the uncertainty model uses.

    structure_bits: how many leading fingerprint columns similarity reads (`FingerprintSpec.structure_bits`,
    as at prediction; None = all)."""
    parts: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(Evidence)}
    for i, task in enumerate(episodes):
        ys = np.asarray(task.support_y, dtype=np.float64)
        folds = cv_folds(len(ys), n_folds, np.random.default_rng([seed, i]))
        cv_pred = cross_validated(predictor, task.support_x, ys, folds)
        cv_rmse = support_error(ys, cv_pred)
        similarity, local = nearest_measured(task.query_x[:, :structure_bits], task.support_x[:, :structure_bits],
                                             support_residuals(ys, cv_pred))
        n = len(task.query_y)
        parts["assay"].append(np.full(n, task.assay_id, dtype=object))
        parts["episode"].append(np.full(n, i))
        parts["support_k"].append(np.full(n, len(ys)))
        parts["top_similarity"].append(similarity)
        parts["cv_rmse"].append(np.full(n, cv_rmse))
        parts["local_error"].append(local)
        parts["error"].append(np.asarray(task.query_y, np.float64) - predictor(task.support_x, ys, task.query_x))
    return Evidence(**{k: np.concatenate(v) if v else np.zeros((0, LOCAL_NEIGHBOURS) if k == "top_similarity" else 0)
                       for k, v in parts.items()})


def heldout_evidence(predictor: Predictor, taskset: TaskSet, support_ks: Iterable[int], seeds: int) -> Evidence:
    """Evidence over the evaluation episodes of `taskset` at every support size and seed (similarity on the
    ECFP part of its fingerprints, as at prediction)."""
    return join_evidence([episode_evidence(predictor, evaluation_episodes(taskset, support_k=k, seed=seed), seed=seed,
                                           structure_bits=taskset.spec.structure_bits)
                          for k in support_ks for seed in range(seeds)])


def join_evidence(parts: Sequence[Evidence]) -> Evidence:
    """One Evidence from several (episode numbers kept distinct)."""
    offset, episodes = 0, []
    for part in parts:
        episodes.append(part.episode + offset)
        offset += int(part.episode.max()) + 1 if len(part.episode) else 0
    return Evidence(episode=np.concatenate(episodes) if episodes else np.zeros(0),
                    **{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                       for f in fields(Evidence) if f.name != "episode"})


def fit_calibration(evidence: Evidence, *, cv_rmse_floor: float = UncertaintyCalibration.cv_rmse_floor,
                    local: bool = True, local_floor: float = UncertaintyCalibration.local_floor,
                    distance_neighbours: int = DISTANCE_NEIGHBOURS) -> UncertaintyCalibration:
    """Maximum-likelihood coefficients (Gaussian errors; each episode's values weigh 1 in total); local=False
    leaves the local error out (local_slope 0); the distance term reads the mean similarity of the
    `distance_neighbours` nearest measured compounds."""
    from scipy.optimize import minimize

    if len(evidence.error) < 3:
        raise ValueError("too few held-out values to calibrate the uncertainty")
    shape = UncertaintyCalibration(distance_neighbours=distance_neighbours)  # checks the count
    columns = [np.ones(len(evidence.error)), np.log(np.maximum(evidence.cv_rmse, cv_rmse_floor)),
               1.0 - shape.distance_similarity(evidence.top_similarity)]
    if local:
        columns.append(np.log(np.maximum(evidence.local_error, local_floor)))
    design = np.stack(columns, axis=1)
    _, inverse, counts = np.unique(evidence.episode, return_inverse=True, return_counts=True)
    weight = 1.0 / counts[inverse]
    weight /= weight.sum()
    sq = evidence.error ** 2

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        log_sd = design @ theta
        scaled = sq * np.exp(-2 * log_sd)
        return float(weight @ (log_sd + 0.5 * scaled)), design.T @ (weight * (1.0 - scaled))

    start = np.zeros(design.shape[1])
    start[0] = np.log(np.sqrt(weight @ sq) + 1e-12)
    theta = minimize(nll, start, jac=True, method="L-BFGS-B").x
    return UncertaintyCalibration(intercept=float(theta[0]), cv_slope=float(theta[1]),
                                  distance_slope=float(theta[2]), cv_rmse_floor=float(cv_rmse_floor),
                                  local_slope=float(theta[3]) if local else 0.0, local_floor=float(local_floor),
                                  distance_neighbours=distance_neighbours)


def select(evidence: Evidence, mask: np.ndarray) -> Evidence:
    """The values where `mask` is true."""
    return Evidence(**{f.name: getattr(evidence, f.name)[mask] for f in fields(Evidence)})


def save_calibration(model_dir: Path, calibration: UncertaintyCalibration, **provenance: Any) -> None:
    """Write the calibration into the model directory's config.json (weights untouched)."""
    path = Path(model_dir) / CONFIG_FILE
    write_json(path, read_json(path) | {CONFIG_KEY: calibration.to_config(**provenance)})


def calibration_quality(sd: np.ndarray, evidence: Evidence, *, z: float = 1.96) -> dict[str, float]:
    """Coverage of ±z·sd over all values, and the median over episodes of Spearman(sd, |error|)."""
    from scipy.stats import spearmanr

    abs_error = np.abs(evidence.error)
    rhos = []
    for e in np.unique(evidence.episode):
        m = evidence.episode == e
        if m.sum() >= 3 and np.ptp(sd[m]) > 0 and np.ptp(abs_error[m]) > 0:
            rhos.append(float(spearmanr(sd[m], abs_error[m])[0]))
    return {"coverage95": float(np.mean(abs_error <= z * sd)) if len(sd) else float("nan"),
            "median_spearman": float(np.median(rhos)) if rhos else float("nan"),
            "n_values": int(len(sd)), "n_episodes": int(len(np.unique(evidence.episode)))}
