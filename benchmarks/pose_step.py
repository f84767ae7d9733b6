"""Benchmark: one MAML+MetaMix meta-iteration on the pose net, batched over tasks vs a per-task autograd loop.

Meta-batch 10, 10-shot, 10 query views, 128×128 one-channel images (the default set's shape, random pixels),
the default PoseNet (stride-2 encoder 8,16,16,16 not adapted; two adapted 16-filter conv blocks), 5 inner
steps (rate 0.01), second order, MetaMix over every position, forward + backward + Adam step. The batched
path runs the un-adapted encoder once over all tasks' support and query images (`fixed_prefix`); the
per-task loop (`reference_meta_loss`) runs each task alone and the whole network at every inner step. The
batched path is timed with the adapted convolutions as a loop of per-task convolutions ("convloop") and as
one grouped convolution ("grouped"); `ms_per_iter` is the model's default batching. The variants alternate in
blocks of back-to-back iterations (as in meta_step.py); medians over --iters each.
Prints one JSON line: {"ms_per_iter", "loop_ms_per_iter", "ratio", "convloop_ms_per_iter", ...}.

    python benchmarks/pose_step.py [--threads 1] [--iters 10] [--device cpu]
"""

from __future__ import annotations

import json

import torch

from assayfew.meta import PoseNet, build_learner, build_mixer
from assayfew.meta.batch import TaskBatch
from image_step import started, time_batchings, timing_parser  # benchmarks/ is the script's directory


def main() -> None:
    ap = timing_parser(__doc__, threads=1)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--shot", type=int, default=10)
    ap.add_argument("--query", type=int, default=10)
    ap.add_argument("--meta-batch", type=int, default=10)
    args = ap.parse_args()
    device = started(args)
    t, gen = args.meta_batch, torch.Generator().manual_seed(args.seed)
    img = (1, args.size, args.size)
    batch = TaskBatch(torch.rand(t, args.shot, *img, generator=gen), 10 * torch.rand(t, args.shot, generator=gen),
                      torch.ones(t, args.shot), torch.rand(t, args.query, *img, generator=gen),
                      10 * torch.rand(t, args.query, generator=gen), torch.ones(t, args.query)).to(device)
    model = PoseNet(image_size=args.size, out_bias=5.0)
    learner = build_learner("maml", model, None, inner_steps=5, inner_lr=0.01, seed=args.seed).to(device)
    mixer = build_mixer("metamix", alpha=0.5, beta=0.5, layers=tuple(range(model.n_layers)))
    med = time_batchings(learner, mixer, batch, {"convloop": "loop", "grouped": "grouped"}, args, device)
    default = PoseNet().batching
    ms = med["convloop" if default == "loop" else default]
    print(json.dumps({"ms_per_iter": round(ms, 1), "loop_ms_per_iter": round(med["per_task"], 1),
                      "ratio": round(med["per_task"] / ms, 2), "batching": default,
                      "convloop_ms_per_iter": round(med["convloop"], 1), "grouped_ms_per_iter": round(med["grouped"], 1),
                      "threads": args.threads,
                      "iters": args.iters, "device": str(device), "image": list(img), "meta_batch": t,
                      "shot": args.shot, "query": args.query, "inner_steps": 5, "second_order": True,
                      "encoder": list(model.encoder), "fixed_prefix": model.fixed_prefix(learner.adapt_names)}))


if __name__ == "__main__":
    main()
