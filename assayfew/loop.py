"""The one meta-training loop: outer loop, cosine-annealed outer LR, model selection on meta-validation,
checkpoints (`model/`: safetensors + config.json with the `core` config), resume, metrics.csv.

What is benchmark-specific plugs in as a `Benchmark`: its training meta-iterations, its validation metrics
and the benchmark keys of the model config. `assayfew.train` is the drug benchmark's use of it. In a torchrun
job (`dist`) every rank runs the loop with the same arguments; rank 0 validates and writes RUN_DIR.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file

from assayfew.checkpoint import MODEL_FORMAT, save_model, save_tensors
from assayfew.device import resolve_device, to_device
from assayfew.distributed import SINGLE, DistContext
from assayfew.io import atomic_write, read_json, write_json, write_toml
from assayfew.meta.batch import TaskBatch
from assayfew.meta.config import CoreConfig
from assayfew.meta.learners import MetaLearner
from assayfew.meta.mixing import Mixer
from assayfew.meta.state import learner_state, load_learner_state

__all__ = ["Benchmark", "LoopOptions", "Reporter", "TrainResult", "fit", "batch_step", "cosine_lr", "resolve_device",
           "load_fitted", "HostBatches", "LOG_EVERY", "cosine", "write_metrics"]

#: meta-iterations between progress reports (the only points where the training loop waits for the device)
LOG_EVERY = 20


class Benchmark(Protocol):
    """What a benchmark gives the training loop.

    metrics: names of the validation metrics `validate` returns; the first one selects the epoch (higher
    is better). model_info: keys written beside "core" into model/config.json (what is needed to use the
    model on this benchmark's data: featurisation, label scaling, data provenance). train_items: the epoch's
    meta-iterations (whatever `train_step` takes, e.g. a host `TaskBatch`; seeded by the benchmark from its
    own seed and the epoch). train_step: accumulate one item's meta-gradient into the learner's `.grad`
    (summed over the ranks of `dist`) and return this rank's share of the loss, detached, on the device
    (`batch_step` does this for a host `TaskBatch`). validate: the metrics of the learner (the model config
    is what a loaded model would see); called on rank 0 only."""

    metrics: tuple[str, ...]

    def model_info(self) -> dict[str, Any]: ...

    def train_items(self, epoch: int) -> Iterable[Any]: ...

    def train_step(self, learner: MetaLearner, mixer: Mixer, item: Any, *, generator: torch.Generator, epoch: int,
                   device: torch.device, dist: DistContext) -> torch.Tensor: ...

    def validate(self, learner: MetaLearner, model_config: dict[str, Any]) -> dict[str, float]: ...


class LoopOptions(Protocol):
    """The loop's own options (a benchmark's run config has them as attributes)."""

    epochs: int
    iters: int
    outer_lr: float
    min_outer_lr: float
    grad_clip: float
    seed: int
    device: str
    keep_epoch: int | None  # keep this epoch's weights and stop after it (None: the best validation epoch)


def check_keep_epoch(keep_epoch: int | None, epochs: int) -> None:
    """ValueError unless `keep_epoch` is None or one of the run's epochs (0-based)."""
    if keep_epoch is not None and (isinstance(keep_epoch, bool) or not isinstance(keep_epoch, int)
                                   or not 0 <= keep_epoch < epochs):
        raise ValueError(f"keep_epoch must be an epoch of the run, 0 to {epochs - 1} (epochs = {epochs}), "
                         f"not {keep_epoch!r}")


def cosine(lr: float, min_lr: float, step: int, total: int) -> float:
    """The rate at `step` of `total` annealed from `lr` to `min_lr` along a half cosine."""
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / max(total, 1)))


def cosine_lr(cfg: LoopOptions, step: int, total: int) -> float:
    return cosine(cfg.outer_lr, cfg.min_outer_lr, step, total)


# -- optimizer state as safetensors + JSON (no pickles) ---------------------------------------------------------
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": v.detach().cpu().contiguous() for pid, st in sd["state"].items()
               for k, v in st.items() if torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val: float
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


class Reporter:
    """Progress hooks; the CLI renders them, the library stays quiet. `iteration` comes every LOG_EVERY
    meta-iterations (and at the end of an epoch) with the mean loss of the `n` iterations since the last
    call: losses stay on the device in between (no per-step host sync)."""

    def start(self, total_iters: int, done_iters: int) -> None: ...
    def iteration(self, epoch: int, loss: float, n: int = 1) -> None: ...
    def epoch(self, row: dict) -> None: ...


def fit(core: CoreConfig, bench: Benchmark, opts: LoopOptions, run_dir: Path, *, run_config: dict[str, Any],
        resume: bool = False, reporter: Reporter | None = None, dist: DistContext = SINGLE,
        init: Callable[[MetaLearner], None] | None = None) -> TrainResult:
    """Meta-train the learner + mixer `core` describes on `bench`; keep the epoch with the best first
    validation metric in RUN_DIR/model, or with `opts.keep_epoch` that epoch (training stops after it; the
    rate still anneals over `opts.epochs`, so the schedule is the full run's); write RUN_DIR/config.toml
    (`run_config`), metrics.csv and state/ (for `resume`, which needs the same `run_config`). `init`: sets the
    freshly built learner's starting meta-parameters in place (e.g. a pre-trained body), before any step or
    resumed state."""
    check_keep_epoch(opts.keep_epoch, opts.epochs)
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    model_dir, state_dir = run_dir / "model", run_dir / "state"
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    learner, mixer = core.build()
    if init is not None:
        init(learner)
    learner = learner.to(device)
    mconf = {"format": MODEL_FORMAT, "core": core.to_dict()} | bench.model_info()
    opt = torch.optim.Adam(learner.parameters(), lr=opts.outer_lr, fused=True)
    fields_ = ["epoch", "train_loss", *bench.metrics, "lr", "seconds"]

    start_epoch, best_val, best_epoch, history = 0, -math.inf, -1, []
    if resume and (state_dir / "state.json").exists():
        st = read_json(state_dir / "state.json")
        if st["config"] != run_config:
            raise ValueError(f"cannot resume {run_dir}: its config differs from the one given")
        load_learner_state(learner, load_file(str(state_dir / "learner.safetensors"), device=str(device)))
        _load_optimizer(opt, load_file(str(state_dir / "optimizer.safetensors"), device=str(device)), st["optimizer"])
        start_epoch, best_val, best_epoch, history = st["epoch"] + 1, st["best_val"], st["best_epoch"], st["history"]
    if dist.active and dist.broadcast_int(start_epoch) != start_epoch:
        raise ValueError(f"rank {dist.rank} does not see the state rank 0 resumes from in {run_dir}: the run "
                         "directory must be on a file system every node shares")
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        write_toml(run_dir / "config.toml", run_config)

    total = opts.epochs * opts.iters
    last = opts.epochs if opts.keep_epoch is None else opts.keep_epoch + 1
    reporter.start(last * opts.iters, start_epoch * opts.iters)
    t0 = time.perf_counter()
    lr = opts.outer_lr
    for epoch in range(start_epoch, last):
        t_epoch = time.perf_counter()
        gen = torch.Generator(device="cpu").manual_seed(opts.seed * 100_003 + epoch)
        learner.train()
        losses: list[float] = []
        pending: list[torch.Tensor] = []  # this rank's loss shares since the last report, on the device
        for it, item in enumerate(bench.train_items(epoch)):
            lr = cosine_lr(opts, epoch * opts.iters + it, total)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            pending.append(bench.train_step(learner, mixer, item, generator=gen, epoch=epoch, device=device,
                                            dist=dist))
            if opts.grad_clip:
                torch.nn.utils.clip_grad_norm_(learner.parameters(), opts.grad_clip, foreach=True)
            opt.step()
            if len(pending) == LOG_EVERY or it == opts.iters - 1:
                chunk = dist.sum(torch.stack(pending)).double().cpu().tolist()
                losses.extend(chunk)
                pending.clear()
                reporter.iteration(epoch, float(np.mean(chunk)), len(chunk))
        learner.epoch_end(epoch, opts.epochs)

        val = (bench.validate(learner, mconf) if dist.is_main
               else {name: float("nan") for name in bench.metrics})
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))} | val | {
            "lr": lr, "seconds": time.perf_counter() - t_epoch}
        history.append(row)
        if dist.is_main:
            score = val[bench.metrics[0]]
            if (epoch == opts.keep_epoch if opts.keep_epoch is not None
                    else score > best_val or best_epoch < 0):
                best_val, best_epoch = score, epoch
                chosen = {"epoch": epoch, "kept": "best validation" if opts.keep_epoch is None else "keep_epoch"}
                if math.isfinite(score):
                    chosen[bench.metrics[0]] = score
                mconf["training"] = mconf.get("training", {}) | chosen
                save_model(model_dir, learner, mconf)
            write_metrics(run_dir / "metrics.csv", history, fields_)
            tensors, opt_meta = _optimizer_tensors(opt)
            save_tensors(state_dir / "learner.safetensors", learner_state(learner))
            save_tensors(state_dir / "optimizer.safetensors", tensors)
            write_json(state_dir / "state.json", {"epoch": epoch, "best_val": best_val, "best_epoch": best_epoch,
                                                  "history": history, "optimizer": opt_meta, "config": run_config})
        dist.barrier()  # the epoch's state is on disk before any rank goes on (or stops)
        reporter.epoch(row)
    return TrainResult(run_dir=run_dir, best_epoch=best_epoch, best_val=best_val, history=history,
                       wall_s=time.perf_counter() - t0)


def batch_step(learner: MetaLearner, mixer: Mixer, batch: TaskBatch, *, generator: torch.Generator, epoch: int,
               device: torch.device, dist: DistContext = SINGLE) -> torch.Tensor:
    """`Benchmark.train_step` for a meta-batch built whole on the host: the mixer's plan is drawn on the host
    from the whole batch, each rank moves and runs its share of the tasks, and the gradients are summed over
    the ranks. Returns this rank's share of the loss (detached)."""
    plan = mixer.sample(batch, learner.model.n_layers, generator, learner.kind)
    start, stop = dist.share(batch.n_tasks)
    share = to_device(batch.tasks(start, stop) if dist.active else batch, device)
    plan = plan.tasks(start, stop).to(device, non_blocking=device.type == "cuda")
    loss, _ = learner.meta_loss(share, mixer, generator=generator, epoch=epoch, plan=plan)
    if dist.active:
        loss = loss * ((stop - start) / batch.n_tasks)
    loss.backward()
    dist.all_reduce_grads(learner.parameters())
    return loss.detach()


def load_fitted(model_dir: Path, model: str, info_key: str, what: str) -> tuple[MetaLearner, dict]:
    """A learner `fit` saved in MODEL_DIR (safetensors + config.json; no pickles) and its model config; ValueError
    unless its core model is `model` and its config has the benchmark's `info_key` (`what` names it)."""
    model_dir = Path(model_dir)
    missing = [n for n in ("weights.safetensors", "config.json") if not (model_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a model directory: missing {', '.join(missing)}")
    config = read_json(model_dir / "config.json")
    core = CoreConfig.of_model(config)
    if core.model.name != model or info_key not in config:
        raise ValueError(f"{model_dir}: not {what} (model {core.model.name!r})")
    learner = core.build_learner()
    load_learner_state(learner, load_file(str(model_dir / "weights.safetensors")))
    return learner.eval(), config


class HostBatches:
    """A benchmark whose meta-batches are sampled whole on the host: `train_items` yields `cfg.iters` batches of
    `cfg.meta_batch` tasks from the epoch's sampler (`sampler(epoch)`, seeded by the benchmark); `train_step` is
    `batch_step`."""

    cfg: Any

    def sampler(self, epoch: int) -> Any:
        raise NotImplementedError

    def train_items(self, epoch: int) -> Iterable[TaskBatch]:
        sampler = self.sampler(epoch)
        for _ in range(self.cfg.iters):
            yield sampler.batch(self.cfg.meta_batch)

    def train_step(self, learner: MetaLearner, mixer: Mixer, item: TaskBatch, *, generator: torch.Generator,
                   epoch: int, device: torch.device, dist: DistContext = SINGLE) -> torch.Tensor:
        return batch_step(learner, mixer, item, generator=generator, epoch=epoch, device=device, dist=dist)


def write_metrics(path: Path, history: list[dict], fieldnames: list[str]) -> None:
    """The per-epoch rows as a CSV file (rewritten atomically after every epoch)."""
    def write(p: Path) -> None:
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fieldnames)
            w.writeheader()
            w.writerows(history)

    atomic_write(path, write)
