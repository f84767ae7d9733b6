"""Multitask pre-training of the meta-model's body: one shared trunk, one linear head per training assay.

The trunk is the meta-model's own body (the MLP of `TrainConfig.core`: same widths, batch norm and activation);
each training assay gets a head (a row of an (n_assays, H) weight and a bias). A minibatch is a meta-batch of
episodes as meta-training draws them (`DrugBenchmark.train_items`: assays sampled with `source_balance`, support
and query compounds); batch norm uses each assay's support rows, as adaptation does; labels are scaled per
episode on its support (`label_scaling`); the loss is the squared error on support and query rows, averaged per
assay, then over the batch. Adam with a cosine rate, gradient clipping.

Selection: after every epoch the body, with the mean of the per-assay heads as its head, is scored as a few-shot
model on the validation assays (K = `val_support_k` support compounds, as meta-training validates) with a
closed-form ridge head on its penultimate features (`select = "ridge"`: what the body offers a head fitted on K
compounds, whatever the inner rate) or with `inner_steps` gradient steps at `inner_lr` ("gd"); the best epoch is
kept and training stops after `patience` epochs without a better one. A held-out slice of training compounds
would measure the multitask fit, not transfer to unseen targets, which is what the body is for.

Run directory: `config.toml`, `metrics.csv`, `split.json` (CLI), `model/` (an ANIL++ model: the body, the mean
head, fixed inner rate `inner_lr`; usable by predict/evaluate, and by `TrainConfig.init_body`) and
`heads.safetensors` (the per-assay heads; assay ids in `model/config.json` under `pretraining`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assayfew.bounds import check_range
from assayfew.checkpoint import save_model, save_tensors
from assayfew.device import resolve_device, to_device
from assayfew.io import write_toml
from assayfew.loop import Reporter, cosine, write_metrics
from assayfew.meta.kinds import masked_mse
from assayfew.meta.learners import MetaLearner
from assayfew.meta.memo import Memo
from assayfew.meta.model import linear
from assayfew.tasks import TaskSet
from assayfew.train import DrugBenchmark, EpisodeOptions, TrainConfig, model_config
from assayfew.trainstep import episode_batch

__all__ = ["PretrainConfig", "PretrainResult", "pretrain", "multitask_loss", "HEADS_FILE", "SELECT"]

HEADS_FILE = "heads.safetensors"
#: How the body is scored on the validation assays for selection (see the module docstring).
SELECT = ("ridge", "gd")
_METRICS = ("val_ridge_r2", "val_gd_r2")


@dataclass
class PretrainConfig(EpisodeOptions):
    """Everything that defines a pre-training run."""

    hidden: tuple[int, ...] = (500, 500)
    epochs: int = 20
    iters: int = 500
    assays_per_batch: int = 16
    lr: float = 0.001
    min_lr: float = 0.0
    grad_clip: float = 10.0
    patience: int = 3  # stop after this many epochs without a better validation score
    select: str = "ridge"
    source_balance: float = 1.0  # as meta-training: 1 = corpora sampled equally (KIBA is 229 of 284 assays)
    val_support_k: int = 32
    val_max_assays: int = 200
    inner_steps: int = 5  # the written model's gradient-step head (and its per-step batch-norm rows)
    inner_lr: float = 0.01
    seed: int = 0
    device: str = "auto"
    standardize: bool = True

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        check_range("patience", self.patience, 1, 1_000_000, integer=True)
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {', '.join(SELECT)}, not {self.select!r}")
        self.train_config()  # every shared option checked by the one training schema

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown pre-training option(s): {', '.join(unknown)}")
        return cls(**data)

    def train_config(self) -> TrainConfig:
        """The same options as a `TrainConfig` (ANIL++, no mixing): its episodes, validation and model."""
        shared = {f.name for f in fields(TrainConfig)} & set(asdict(self))
        return TrainConfig(algo="anil++", mix="none", meta_batch=self.assays_per_batch, outer_lr=self.lr,
                           min_outer_lr=self.min_lr, **{k: getattr(self, k) for k in shared})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class PretrainResult:
    run_dir: Path
    best_epoch: int
    best_val: float
    history: list[dict]
    wall_s: float


def multitask_loss(learner: MetaLearner, heads_w: torch.Tensor, heads_b: torch.Tensor, assays: torch.Tensor,
                   batch: Any) -> torch.Tensor:
    """Mean over the batch's tasks of the squared error of the assays' own heads (rows `assays` of heads_w
    (n_assays, H) and heads_b (n_assays,)) on the body's features of support and query rows; batch norm on each
    task's support rows (step 0's parameters)."""
    model, params = learner.model, dict(learner.params.items())
    last = model.n_layers - 1
    memo_s = Memo(sparse_rows=lambda: batch.sparse_rows("s"), input_nnz=lambda: batch.input_nnz("s"))
    memo_q = Memo(sparse_rows=lambda: batch.sparse_rows("q"), input_nnz=lambda: batch.input_nnz("q"))
    hs, stats = model.trace(params, batch.xs, 0, mask=batch.ms, stop=last, memo=memo_s)
    hq = model.trace(params, batch.xq, 0, stats=stats, stop=last, memo=memo_q)[0][-1]
    w, b = heads_w.index_select(0, assays).unsqueeze(-1), heads_b.index_select(0, assays).unsqueeze(-1)
    n_s, n_q = batch.ms.sum(1), batch.mq.sum(1)
    sq = (masked_mse(linear(hs[-1], w, b), batch.ys, batch.ms) * n_s
          + masked_mse(linear(hq, w, b), batch.yq, batch.mq) * n_q)
    return (sq / (n_s + n_q).clamp_min(1.0)).mean()


def _bn_rows_tied(learner: MetaLearner) -> None:
    """Copy the trained (step-0) row of every per-step batch-norm parameter into its other rows."""
    with torch.no_grad():
        for name, p in learner.params.items():
            if name.endswith(("_bn_weight", "_bn_bias")) and p.shape[0] > 1:
                p.copy_(p[:1].expand_as(p))


def pretrain(cfg: PretrainConfig, train_set: TaskSet, val_set: TaskSet, run_dir: Path, *,
             reporter: Reporter | None = None, split_info: dict | None = None) -> PretrainResult:
    """Pre-train the body on `train_set`'s assays (multitask regression), select it on `val_set`; write RUN_DIR."""
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    tcfg = cfg.train_config()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    bench = DrugBenchmark(tcfg, train_set, val_set, split_info)
    learner = tcfg.core(train_set.spec.bits).build_learner().to(device)
    head_names = set(learner.model.head_names)
    body = [p for n, p in learner.params.items() if n not in head_names]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    width = learner.params["head_weight"].shape[0]
    bound = 1.0 / math.sqrt(width)  # as the model's own head (torch.nn.Linear's default)
    heads_w = ((torch.rand(len(train_set), width, generator=gen) * 2 - 1) * bound).to(device).requires_grad_(True)
    heads_b = torch.zeros(len(train_set), device=device, requires_grad=True)
    opt = torch.optim.Adam([*body, heads_w, heads_b], lr=cfg.lr)
    mconf = model_config(tcfg, train_set.spec, train_set, {"split": split_info or {}})
    mconf["pretraining"] = {"assay_ids": list(train_set.assay_ids), "heads": HEADS_FILE}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_toml(run_dir / "config.toml", cfg.to_dict())

    total = cfg.epochs * cfg.iters
    reporter.start(total, 0)
    t0 = time.perf_counter()
    history: list[dict] = []
    best_val, best_epoch, since_best, lr = -math.inf, -1, 0, cfg.lr
    for epoch in range(cfg.epochs):
        t_epoch = time.perf_counter()
        learner.train()
        losses: list[float] = []
        for it, episodes in enumerate(bench.train_items(epoch)):
            lr = cosine(cfg.lr, cfg.min_lr, epoch * cfg.iters + it, total)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = to_device(episode_batch(train_set, episodes, cfg.label_scaling, cfg.min_std), device)
            assays = torch.tensor([ep[0] for ep in episodes], device=device)
            opt.zero_grad(set_to_none=True)
            loss = multitask_loss(learner, heads_w, heads_b, assays, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*body, heads_w, heads_b], cfg.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            if (it + 1) % 50 == 0 or it == cfg.iters - 1:
                reporter.iteration(epoch, float(np.mean(losses[-50:])), (it % 50) + 1)
        with torch.no_grad():
            learner.params["head_weight"].copy_(heads_w.mean(0).unsqueeze(-1))
            learner.params["head_bias"].fill_(float(heads_b.mean()))
        _bn_rows_tied(learner)
        learner.eval()
        val = {"val_gd_r2": bench.validate(learner, mconf)["val_mean_r2"],
               "val_ridge_r2": bench.validate(learner, mconf | {"prediction": {"head": "ridge"}})["val_mean_r2"]}
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))} | val | {
            "lr": lr, "seconds": time.perf_counter() - t_epoch}
        history.append(row)
        score = val[f"val_{cfg.select}_r2"]
        if score > best_val or best_epoch < 0:
            best_val, best_epoch, since_best = score, epoch, 0
            mconf["training"] = mconf["training"] | {"epoch": epoch, f"val_{cfg.select}_r2": score}
            save_model(run_dir / "model", learner, mconf)
            save_tensors(run_dir / HEADS_FILE, {"weight": heads_w, "bias": heads_b})
        else:
            since_best += 1
        write_metrics(run_dir / "metrics.csv", history, ["epoch", "train_loss", *_METRICS, "lr", "seconds"])
        reporter.epoch(row)
        if since_best >= cfg.patience:
            break
    return PretrainResult(run_dir=run_dir, best_epoch=best_epoch, best_val=best_val, history=history,
                          wall_s=time.perf_counter() - t0)

