"""Task kinds: what a label is, the loss a task is trained with, and how labels are mixed.

Labels in a `TaskBatch` are (T, N): float targets (regression) or class indices (classification, stored as
numbers). `targets` turns them into the form that is mixed (λ·y_a + (1−λ)·y_b) and scored: regression
(T, N) floats, classification (T, N, C) one-hot vectors. `loss(pred, target, mask)` is the per-task mean
over valid rows, (T,): squared error, or cross-entropy on (soft) targets.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from assayfew.meta.registry import Registry

__all__ = ["TaskKind", "Regression", "Classification", "KINDS", "build_kind", "masked_mse", "masked_soft_ce"]


def masked_mse(pred: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Per-task mean squared error over valid rows: pred (T, N[, 1]), y/mask (T, N) -> (T,)."""
    if pred.dim() == y.dim() + 1 and pred.shape[-1] == 1:
        pred = pred.squeeze(-1)
    err = (pred - y).square() * mask
    return err.sum(1) / mask.sum(1).clamp_min(1.0)


def masked_soft_ce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-task mean cross-entropy on soft targets: logits/target (T, N, C), mask (T, N) -> (T,)."""
    ce = -(target * F.log_softmax(logits, dim=-1)).sum(-1)
    return (ce * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class TaskKind:
    """Base of the task kinds; `name`, `loss_name` and `out_dim` describe it (fast paths check `loss_name`)."""

    name: ClassVar[str] = "base"
    loss_name: ClassVar[str] = "base"

    @property
    def out_dim(self) -> int:
        raise NotImplementedError

    def options(self) -> dict:
        return {}

    def targets(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


KINDS: Registry[TaskKind] = Registry("task kind")


@KINDS.register
class Regression(TaskKind):
    """Scalar targets, squared error."""

    name = "regression"
    loss_name = "mse"

    def __init__(self) -> None:
        pass

    @property
    def out_dim(self) -> int:
        return 1

    def targets(self, y: Tensor) -> Tensor:
        return y

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return masked_mse(pred, target, mask)


@KINDS.register
class Classification(TaskKind):
    """`n_classes`-way classification: labels are class indices, targets one-hot, loss soft-target CE."""

    name = "classification"
    loss_name = "soft_ce"

    def __init__(self, *, n_classes: int = 5) -> None:
        if int(n_classes) < 2:
            raise ValueError("classification: n_classes must be >= 2")
        self.n_classes = int(n_classes)

    @property
    def out_dim(self) -> int:
        return self.n_classes

    def options(self) -> dict:
        return {"n_classes": self.n_classes}

    def targets(self, y: Tensor) -> Tensor:
        """One-hot (T, N, C) in y's float dtype (padding rows may hold anything: they are clamped)."""
        if y.dim() == 3:  # already soft targets
            return y
        dtype = y.dtype if torch.is_floating_point(y) else torch.get_default_dtype()
        return F.one_hot(y.long().clamp(0, self.n_classes - 1), self.n_classes).to(dtype)

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        if target.dim() == 2:
            target = self.targets(target)
        return masked_soft_ce(pred, target, mask)


def build_kind(name: str = "regression", **options) -> TaskKind:
    """Task kind by name (one of KINDS)."""
    return KINDS.build(name, **options)
