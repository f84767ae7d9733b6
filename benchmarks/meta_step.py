"""Benchmark: one ANIL++-MetaMix meta-iteration (batched) vs a per-task autograd loop (same math).

8 tasks, ~40 support / ~30 query rows, 1024-bit random binary fingerprints (bit probability 0.05, about
Morgan density), MLP 1024-500-500-1, 5 inner steps, second order, forward + backward + Adam step.
The two alternate in blocks of --block back-to-back iterations (same machine load; training runs iterations
back to back, so single-iteration alternation would time cache refills the loop causes); medians over
--iters timed iterations each, after warm-up.
Run it on a quiet machine: with the default (briefly spinning) OpenMP policy, other busy processes on the
2 cores slow it down several times; OMP_WAIT_POLICY=PASSIVE is steadier there but ~70% slower when quiet.
Prints one JSON line at the end: {"ms_per_iter", "loop_ms_per_iter", "ratio", ...}.

    python benchmarks/meta_step.py [--threads 2] [--iters 30] [--epoch 20] [--no-per-step-bn]
        [--per-step-blocks all|last] [--dense] [--learner anil++] [--regularizer none] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from assayfew.meta import MLP, build_learner, build_mixer, build_regularizer, pad_tasks
from assayfew.meta.reference import reference_meta_loss
from assayfew.meta.synthetic import random_fingerprint_tasks


def _clock(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def _time_interleaved(steps: dict, iters: int, warmup: int, device: torch.device,
                      block: int = 5) -> dict[str, list[float]]:
    """Alternate the variants in blocks of `block` back-to-back iterations (as training runs them), so both
    see the same machine load; every iteration is timed."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    while min(len(t) for t in times.values()) < iters:
        for k, step in steps.items():
            for _ in range(min(block, iters - len(times[k]))):
                times[k].append(_clock(step, device))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--block", type=int, default=5, help="back-to-back iterations per variant before switching")
    ap.add_argument("--epoch", type=int, default=20, help=">= msl_epochs: final-step loss only; 0: all steps")
    ap.add_argument("--no-per-step-bn", action="store_true", help="ANIL++ without per-step batch norm")
    ap.add_argument("--per-step-blocks", choices=("all", "last"), default="last",
                    help="hidden blocks with per-step batch-norm parameters")
    ap.add_argument("--dense", action="store_true", help="dense first layer (no sparse product)")
    ap.add_argument("--learner", default="anil++")
    ap.add_argument("--regularizer", default="none", help="one of assayfew.meta.REGULARIZERS (default options)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(args.seed)
    sizes = [(int(torch.randint(35, 46, (1,), generator=gen)), int(torch.randint(25, 36, (1,), generator=gen)))
             for _ in range(8)]
    batch = pad_tasks(random_fingerprint_tasks(sizes, 1024, seed=args.seed, density=0.05)).to(device)
    opts = {"per_step_bn": False} if args.no_per_step_bn and args.learner == "anil++" else {}
    learner = build_learner(args.learner, MLP(1024, (500, 500), n_steps=5, per_step_blocks=args.per_step_blocks,
                                                sparse_input=False if args.dense else None), inner_steps=5, inner_lr=0.01,
                            regularizer=build_regularizer(args.regularizer), seed=args.seed, **opts).to(device)
    mixer = build_mixer("metamix", alpha=0.5, beta=0.5, layers=(1, 2))
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))
    mix_gen = torch.Generator().manual_seed(args.seed + 1)

    def batched_step() -> None:
        loss, _ = learner.meta_loss(batch, mixer, generator=mix_gen, epoch=args.epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def loop_step() -> None:
        loss = reference_meta_loss(learner, batch, mixer, generator=mix_gen, epoch=args.epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = _time_interleaved({"batched": batched_step, "loop": loop_step}, args.iters, args.warmup, device,
                              max(1, args.block))
    ms, loop_ms = statistics.median(times["batched"]), statistics.median(times["loop"])
    print(json.dumps({"ms_per_iter": round(ms, 2), "loop_ms_per_iter": round(loop_ms, 2),
                      "ratio": round(loop_ms / ms, 2), "min_ms": round(min(times["batched"]), 2),
                      "loop_min_ms": round(min(times["loop"]), 2), "learner": args.learner, "regularizer": args.regularizer, "epoch": args.epoch,
                      "per_step_bn": "none" if args.no_per_step_bn else args.per_step_blocks,
                      "sparse_first_layer": not args.dense, "threads": args.threads, "block": args.block,
                      "device": str(device), "sizes": sizes}))


if __name__ == "__main__":
    main()
