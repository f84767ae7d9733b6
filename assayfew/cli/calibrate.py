"""`assayfew calibrate`: fit the model's uncertainty on the split's validation assays and store it in the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from assayfew.checkpoint import CONFIG_FILE, MetaModel, load_model
from assayfew.cli._common import err, user_errors
from assayfew.experiment import experiment_data, split_taskset
from assayfew.io import check_output_file
from assayfew.provenance import stamp
from assayfew.uncertainty import (CV_FOLDS, DISTANCE_NEIGHBOURS, LOCAL_NEIGHBOURS, calibration_quality,
                                  fit_calibration, heldout_evidence, save_calibration)


def stand_in(model: MetaModel, path: Path) -> MetaModel:
    """The model at `path`, checked to read compounds and blend predictions as `model` does."""
    other = load_model(path)
    if other.spec != model.spec or other.standardize != model.standardize:
        raise ValueError(f"--fit-with {path}: its fingerprints ({other.spec}, standardize={other.standardize}) "
                         f"differ from the model's ({model.spec}, standardize={model.standardize})")
    if other.prediction != model.prediction:
        raise ValueError(f"--fit-with {path}: its prediction settings {other.prediction} differ from the "
                         f"model's {model.prediction}")
    return other


def main(
    model: Annotated[Path, typer.Option(help="Model directory whose config.json receives the calibration.")],
    corpus: Annotated[list[Path], typer.Option(help="Corpus or task cache (repeatable).")],
    split: Annotated[Path, typer.Option(help="Split file; its 'val' side is used (never 'test').")],
    support_k: Annotated[str, typer.Option(help="Support sizes drawn from each assay, comma-separated.")] = "16,32,64",
    seeds: Annotated[int, typer.Option(min=1, help="Support draws per assay and support size.")] = 3,
    local: Annotated[bool, typer.Option("--local/--no-local", help="Include the local error of the nearest "
                                                                   "measured compounds (d below).")] = True,
    distance_neighbours: Annotated[int, typer.Option(min=1, max=LOCAL_NEIGHBOURS, help="How many of the most "
                                                     "similar measured compounds 'similarity' averages over "
                                                     "(1: the max similarity).")] = DISTANCE_NEIGHBOURS,
    fit_with: Annotated[Optional[Path], typer.Option(
        "--fit-with", help="Fit on this stand-in model's predictions and store the result in --model: for a "
                           "model trained on the split's validation assays, the same recipe trained without "
                           "them. Fingerprints and prediction settings must match.")] = None,
) -> None:
    """Fit uncertainty = exp(a + b·log(support CV RMSE) + c·(1 − similarity) + d·log(local CV error)) by maximum
    likelihood, similarity being the mean Tanimoto of the nearest measured compounds; prints one JSON line
    (coefficients, 95% coverage and median Spearman(uncertainty, |error|) on the fitting episodes)."""
    with user_errors():
        ks = [int(k) for k in support_k.split(",")]
        if seeds < 1 or not ks or min(ks) < 2:
            raise ValueError("--seeds must be ≥ 1 and every --support-k ≥ 2")
        loaded = load_model(model)
        check_output_file(Path(model) / CONFIG_FILE)  # writable before the long fit, not after it
        fitted = loaded if fit_with is None else stand_in(loaded, fit_with)
        taskset, split_def = experiment_data(group=None, data_dir=None, corpus=corpus, fmt=None, split=split,
                                             spec=loaded.spec, standardize=loaded.standardize)
        val = split_taskset(taskset, split_def).val
        if len(val) == 0:
            raise ValueError("the split's validation side has no assays in this corpus")
        evidence = heldout_evidence(fitted.adapt_predict, val, ks, seeds)
        calibration = fit_calibration(evidence, local=local, distance_neighbours=distance_neighbours)
        quality = calibration_quality(calibration.sd_of(evidence), evidence)
        save_calibration(model, calibration, fitted_on={
            "split": str(split), "side": "val", "n_assays": len(val), "support_k": ks, "seeds": seeds,
            "cv_folds": CV_FOLDS, "local_neighbours": LOCAL_NEIGHBOURS, **quality}
            | ({} if fit_with is None else {"fitted_with": str(fit_with)}) | stamp())
    err.print(f"wrote the uncertainty calibration into {model / 'config.json'}")
    print(json.dumps({"calibration": calibration.to_config(), "fit": quality}))
