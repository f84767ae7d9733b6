"""Leave-targets-out cross-validation of a training recipe over the SIMPD training and validation targets.

Ten validation targets resolve differences of ~0.01 at best (RECIPE.md). This scores a recipe on every SIMPD
target of `assays/shared_heldout.json`'s training and validation sides instead: the targets are cut into
folds (`assayfew.splits.target_folds`, whole targets, hERG never held out since chembl28 has it too), each fold's
members are trained on everything else (`assayfew train`, one CPU thread each, `--jobs` at a time) and the
fold's ensemble, blended with fingerprint ridge as the shipped model is, scored on the held-out targets
(beside its single members and ridge alone, α = 10, on the same episodes):
support = K compounds drawn from each dataset's TRN split, query = its TST split, K = 16/32/64 × `--draws`.
The test side is never touched. Runs are resumable: finished members are kept.

    python benchmarks/target_cv.py --cache cache/potency_tasks_r2_4096_f2048 \\
        --config models/default/train_config.toml --seeds 0,1 --out runs/cv/base [--set KEY=VALUE ...] \
        [--ridge-weights 0.1,0.2,0.3]

The blend is (1 − w) · mean of the members + w · ridge, as `MetaModel` blends (`fp_ridge_weight`). Prints a
table (mean / median R² by K for each w, single members and ridge) and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from assayfew.baselines import ridge_predict
from assayfew.checkpoint import load_model
from assayfew.evaluate import evaluation_episodes
from assayfew.metrics import r2_pearson
from assayfew.experiment import load_taskset, split_taskset
from assayfew.io import read_toml, write_json, write_toml
from assayfew.paths import assays_dir, shared_data_dir
from assayfew.splits import Split, shared_groups, target_folds

KS = (16, 32, 64)


def train_member(cache: Path, split: Path, config: Path, seed: int, out: Path) -> float:
    """`assayfew train` for one fold and seed (skipped when its model exists); wall seconds."""
    if (out / "model" / "config.json").exists():
        return 0.0
    t0 = time.perf_counter()
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "assayfew", "train", "--corpus", str(cache), "--split", str(split),
           "--config", str(config), "--seed", str(seed), "--out", str(out), "--overwrite"]
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def summary(per: dict[int, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Mean / median / count above 0.3 by K of the datasets' R² (each averaged over its support draws)."""
    out = {}
    for K in KS:
        values = np.array([np.mean(v) for v in per[K].values()])
        out[str(K)] = {"mean": float(values.mean()), "median": float(np.median(values)),
                       "gt03": int((values > 0.3).sum()), "n": int(len(values))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="task cache of the training corpora (`assayfew tasks`)")
    ap.add_argument("--config", type=Path, required=True, help="training config (TOML)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training option (VALUE read as TOML), e.g. --set keep_epoch=3")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold-seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=3, help="support draws per dataset and K")
    ap.add_argument("--ridge-weights", default="0.2",
                    help="fingerprint ridge shares of the blend to score, comma-separated (the first for members)")
    ap.add_argument("--jobs", type=int, default=2, help="members trained at once")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not (args.cache / "index.json").exists():
        sys.exit(f"{args.cache}: no task cache there (build it with `assayfew tasks`, see models/default/RECIPE.md)")
    data_dir = shared_data_dir()
    if not data_dir.exists():
        sys.exit(f"shared data not found at {data_dir}: the folds group SIMPD datasets by its targets.tsv")
    import tomllib

    config = read_toml(args.config) | {k: tomllib.loads(f"v = {v}")["v"] for k, v in
                                       (item.split("=", 1) for item in args.set)}
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    write_toml(args.out / "train_config.toml", config)
    heldout = Split.load(assays_dir() / "shared_heldout.json")
    shared = shared_groups(data_dir)
    folds = target_folds(heldout, args.folds, seed=args.fold_seed, group_fn=shared.group.__getitem__,
                         eligible=shared.holdable.__contains__)
    write_json(args.out / "run.json", vars(args) | {"cache": str(args.cache), "config": str(args.config),
                                                    "out": str(args.out), "training": config})
    jobs = []
    for k, fold in enumerate(folds):
        fold_dir = args.out / f"fold{k}"
        fold_dir.mkdir(exist_ok=True)
        fold.save(fold_dir / "split.json")
        jobs += [(fold_dir / "split.json", s, fold_dir / f"s{s}") for s in seeds]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda j: train_member(args.cache, j[0], args.out / "train_config.toml", j[1], j[2]), jobs))
    train_s = time.perf_counter() - t0

    taskset = load_taskset([args.cache])
    weights = [float(w) for w in args.ridge_weights.split(",")]
    names = [f"ensemble w={w:g}" for w in weights] + [f"one member w={weights[0]:g}", "ridge"]
    per: dict[str, dict[int, dict[str, list[float]]]] = {n: {K: {} for K in KS} for n in names}
    for k, fold in enumerate(folds):
        members = [load_model(args.out / f"fold{k}" / f"s{s}" / "model").with_prediction(fp_ridge_weight=0.0)
                   for s in seeds]
        val = split_taskset(taskset, fold).val
        for K in KS:
            for draw in range(args.draws):
                for ep in evaluation_episodes(val, support_k=K, seed=draw):
                    own = [m.adapt_predict(ep.support_x, ep.support_y, ep.query_x) for m in members]
                    ridge = ridge_predict(ep.support_x, ep.support_y, ep.query_x)
                    mean = np.mean(own, axis=0)
                    preds = {f"ensemble w={w:g}": (1 - w) * mean + w * ridge for w in weights} | {
                        "ridge": ridge, f"one member w={weights[0]:g}": None}
                    for name, pred in preds.items():
                        if pred is None:  # single members: the mean of their R²
                            r2 = float(np.mean([r2_pearson(ep.query_y, (1 - weights[0]) * p + weights[0] * ridge)
                                                for p in own]))
                        else:
                            r2 = r2_pearson(ep.query_y, pred)
                        per[name][K].setdefault(ep.assay_id, []).append(r2)
    result = {name: summary(table) for name, table in per.items()}
    for name, table in result.items():
        row = "  ".join(f"K={K} {v['mean']:.3f} / {v['median']:.3f}" for K, v in table.items())
        print(f"{name:16s} {row}  average {np.mean([v['mean'] for v in table.values()]):.4f}")
    print(json.dumps({"folds": args.folds, "seeds": seeds, "draws": args.draws, "ridge_weights": weights,
                      "n_datasets": result["ridge"]["32"]["n"], "train_s": round(train_s, 1),
                      "training": config, "results": result}))


if __name__ == "__main__":
    main()
