"""Meta-training: outer loop, cosine-annealed outer LR, model selection on meta-validation, resume."""

from __future__ import annotations

import csv
from collections import Counter
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from assayfew.bounds import check_train_options
from assayfew.checkpoint import MetaModel, build_learner_from_config, save_model
from assayfew.chem import FingerprintSpec
from assayfew.device import resolve_device
from assayfew.distributed import SINGLE, DistContext
from assayfew.evaluate import evaluate_episodes, evaluation_episodes
from assayfew.io import atomic_write, read_json, write_json, write_toml
from assayfew.meta import build_mixer
from assayfew.meta.state import learner_state, load_learner_state
from assayfew.provenance import array_digest, stamp
from assayfew.tasks import EpisodeSampler, TaskSet
from assayfew.trainstep import episode_batch, meta_step

__all__ = ["TrainConfig", "TrainResult", "Reporter", "train", "model_config", "episode_batch", "resolve_device",
           "cosine_lr", "LOG_EVERY"]


@dataclass
class TrainConfig:
    """Everything that defines a meta-training run (paper defaults)."""

    algo: str = "anil++"
    mix: str = "metamix"
    alpha: float = 0.5
    beta: float = 0.5
    layers: tuple[int, ...] = (1, 2)
    fixed_lambda: float | None = None
    epochs: int = 50
    iters: int = 500
    meta_batch: int = 8
    inner_steps: int = 5
    inner_lr: float = 0.01
    outer_lr: float = 0.001
    min_outer_lr: float = 0.0
    grad_clip: float = 10.0
    hidden: tuple[int, ...] = (500, 500)
    per_step_blocks: str = "last"
    label_scaling: str = "center"
    min_std: float = 0.5
    support_min: int = 16
    support_max: int = 64
    query_min: int = 16
    query_max: int = 64
    source_balance: float = 0.0  # assay sampling weight ∝ (assays in its corpus)^-source_balance; 1 = corpora equal
    val_support_k: int | None = None
    val_max_assays: int = 200
    msl_epochs: int = 10
    first_order_epochs: int = 0
    seed: int = 0
    device: str = "auto"
    standardize: bool = True  # data preparation: largest fragment + neutralise before featurizing

    def __post_init__(self) -> None:
        check_train_options(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        values = dict(data)
        for key in ("layers", "hidden"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def model_config(cfg: TrainConfig, spec: FingerprintSpec, train_set: TaskSet, extra: dict | None = None) -> dict:
    """The `model/config.json` content: what is needed to rebuild and use the model, and where it came from."""
    algo_options: dict[str, Any] = {}
    if cfg.algo == "anil++":
        algo_options = {"msl_epochs": cfg.msl_epochs, "first_order_epochs": cfg.first_order_epochs}
    return {
        "format": "assayfew-model/1",
        "architecture": {"type": "mlp", "in_dim": spec.bits, "hidden": list(cfg.hidden), "negative_slope": 0.01,
                         "per_step_blocks": cfg.per_step_blocks},
        "fingerprint": spec.to_dict() | ({} if train_set.standardized is None
                                         else {"standardize": bool(train_set.standardized)}),
        "label_scaling": {"mode": cfg.label_scaling, "min_std": cfg.min_std},
        "algorithm": {"name": cfg.algo, "inner_steps": cfg.inner_steps, "inner_lr": cfg.inner_lr,
                      "options": algo_options},
        "mixing": {"name": cfg.mix, "alpha": cfg.alpha, "beta": cfg.beta, "layers": list(cfg.layers),
                   "fixed_lambda": cfg.fixed_lambda},
        "training": {"data_fingerprint": array_digest(train_set.fp_rows, train_set.values, train_set.offsets,
                                                      train_set.fingerprints),
                     "n_train_assays": len(train_set), "seed": cfg.seed} | (extra or {}),
    } | stamp()


def cosine_lr(cfg: TrainConfig, step: int, total: int) -> float:
    return cfg.min_outer_lr + 0.5 * (cfg.outer_lr - cfg.min_outer_lr) * (1 + math.cos(math.pi * step / max(total, 1)))


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


#: meta-iterations between progress reports (the only points where the training loop waits for the device)
LOG_EVERY = 20


METRICS_FIELDS = ["epoch", "train_loss", "val_mean_r2", "val_median_r2", "val_gt03", "lr", "seconds"]


def train(cfg: TrainConfig, train_set: TaskSet, val_set: TaskSet, run_dir: Path, *, resume: bool = False,
          reporter: Reporter | None = None, split_info: dict | None = None,
          dist: DistContext = SINGLE) -> TrainResult:
    """Meta-train on `train_set`, select the epoch with the best meta-validation mean R², write RUN_DIR.

    `dist`: this process's rank in a torchrun job (`assayfew.distributed.init_from_env`); every rank calls
    train() with the same arguments, rank 0 validates and writes RUN_DIR (resume reads it on every rank)."""
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    model_dir, state_dir = run_dir / "model", run_dir / "state"
    device = resolve_device(cfg.device)
    dist.share(cfg.meta_batch)  # every rank needs a task: fail before any work
    torch.manual_seed(cfg.seed)
    spec = train_set.spec
    mconf = model_config(cfg, spec, train_set, {"split": split_info or {}})
    learner = build_learner_from_config(mconf).to(device)
    mixer = build_mixer(cfg.mix, alpha=cfg.alpha, beta=cfg.beta, layers=cfg.layers, fixed_lambda=cfg.fixed_lambda)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.outer_lr, fused=True)

    start_epoch, best_val, best_epoch, history = 0, -math.inf, -1, []
    if resume and (state_dir / "state.json").exists():
        st = read_json(state_dir / "state.json")
        if st["config"] != cfg.to_dict():
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
        write_toml(run_dir / "config.toml", cfg.to_dict())
        write_json(run_dir / "val_assays.json", {"val": val_set.assay_ids, "n_train": len(train_set)})

    val_eps = evaluation_episodes(val_set.subset(val_set.assay_ids[: cfg.val_max_assays]),
                                  support_k=cfg.val_support_k, seed=cfg.seed)
    counts = Counter(train_set.sources)
    weights = [counts[s] ** -cfg.source_balance for s in train_set.sources] if cfg.source_balance else None
    total = cfg.epochs * cfg.iters
    reporter.start(total, start_epoch * cfg.iters)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        sampler = EpisodeSampler(train_set, support_range=(cfg.support_min, cfg.support_max),
                                 query_range=(cfg.query_min, cfg.query_max), max_support=cfg.support_max,
                                 max_query=cfg.query_max, weights=weights, seed=cfg.seed * 1_000_003 + epoch)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 100_003 + epoch)
        learner.train()
        losses: list[float] = []
        pending: list[torch.Tensor] = []  # this rank's loss shares since the last report, on the device
        for it in range(cfg.iters):
            lr = cosine_lr(cfg, epoch * cfg.iters + it, total)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            pending.append(meta_step(learner, mixer, train_set, sampler.sample_rows(cfg.meta_batch),
                                     label_scaling=cfg.label_scaling, min_std=cfg.min_std, generator=gen,
                                     epoch=epoch, device=device, dist=dist))
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.grad_clip, foreach=True)
            opt.step()
            if len(pending) == LOG_EVERY or it == cfg.iters - 1:
                chunk = dist.sum(torch.stack(pending)).double().cpu().tolist()
                losses.extend(chunk)
                pending.clear()
                reporter.iteration(epoch, float(np.mean(chunk)), len(chunk))
        learner.epoch_end(epoch, cfg.epochs)

        current = MetaModel(learners=[learner], config=mconf)
        val = (evaluate_episodes(val_eps, current.adapt_predict, n_boot=0).summary
               if val_eps and dist.is_main else {})
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_mean_r2": val.get("mean", float("nan")),
               "val_median_r2": val.get("median", float("nan")), "val_gt03": val.get("gt03", 0), "lr": lr,
               "seconds": time.perf_counter() - t_epoch}
        history.append(row)
        if dist.is_main:
            if row["val_mean_r2"] > best_val or best_epoch < 0:
                best_val, best_epoch = row["val_mean_r2"], epoch
                mconf["training"] |= {"epoch": epoch, "val_mean_r2": best_val}
                save_model(model_dir, learner, mconf)
            _write_state(run_dir, learner, opt, cfg, epoch, best_val, best_epoch, history)
        dist.barrier()  # the epoch's state is on disk before any rank goes on (or stops)
        reporter.epoch(row)
    return TrainResult(run_dir=run_dir, best_epoch=best_epoch, best_val=best_val, history=history,
                       wall_s=time.perf_counter() - t0)


def _write_state(run_dir: Path, learner: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig,
                 epoch: int, best_val: float, best_epoch: int, history: list[dict]) -> None:
    """metrics.csv and the resumable state (learner, optimizer, progress) after `epoch`."""
    state_dir = run_dir / "state"
    _write_metrics(run_dir / "metrics.csv", history)
    tensors, opt_meta = _optimizer_tensors(opt)
    state_tensors = {k: v.detach().cpu().contiguous() for k, v in learner_state(learner).items()}
    atomic_write(state_dir / "learner.safetensors", lambda p: save_file(state_tensors, str(p)))
    atomic_write(state_dir / "optimizer.safetensors", lambda p: save_file(tensors, str(p)))
    write_json(state_dir / "state.json", {"epoch": epoch, "best_val": best_val, "best_epoch": best_epoch,
                                          "history": history, "optimizer": opt_meta, "config": cfg.to_dict()})


def _write_metrics(path: Path, history: list[dict]) -> None:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=METRICS_FIELDS)
            w.writeheader()
            w.writerows(history)

    atomic_write(path, write)
