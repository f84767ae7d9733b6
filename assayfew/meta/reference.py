"""Straightforward per-task reference of `MetaLearner.meta_loss` (slow; for tests and benchmarks).

Each task is sliced to its valid rows and run alone: plain forward passes with shared (unbatched)
parameters, one `torch.autograd.grad` per task and step, no caching. Same math as the batched learners.
"""

from __future__ import annotations

import torch
from torch import Tensor

from assayfew.meta.batch import TaskBatch
from assayfew.meta.learners import MetaLearner
from assayfew.meta.mixing import Mixer, MixPlan

__all__ = ["reference_meta_loss"]


def _loss(model, pred: Tensor, y: Tensor) -> Tensor:
    """The model's own loss of one task's rows: pred (1, N, ...), y (N,) scalars or (N, C) soft targets."""
    if pred.shape[-1] == 1 and y.dim() == 1:
        return (pred.reshape(-1) - y).square().mean()
    return model.loss(pred, y[None], y.new_ones(1, y.shape[0])).mean()


def _task_outer(learner: MetaLearner, mixer: Mixer, plan: MixPlan, p: dict[str, Tensor], b: int,
                xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, lam: Tensor | None, idx: Tensor | None) -> Tensor:
    model = learner.model
    hs, stats = model.trace(p, xs[None], b)
    hq, _ = model.trace(p, xq[None], b, stats=stats)
    if mixer.name == "none":
        return _loss(model, hq[-1], yq)
    if mixer.name == "cob":
        return _loss(model, torch.cat([hs[-1], hq[-1]], 1), torch.cat([ys, yq]))
    assert lam is not None and idx is not None
    l = plan.layer
    if mixer.name == "metamix":
        a_h, a_y, b_h, b_y = hs[l][0][idx], ys[idx], hq[l][0], yq
    elif mixer.name == "mixup_ss":
        a_h, a_y, b_h, b_y = hs[l][0][idx], ys[idx], hs[l][0], ys
    elif mixer.name == "mixup_qq":
        a_h, a_y, b_h, b_y = hq[l][0][idx], yq[idx], hq[l][0], yq
    else:
        raise ValueError(f"reference: unsupported mixer {mixer.name!r}")
    lam_h = lam.reshape(-1, *([1] * (a_h.dim() - 1)))
    h = lam_h * a_h + (1 - lam_h) * b_h
    lam_y = lam.reshape(-1, *([1] * (a_y.dim() - 1)))
    y = lam_y * a_y + (1 - lam_y) * b_y
    return _loss(model, model.trace(p, h[None], b, stats=stats, start=l)[0][-1], y)


def _local(idx: Tensor, mask: Tensor) -> Tensor:
    """Map indices into padded rows to indices into the valid rows."""
    pos = torch.cumsum(mask > 0, 0) - 1
    return pos[idx]


def reference_meta_loss(learner: MetaLearner, batch: TaskBatch, mixer: Mixer, *, generator: torch.Generator,
                        epoch: int = 0, second_order: bool = True) -> Tensor:
    """Per-task loop computing the same outer loss as `learner.meta_loss` (same generator draws)."""
    model = learner.model
    plan = mixer.sample(batch, model.n_layers, generator)
    weights = learner.step_weights(epoch, learner.inner_steps)
    create = second_order and epoch >= learner.first_order_epochs
    meta = dict(learner.params.items())
    total = batch.xs.new_zeros(())
    for t in range(batch.n_tasks):
        s_ok, q_ok = batch.ms[t] > 0, batch.mq[t] > 0
        xs, ys, xq, yq = batch.xs[t][s_ok], batch.ys[t][s_ok], batch.xq[t][q_ok], batch.yq[t][q_ok]
        lam = idx = None
        if plan.idx is not None and plan.lam is not None:
            rows = s_ok if mixer.name in ("metamix", "mixup_ss") else q_ok
            own = q_ok if mixer.name in ("metamix", "mixup_qq") else s_ok
            lam, idx = plan.lam[t][own], _local(plan.idx[t][own], rows)
        fast = {n: meta[n] for n in learner.adapt_names}
        for s in range(learner.inner_steps):
            b = learner.bn_step(s)
            out, _ = model.trace({**meta, **fast}, xs[None], b)
            loss = _loss(model, out[-1], ys)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create)
            fast = {n: fast[n] - learner.lr(n, s) * g for n, g in zip(list(fast), grads)}
            if weights[s] > 0:
                total = total + weights[s] * _task_outer(learner, mixer, plan, {**meta, **fast}, b,
                                                         xs, ys, xq, yq, lam, idx)
    return total / batch.n_tasks
