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
        --config models/default/train_config.toml --seeds 0,1 --out runs/cv/base [--set KEY=VALUE ...]

Prints a table (mean / median R² by K, ensemble and single members) and ends with one JSON line.
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
from assayfew.checkpoint import load_model, save_ensemble
from assayfew.evaluate import evaluate_episodes, evaluation_episodes
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


def scores(predict, episodes: list) -> dict[str, float]:
    """Mean R² per dataset over its episodes (one support draw each)."""
    table = evaluate_episodes(episodes, predict, n_boot=0).per_assay
    return table.groupby("assay_id")["r2"].mean().to_dict()


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
    ap.add_argument("--ridge-weight", type=float, default=0.2, help="fingerprint ridge share of the blend")
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
    ens: dict[int, dict[str, list[float]]] = {k: {} for k in KS}
    one: dict[int, dict[str, list[float]]] = {k: {} for k in KS}
    ridge: dict[int, dict[str, list[float]]] = {k: {} for k in KS}
    for k, fold in enumerate(folds):
        fold_dir = args.out / f"fold{k}"
        members = [fold_dir / f"s{s}" / "model" for s in seeds]
        save_ensemble(members, fold_dir / "ensemble", prediction={"fp_ridge_weight": args.ridge_weight})
        ensemble = load_model(fold_dir / "ensemble")
        singles = [load_model(m).with_prediction(fp_ridge_weight=args.ridge_weight) for m in members]
        val = split_taskset(taskset, fold).val
        for K in KS:
            for draw in range(args.draws):
                eps = evaluation_episodes(val, support_k=K, seed=draw)
                for assay, r2 in scores(ensemble.adapt_predict, eps).items():
                    ens[K].setdefault(assay, []).append(r2)
                for single in singles:
                    for assay, r2 in scores(single.adapt_predict, eps).items():
                        one[K].setdefault(assay, []).append(r2)
                for assay, r2 in scores(ridge_predict, eps).items():
                    ridge[K].setdefault(assay, []).append(r2)

    def summary(per: dict[int, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
        out = {}
        for K in KS:
            values = np.array([np.mean(v) for v in per[K].values()])
            out[str(K)] = {"mean": float(values.mean()), "median": float(np.median(values)),
                           "gt03": int((values > 0.3).sum()), "n": int(len(values))}
        return out

    result = {"ensemble": summary(ens), "one_member": summary(one), "ridge": summary(ridge)}
    for name, table in result.items():
        row = "  ".join(f"K={K} {v['mean']:.3f} / {v['median']:.3f}" for K, v in table.items())
        print(f"{name:10s} {row}  average {np.mean([v['mean'] for v in table.values()]):.4f}")
    print(json.dumps({"folds": args.folds, "seeds": seeds, "draws": args.draws, "ridge_weight": args.ridge_weight,
                      "n_datasets": result["ensemble"]["32"]["n"], "train_s": round(train_s, 1),
                      "training": config, "results": result}))


if __name__ == "__main__":
    main()
