"""Uncertainty calibration on held-out targets: 95% coverage and median Spearman(uncertainty, |error|) per K.

Target-held-out split of the shared corpora (assays/shared_heldout.json): for each validation (or test) target,
K support compounds are drawn from its TRN split (K = 16, 32, 64; several seeds), query = its TST split. The
uncertainty is the model's (coefficients from its config.json). coverage95 = share of query values within
±1.96·uncertainty of the prediction (all values pooled); median_spearman = median over episodes (assay × seed)
of Spearman(uncertainty, |error|). On the validation side, where the model was calibrated, `loo` also refits the
coefficients without each target in turn and scores that target (an honest out-of-sample figure).

    python benchmarks/calibration.py --model models/default --side val [--seeds 3]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from assayfew.checkpoint import load_model
from assayfew.experiment import split_taskset
from assayfew.paths import assays_dir
from assayfew.splits import Split
from assayfew.uncertainty import (UncertaintyCalibration, calibration_quality, fit_calibration, heldout_evidence,
                                  select)

from _shared import shared_taskset  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--ks", default="16,32,64")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--split", default=str(assays_dir() / "shared_heldout.json"))
    ap.add_argument("--side", default="val", choices=["test", "val"])
    ap.add_argument("--cache", default=None, help="task cache dir with the model's fingerprints (default: "
                    "cache/shared_tasks[_r<radius>_<bits>]; built when missing)")
    args = ap.parse_args()

    model = load_model(Path(args.model))
    held = getattr(split_taskset(shared_taskset(args.cache, model.spec), Split.load(args.split)), args.side)
    calibration = UncertaintyCalibration.from_config(model.config)
    ks = [int(k) for k in args.ks.split(",")]
    evidence = heldout_evidence(model.adapt_predict, held, ks, args.seeds)
    sd = calibration.sd_of(evidence)
    loo_sd = np.full(len(sd), np.nan)
    if args.side == "val":
        for assay in np.unique(evidence.assay):
            m = evidence.assay == assay
            refit = fit_calibration(select(evidence, ~m), cv_rmse_floor=calibration.cv_rmse_floor,
                                    local=calibration.uses_local_error, local_floor=calibration.local_floor,
                                    distance_neighbours=calibration.distance_neighbours)
            loo_sd[m] = refit.sd_of(select(evidence, m))
    results: dict = {}
    for k in ks:
        m = evidence.support_k == k
        results[k] = calibration_quality(sd[m], select(evidence, m))
        if args.side == "val":
            results[k]["loo"] = calibration_quality(loo_sd[m], select(evidence, m))
        r = results[k]
        print(f"K={k:3d}  coverage95 {r['coverage95']:.3f}  median Spearman {r['median_spearman']:.3f}"
              + (f"  (leave-one-target-out: {r['loo']['coverage95']:.3f} / {r['loo']['median_spearman']:.3f})"
                 if "loo" in r else ""), flush=True)
    print(json.dumps({"side": args.side, "seeds": args.seeds, "model": args.model,
                      "calibration": calibration.to_config(), "results": results}))


if __name__ == "__main__":
    main()
