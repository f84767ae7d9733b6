"""Benchmark: one MAML+MetaMix meta-iteration on Conv-4, batched over tasks vs a per-task autograd loop.

5-way 1-shot, 15 query images per class, meta-batch 4, 28×28 one-channel random images (Omniglot's shape),
64 filters, 5 inner steps, second order, MetaMix over positions 0-4, forward + backward + Adam step.
The batched model is timed with each task batching of its convolutions (grouped, torch.func vmap, a loop of
per-task convolutions: "convloop", the default); the variants
alternate in blocks of back-to-back iterations (as in meta_step.py); medians over --iters iterations each.
Prints one JSON line: {"ms_per_iter" (the default batching), "loop_ms_per_iter", "ratio",
"grouped_ms_per_iter", "vmap_ms_per_iter", "convloop_ms_per_iter", ...}.

    python benchmarks/image_step.py [--threads 2] [--iters 10] [--query 15] [--size 28] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from assayfew.meta import Classification, Conv4, build_learner, build_mixer
from assayfew.meta.batch import TaskBatch
from assayfew.meta.reference import reference_meta_loss
from meta_step import _time_interleaved  # benchmarks/ is the script's directory


def time_batchings(learner, mixer, batch: TaskBatch, batchings: dict[str, str], args: argparse.Namespace,
                   device: torch.device) -> dict[str, float]:
    """Median ms of one meta-iteration (meta-loss, backward, Adam step) with each of the model's task
    batchings (name -> `batching`) and of the per-task reference loop ("per_task"), alternated in blocks."""
    model = learner.model
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    mix_gen = torch.Generator().manual_seed(args.seed + 1)

    def step(loss_fn) -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def batched(batching: str):
        def run() -> None:
            model.batching = batching
            step(lambda: learner.meta_loss(batch, mixer, generator=mix_gen)[0])
        return run

    steps = {name: batched(b) for name, b in batchings.items()}
    steps["per_task"] = lambda: step(lambda: reference_meta_loss(learner, batch, mixer, generator=mix_gen))
    times = _time_interleaved(steps, args.iters, args.warmup, device, max(1, args.block))
    return {k: statistics.median(v) for k, v in times.items()}


def timing_parser(doc: str, threads: int) -> argparse.ArgumentParser:
    """The timing options every step benchmark takes (threads, iterations, warm-up, block, device, seed)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--block", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def started(args: argparse.Namespace) -> torch.device:
    """Threads and seed set; the device to time on."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return torch.device(args.device)


def main() -> None:
    ap = timing_parser(__doc__, threads=2)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--query", type=int, default=15, help="query images per class")
    ap.add_argument("--channels", type=int, default=1)
    args = ap.parse_args()
    device = started(args)
    t, way, shot, query = 4, 5, 1, args.query
    gen = torch.Generator().manual_seed(args.seed)
    img = (args.channels, args.size, args.size)
    ys = torch.arange(way).repeat_interleave(shot).repeat(t, 1).float()
    yq = torch.arange(way).repeat_interleave(query).repeat(t, 1).float()
    batch = TaskBatch(torch.rand(t, way * shot, *img, generator=gen), ys, torch.ones(ys.shape),
                      torch.rand(t, way * query, *img, generator=gen), yq, torch.ones(yq.shape)).to(device)
    model = Conv4(out_dim=way, in_channels=args.channels, image_size=args.size)
    learner = build_learner("maml", model, Classification(n_classes=way), inner_steps=5, inner_lr=0.4,
                            seed=args.seed).to(device)
    mixer = build_mixer("metamix", alpha=2.0, beta=2.0, layers=tuple(range(model.n_layers)))
    med = time_batchings(learner, mixer, batch, {"grouped": "grouped", "vmap": "vmap", "convloop": "loop"}, args,
                         device)
    default = Conv4().batching
    ms = med["convloop" if default == "loop" else default]
    print(json.dumps({"ms_per_iter": round(ms, 1), "loop_ms_per_iter": round(med["per_task"], 1),
                      "ratio": round(med["per_task"] / ms, 2), "batching": default,
                      "grouped_ms_per_iter": round(med["grouped"], 1), "vmap_ms_per_iter": round(med["vmap"], 1),
                      "convloop_ms_per_iter": round(med["convloop"], 1),
                      "vmap_over_grouped": round(med["vmap"] / med["grouped"], 2), "threads": args.threads,
                      "iters": args.iters, "device": str(device), "image": list(img), "meta_batch": t,
                      "way": way, "shot": shot, "query_per_class": query, "inner_steps": 5,
                      "second_order": True}))


if __name__ == "__main__":
    main()
