"""Benchmark: meta-training speed on a device (GPU or CPU): ms per meta-iteration and the paper-scale run.

ms per meta-iteration of the real training step (episodes sampled from the training assays, batch built on the
host and copied to the device, ANIL++-MetaMix meta-gradient, gradient clipping, Adam) at the paper's meta-batch
(8 tasks) and a large one (64), after the multi-step-loss epochs (final-step loss only); the median over
--blocks blocks of back-to-back iterations, one device sync per block (as training runs). Then the wall time of
the paper-scale run (benchmarks/paper_scale.toml: 50 epochs x 500 iterations, meta-batch 8, validation and
checkpoints every epoch) on the shared corpora. On a CPU the full run takes ~9 min, so by default only
--paper-epochs 2 epochs run there and the 50-epoch time is extrapolated from them (labelled:
"paper_scale_extrapolated": true; the first epochs carry the multi-step loss, so this overestimates a little).
On CUDA, --cpu-baseline (default on) also times batch 64 on the CPU with 2 threads in the same run
("speedup_b64" = tasks per second on the device / on 2 CPU threads).

Prints one JSON line: {"device", "ms_per_iter_b8", "ms_per_iter_b64", "paper_scale_s", ...}.

    python benchmarks/gpu_train.py [--device auto] [--paper-epochs N (0: skip)] [--no-cpu-baseline]
    torchrun --nproc-per-node 2 -m assayfew train ...     # the distributed counterpart: see README
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from assayfew.checkpoint import build_learner_from_config
from assayfew.device import resolve_device
from assayfew.distributed import SINGLE
from assayfew.experiment import split_taskset
from assayfew.io import read_toml
from assayfew.meta import build_mixer
from assayfew.paths import assays_dir
from assayfew.splits import Split
from assayfew.tasks import EpisodeSampler, TaskSet
from assayfew.train import TrainConfig, model_config, train
from assayfew.trainstep import meta_step

from _shared import shared_taskset  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_iter(cfg: TrainConfig, train_set: TaskSet, device: torch.device, meta_batch: int, *, iters: int,
                blocks: int, warmup: int) -> float:
    """Median ms per training meta-iteration over `blocks` blocks of `iters` back-to-back iterations."""
    learner = build_learner_from_config(model_config(cfg, train_set.spec, train_set)).to(device)
    mixer = build_mixer(cfg.mix, alpha=cfg.alpha, beta=cfg.beta, layers=cfg.layers, fixed_lambda=cfg.fixed_lambda)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.outer_lr, fused=True)
    sampler = EpisodeSampler(train_set, support_range=(cfg.support_min, cfg.support_max),
                             query_range=(cfg.query_min, cfg.query_max), max_support=cfg.support_max,
                             max_query=cfg.query_max, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        meta_step(learner, mixer, train_set, sampler.sample_rows(meta_batch), label_scaling=cfg.label_scaling,
                  min_std=cfg.min_std, generator=gen, epoch=cfg.msl_epochs, device=device, dist=SINGLE)
        torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.grad_clip, foreach=True)
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(blocks):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(device)
        times.append((time.perf_counter() - t0) / iters * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", type=Path, default=HERE / "paper_scale.toml")
    ap.add_argument("--cache", type=Path, default=Path("cache/shared_tasks"), help="task cache (built when missing)")
    ap.add_argument("--split", type=Path, default=assays_dir() / "shared_heldout.json")
    ap.add_argument("--iters", type=int, default=10, help="iterations per timed block")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--paper-epochs", type=int, default=None,
                    help="epochs of the paper-scale run to time (default: all 50 on CUDA, 2 on the CPU, "
                         "extrapolated to 50); 0 skips it")
    ap.add_argument("--no-cpu-baseline", action="store_true", help="on CUDA, skip the 2-thread CPU batch-64 timing")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = TrainConfig.from_dict(read_toml(args.config) | {"device": str(device)})
    data = split_taskset(shared_taskset(args.cache), Split.load(args.split), seed=cfg.seed)
    timing = {"iters": args.iters, "blocks": args.blocks, "warmup": args.warmup}
    out: dict = {"device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                                       else "cpu"), "threads": torch.get_num_threads()}
    for b in (8, 64):
        out[f"ms_per_iter_b{b}"] = round(ms_per_iter(cfg, data.train, device, b, **timing), 2)
    out["tasks_per_s_b64"] = round(64 / out["ms_per_iter_b64"] * 1e3, 1)
    if device.type == "cuda" and not args.no_cpu_baseline:
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        cpu_ms = ms_per_iter(cfg, data.train, torch.device("cpu"), 64, **timing)
        torch.set_num_threads(threads)
        out |= {"cpu2_ms_per_iter_b64": round(cpu_ms, 2), "speedup_b64": round(cpu_ms / out["ms_per_iter_b64"], 1)}
    epochs = args.paper_epochs if args.paper_epochs is not None else (cfg.epochs if device.type == "cuda" else 2)
    out |= {"paper_scale_s": None, "paper_scale_epochs_run": min(epochs, cfg.epochs),
            "paper_scale_extrapolated": 0 < epochs < cfg.epochs}
    if epochs > 0:
        with tempfile.TemporaryDirectory() as run_dir:
            t0 = time.perf_counter()
            train(TrainConfig.from_dict(cfg.to_dict() | {"epochs": min(epochs, cfg.epochs)}), data.train, data.val,
                  Path(run_dir))
            _sync(device)
            wall = time.perf_counter() - t0
        out["paper_scale_s"] = round(wall * cfg.epochs / min(epochs, cfg.epochs), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
