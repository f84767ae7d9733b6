"""Benchmark: a paper-scale meta-training run on the shared corpora (wall time; minutes, not a test).

Paper defaults (benchmarks/paper_scale.toml: ANIL++ + MetaMix, layers {1, 2}, 50 epochs x 500 iterations,
meta-batch 8, 5 inner steps) on the target-held-out split of the shared corpora (assays/shared_heldout.json;
284 training assays, 10 validation), with meta-validation and checkpoints every epoch, as `assayfew train`
runs it. Run it on a quiet machine. Prints one line per epoch and, at the end, one JSON line:
{"wall_s", "s_per_epoch_msl" (median over the multi-step-loss epochs), "s_per_epoch" (median after them),
"ms_per_iter", "best_epoch", "best_val_mean_r2", ...}.

    python benchmarks/paper_scale.py [--out runs/paper_scale] [--epochs 2]
    python benchmarks/heldout_quality.py --model runs/paper_scale/model    # its held-out quality
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from assayfew.experiment import split_taskset
from assayfew.io import read_toml
from assayfew.paths import assays_dir
from assayfew.splits import Split
from assayfew.train import Reporter, TrainConfig, train

from _shared import shared_taskset  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent


class _Print(Reporter):
    def epoch(self, row: dict) -> None:
        print(f"epoch {row['epoch']:2d}  {row['seconds']:6.1f} s  loss {row['train_loss']:.4f}  "
              f"val mean R² {row['val_mean_r2']:.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "paper_scale.toml")
    ap.add_argument("--out", type=Path, default=Path("runs/paper_scale"))
    ap.add_argument("--cache", type=Path, default=Path("cache/shared_tasks"), help="task cache (built when missing)")
    ap.add_argument("--split", type=Path, default=assays_dir() / "shared_heldout.json")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--iters", type=int)
    args = ap.parse_args()
    overrides = {k: v for k, v in (("epochs", args.epochs), ("iters", args.iters)) if v is not None}
    cfg = TrainConfig.from_dict(read_toml(args.config) | overrides)
    data = split_taskset(shared_taskset(args.cache), Split.load(args.split), seed=cfg.seed)
    print(f"train {len(data.train)} assays, val {len(data.val)}; {cfg.epochs} epochs x {cfg.iters} iterations, "
          f"{torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    result = train(cfg, data.train, data.val, args.out, reporter=_Print())
    wall = time.perf_counter() - t0
    msl = [r["seconds"] for r in result.history if r["epoch"] < cfg.msl_epochs]
    rest = [r["seconds"] for r in result.history if r["epoch"] >= cfg.msl_epochs]
    per_epoch = statistics.median(rest) if rest else None
    print(json.dumps({"wall_s": round(wall, 1), "wall_min": round(wall / 60, 2), "epochs": cfg.epochs,
                      "iters": cfg.iters, "s_per_epoch_msl": round(statistics.median(msl), 2) if msl else None,
                      "s_per_epoch": None if per_epoch is None else round(per_epoch, 2),
                      "ms_per_iter": None if per_epoch is None else round(per_epoch / cfg.iters * 1e3, 2),
                      "best_epoch": result.best_epoch, "best_val_mean_r2": round(result.best_val, 4),
                      "threads": torch.get_num_threads(),
                      "device": cfg.device, "out": str(args.out)}))


if __name__ == "__main__":
    main()
