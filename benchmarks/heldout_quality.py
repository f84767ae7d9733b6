"""Held-out quality: meta-learned models vs ridge on the same fingerprints and support compounds.

Target-held-out split of the shared corpora (assays/shared_heldout.json): for each test target, K support
compounds are drawn from its TRN split (K = 16, 32, 64; several seeds), query = its TST split. Prints a table of
mean / median / #(R² > 0.3) per method and K, and one JSON line with everything.

    python benchmarks/heldout_quality.py --model models/default --model runs/none/model [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from assayfew.baselines import ridge_predict
from assayfew.checkpoint import load_model
from assayfew.chem import FingerprintSpec
from assayfew.evaluate import evaluate_episodes, evaluation_episodes
from assayfew.experiment import split_taskset
from assayfew.paths import assays_dir
from assayfew.splits import Split

from _shared import shared_taskset  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

VARIANTS = {
    "meta-only": {"head": "gd", "fp_ridge_weight": 0.0},
    "gd+fp0.5": {"head": "gd", "fp_ridge_weight": 0.5},
    "ridgehead": {"head": "ridge", "fp_ridge_weight": 0.0},
    "ridgehead+fp0.5": {"head": "ridge", "fp_ridge_weight": 0.5},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", action="append", default=[], help="model directory (repeatable)")
    ap.add_argument("--variants", action="store_true", help="also score each model's prediction variants")
    ap.add_argument("--ks", default="16,32,64")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--split", default=str(assays_dir() / "shared_heldout.json"))
    ap.add_argument("--side", default="test", choices=["test", "val"])
    ap.add_argument("--cache", default=None, help="task cache dir with the model's fingerprints (default: "
                    "cache/shared_tasks[_r<radius>_<bits>]; built when missing)")
    args = ap.parse_args()

    models = {Path(m).parent.name if Path(m).name == "model" else Path(m).name: load_model(Path(m))
              for m in args.model}
    specs = {m.spec for m in models.values()}
    if len(specs) > 1:
        sys.exit("the models use different fingerprints; score them in separate runs")
    spec = specs.pop() if specs else FingerprintSpec()
    sides = split_taskset(shared_taskset(args.cache, spec), Split.load(args.split))
    held = getattr(sides, args.side)
    methods = {"ridge": lambda xs, ys, xq: ridge_predict(xs, ys, xq)}
    for name, m in models.items():
        methods[name] = m.adapt_predict
        if args.variants:
            for label, settings in VARIANTS.items():
                methods[f"{name}:{label}"] = m.with_prediction(**settings).adapt_predict
    if len(models) > 1:
        members = list(models.values())
        methods["ensemble"] = lambda xs, ys, xq: np.mean([m.adapt_predict(xs, ys, xq) for m in members], axis=0)
    results: dict = {}
    for k in (int(v) for v in args.ks.split(",")):
        for name, fn in methods.items():
            per_seed = []
            for seed in range(args.seeds):
                episodes = evaluation_episodes(held, support_k=k, seed=seed)
                per_seed.append(evaluate_episodes(episodes, fn, n_boot=0).summary)
            results.setdefault(name, {})[k] = {
                "mean": float(np.mean([s["mean"] for s in per_seed])),
                "median": float(np.mean([s["median"] for s in per_seed])),
                "gt03": float(np.mean([s["gt03"] for s in per_seed])), "n": per_seed[0]["n"]}
            r = results[name][k]
            print(f"K={k:3d}  {name:28s} mean {r['mean']:.3f}  median {r['median']:.3f}  "
                  f">0.3 {r['gt03']:.1f}/{r['n']}", flush=True)
    print(json.dumps({"side": args.side, "seeds": args.seeds, "results": results}))


if __name__ == "__main__":
    main()
