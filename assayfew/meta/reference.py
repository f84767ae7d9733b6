"""Straightforward per-task reference of `MetaLearner.meta_loss` (slow; for tests and benchmarks).

Each task is sliced to its valid rows and run alone: plain forward passes with shared (unbatched)
parameters, one `torch.autograd.grad` per task and step (or a plain per-task ridge solve for the closed-form
head), no memo, no fast path. The loss is the task kind's; the outer loss is the mixer's own `loss` on a
one-task view with the task's part of the plan. A regulariser's draws (stochastic meta-weights, inner-loop
noise) are made as `meta_loss` makes them, and each task takes its rows of the noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from assayfew.meta.batch import TaskBatch
from assayfew.meta.kinds import TaskKind
from assayfew.meta.learners import MetaLearner
from assayfew.meta.mixing import Mixer, ViewBase
from assayfew.meta.model import FunctionalModel, Stats

__all__ = ["reference_meta_loss"]


class _TaskView(ViewBase):
    """One task's adapted network (valid rows only), traced without any memo."""

    def __init__(self, model: FunctionalModel, kind: TaskKind, params: dict[str, Tensor], b: int,
                 xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> None:
        self.model, self.kind, self.params, self.b = model, kind, params, b
        self.ys, self.yq = ys[None], yq[None]
        self.ms = torch.ones(1, xs.shape[0], dtype=xs.dtype, device=xs.device)
        self.mq = torch.ones(1, xq.shape[0], dtype=xq.dtype, device=xq.device)
        self._hs, self.stats = model.trace(params, xs[None], b)
        self._hq, _ = model.trace(params, xq[None], b, stats=self.stats)

    def hidden(self, which: str, position: int) -> Tensor:
        return (self._hs if which == "s" else self._hq)[position]

    def run_from(self, h: Tensor, position: int, tasks: Tensor | None = None) -> Tensor:
        stats: Stats = self.stats
        return self.model.trace(self.params, h, self.b, stats=stats, start=position % (self.model.n_layers + 1))[0][-1]

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return self.kind.loss(pred, target, mask)


def _ridge(f: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Primal ridge with an unpenalised intercept on one task's rows: f (N, H), y (N, C)."""
    fm, ym = f.mean(0, keepdim=True), y.mean(0, keepdim=True)
    fc = f - fm
    w = torch.linalg.solve(fc.T @ fc + alpha * torch.eye(f.shape[1], dtype=f.dtype, device=f.device), fc.T @ (y - ym))
    return w, (ym - fm @ w).reshape(-1)


def reference_meta_loss(learner: MetaLearner, batch: TaskBatch, mixer: Mixer, *, generator: torch.Generator,
                        epoch: int = 0, second_order: bool = True) -> Tensor:
    """Per-task loop computing the same outer loss as `learner.meta_loss` (same generator draws)."""
    model, kind = learner.model, learner.kind
    plan = mixer.sample(batch, model.n_layers, generator, kind)
    weights = learner.step_weights(epoch, learner.inner_steps)
    create = second_order and epoch >= learner.first_order_epochs
    meta = dict(learner.params.items())
    reg, extras = learner.regularizer, None
    if reg is not None:
        meta = reg.sample(meta, generator)
        extras = reg.inner_extras(batch.xs, learner.inner_steps, generator)
    losses = []
    for t in range(batch.n_tasks):
        s_ok, q_ok = batch.ms[t] > 0, batch.mq[t] > 0
        xs, ys, xq, yq = batch.xs[t][s_ok], batch.ys[t][s_ok], batch.xq[t][q_ok], batch.yq[t][q_ok]
        task_plan = mixer.task_plan(plan, t, batch.ms, batch.mq)
        target = kind.targets(ys[None])
        ones = torch.ones(1, xs.shape[0], dtype=xs.dtype, device=xs.device)
        fast = {n: meta[n] for n in learner.adapt_names}
        task_loss = batch.xs.new_zeros(())
        for s in range(learner.inner_steps):
            b = learner.bn_step(s)
            if learner.closed_form:
                with torch.set_grad_enabled(torch.is_grad_enabled() and create):
                    f = model.trace(meta, xs[None], b, stop=model.n_layers - 1)[0][-1][0]
                    y2 = target[0] if target.dim() == 3 else target[0].unsqueeze(-1)
                    w, bias = _ridge(f, y2, learner.ridge_alpha)  # type: ignore[attr-defined]
                fast = {"head_weight": w, "head_bias": bias}
            else:
                noise = {} if extras is None else {k: v[t][s_ok][None] for k, v in extras[s].items()}
                out, _ = model.trace({**meta, **fast, **noise}, xs[None], b)
                loss = kind.loss(out[-1], target, ones)[0]
                grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create)
                fast = {n: fast[n] - learner.lr(n, s) * g for n, g in zip(list(fast), grads)}
            if weights[s] > 0:
                view = _TaskView(model, kind, {**meta, **fast}, b, xs, ys, xq, yq)
                task_loss = task_loss + weights[s] * mixer.loss(view, task_plan)
        losses.append(task_loss)
    per_task = torch.stack(losses)
    if reg is None:
        return per_task.mean()
    return reg.outer(per_task if reg.per_task else per_task.mean(), dict(learner.params.items()))
