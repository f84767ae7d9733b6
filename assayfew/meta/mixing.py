"""Outer-loss mixers: what the meta-objective is computed on after the inner loop.

A mixer draws a `MixPlan` once per meta-iteration (`sample`) and turns an `EvalView` (the adapted
network of one inner step, able to give hiddens of support/query at any layer position and to run the
rest of the network from a position) into a scalar outer loss (`loss`). Mixers only use the view, so they
work with any `FunctionalModel`.

- ``none``: loss on the query set.
- ``metamix`` (Yao et al., 2021): position l ~ U(layers); h = λ h_support[idx] + (1-λ) h_query,
  y likewise, λ_j ~ Beta(α, β) per query row; idx pairs each query row with a support row (a random
  permutation of the valid support rows when there are at least as many as valid query rows, otherwise
  sampled with replacement among them). The network runs on from l on the mixed hidden.
- ``mixup_ss`` / ``mixup_qq``: the same mixing within the support / within the query set.
- ``cob``: loss over the concatenation of support and query.
``fixed_lambda`` replaces the Beta draw with a constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from assayfew.meta.batch import TaskBatch

__all__ = ["MixPlan", "EvalView", "Mixer", "NoMix", "MetaMix", "MixupSS", "MixupQQ", "Cob", "MIXERS",
           "build_mixer", "numpy_rng"]


class EvalView(Protocol):
    """The adapted network at one inner step, as mixers see it."""

    ys: Tensor
    ms: Tensor
    yq: Tensor
    mq: Tensor

    def hidden(self, which: str, position: int) -> Tensor: ...  # which in {"s", "q"}

    def run_from(self, h: Tensor, position: int) -> Tensor: ...

    def loss(self, pred: Tensor, y: Tensor, mask: Tensor) -> Tensor: ...  # per task (T,)


@dataclass
class MixPlan:
    """Random choices of one meta-iteration: layer position, λ (T, N) and partner indices (T, N)."""

    layer: int = 0
    lam: Tensor | None = None
    idx: Tensor | None = None

    def tasks(self, start: int, stop: int) -> MixPlan:
        """The plan of tasks start..stop-1 of its batch (a rank's share of a meta-batch)."""
        pick = (lambda t: None if t is None else t[start:stop])
        return MixPlan(self.layer, pick(self.lam), pick(self.idx))

    def to(self, device: torch.device, *, non_blocking: bool = False) -> MixPlan:
        move = (lambda t: None if t is None else t.to(device, non_blocking=non_blocking))
        return MixPlan(self.layer, move(self.lam), move(self.idx))


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from a torch generator (keeps runs reproducible from one seed)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return np.random.default_rng(seed)


def partners(rng: np.random.Generator, m_from: np.ndarray, m_to: np.ndarray) -> np.ndarray:
    """For each row of `to` (T, Nt), the index of a valid row of `from` (T, Nf): a random permutation of the
    valid `from` rows when there are at least as many as valid `to` rows, else draws with replacement.
    Draws depend only on the valid rows, so extra padding never changes them. Padding rows get a valid
    partner too (their loss is masked out)."""
    t, nt = m_to.shape
    idx = np.zeros((t, nt), dtype=np.int64)
    for i in range(t):
        valid_from = np.flatnonzero(m_from[i] > 0)
        valid_to = np.flatnonzero(m_to[i] > 0)
        if valid_from.size == 0:
            raise ValueError(f"mixing: task {i} has no valid rows to pair with")
        if valid_from.size >= valid_to.size:
            sel = rng.permutation(valid_from.size)[: valid_to.size]
        else:
            sel = rng.integers(valid_from.size, size=valid_to.size)
        idx[i] = valid_from[0]
        idx[i, valid_to] = valid_from[sel]
    return idx


def _gather_rows(h: Tensor, idx: Tensor) -> Tensor:
    """h[t, idx[t]] for every task t: h (T, N, ...), idx (T, M) -> (T, M, ...). One flat index_select
    (its backward is an index_add, cheaper than advanced indexing's)."""
    t, n = h.shape[:2]
    flat = (idx + torch.arange(t, device=h.device).unsqueeze(1) * n).reshape(-1)
    return h.reshape(t * n, *h.shape[2:]).index_select(0, flat).reshape(*idx.shape, *h.shape[2:])


def _mix(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    lam = lam.reshape(*lam.shape, *([1] * (a.dim() - lam.dim())))
    return lam * a + (1 - lam) * b


def _run_mixed(view: EvalView, a: str, idx: Tensor, b: str, lam: Tensor, position: int) -> Tensor:
    """Network output on lam * hidden(a)[idx] + (1 - lam) * hidden(b) at `position`; uses the view's
    `run_mixed` (same math, may reuse memoised work) when it has one."""
    run_mixed = getattr(view, "run_mixed", None)
    if run_mixed is not None:
        return run_mixed(a, idx, b, lam, position)
    h = _mix(_gather_rows(view.hidden(a, position), idx), view.hidden(b, position), lam)
    return view.run_from(h, position)


class Mixer:
    """Base class; subclasses set `name` and implement `loss` (and `sample` when random)."""

    name = "base"

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.5, layers: Sequence[int] = (1, 2),
                 fixed_lambda: float | None = None) -> None:
        if alpha <= 0 or beta <= 0:
            raise ValueError("mixer: alpha and beta must be positive")
        if len(layers) == 0 or any(int(l) < 0 for l in layers):
            raise ValueError("mixer: layers must be a non-empty set of positions >= 0")
        if fixed_lambda is not None and not 0.0 <= fixed_lambda <= 1.0:
            raise ValueError("mixer: fixed_lambda must lie in [0, 1]")
        self.alpha, self.beta = float(alpha), float(beta)
        self.layers = tuple(int(l) for l in layers)
        self.fixed_lambda = fixed_lambda

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(alpha={self.alpha}, beta={self.beta}, layers={self.layers}, "
                f"fixed_lambda={self.fixed_lambda})")

    def sample(self, batch: TaskBatch, n_positions: int, generator: torch.Generator) -> MixPlan:
        return MixPlan()

    def loss(self, view: EvalView, plan: MixPlan) -> Tensor:
        raise NotImplementedError

    # helpers for the mixing variants
    def _lambda(self, rng: np.random.Generator, m_to: np.ndarray, like: Tensor) -> Tensor:
        lam = np.full(m_to.shape, 0.5 if self.fixed_lambda is None else self.fixed_lambda)
        if self.fixed_lambda is None:
            for i in range(m_to.shape[0]):
                valid = np.flatnonzero(m_to[i] > 0)
                lam[i, valid] = rng.beta(self.alpha, self.beta, size=valid.size)
        return torch.as_tensor(lam, dtype=like.dtype, device=like.device)

    def _plan(self, m_from: Tensor, m_to: Tensor, n_positions: int, generator: torch.Generator) -> MixPlan:
        bad = [l for l in self.layers if l >= n_positions]
        if bad:
            raise ValueError(f"mixer: layer positions {bad} out of range 0..{n_positions - 1}")
        rng = numpy_rng(generator)
        layer = int(self.layers[int(rng.integers(len(self.layers)))])
        m_to_np = m_to.detach().cpu().numpy()
        idx = partners(rng, m_from.detach().cpu().numpy(), m_to_np)
        lam = self._lambda(rng, m_to_np, m_to)
        return MixPlan(layer, lam, torch.as_tensor(idx, device=m_to.device))


class NoMix(Mixer):
    name = "none"

    def loss(self, view: EvalView, plan: MixPlan) -> Tensor:
        return view.loss(view.hidden("q", -1), view.yq, view.mq).mean()


class MetaMix(Mixer):
    name = "metamix"

    def sample(self, batch: TaskBatch, n_positions: int, generator: torch.Generator) -> MixPlan:
        return self._plan(batch.ms, batch.mq, n_positions, generator)

    def loss(self, view: EvalView, plan: MixPlan) -> Tensor:
        assert plan.lam is not None and plan.idx is not None
        l = plan.layer
        y = _mix(_gather_rows(view.ys, plan.idx), view.yq, plan.lam)
        return view.loss(_run_mixed(view, "s", plan.idx, "q", plan.lam, l), y, view.mq).mean()


class _MixupWithin(Mixer):
    which = "s"

    def _mask(self, batch: TaskBatch) -> Tensor:
        return batch.ms if self.which == "s" else batch.mq

    def sample(self, batch: TaskBatch, n_positions: int, generator: torch.Generator) -> MixPlan:
        m = self._mask(batch)
        return self._plan(m, m, n_positions, generator)

    def loss(self, view: EvalView, plan: MixPlan) -> Tensor:
        assert plan.lam is not None and plan.idx is not None
        l, w = plan.layer, self.which
        y, m = (view.ys, view.ms) if w == "s" else (view.yq, view.mq)
        ym = _mix(_gather_rows(y, plan.idx), y, plan.lam)
        return view.loss(_run_mixed(view, w, plan.idx, w, plan.lam, l), ym, m).mean()


class MixupSS(_MixupWithin):
    name = "mixup_ss"
    which = "s"


class MixupQQ(_MixupWithin):
    name = "mixup_qq"
    which = "q"


class Cob(Mixer):
    name = "cob"

    def loss(self, view: EvalView, plan: MixPlan) -> Tensor:
        pred = torch.cat([view.hidden("s", -1), view.hidden("q", -1)], 1)
        y = torch.cat([view.ys, view.yq], 1)
        m = torch.cat([view.ms, view.mq], 1)
        return view.loss(pred, y, m).mean()


MIXERS: dict[str, type[Mixer]] = {c.name: c for c in (NoMix, MetaMix, MixupSS, MixupQQ, Cob)}


def build_mixer(name: str, *, alpha: float = 0.5, beta: float = 0.5, layers: Sequence[int] = (1, 2),
                fixed_lambda: float | None = None) -> Mixer:
    """Mixer by name: one of MIXERS ("none", "metamix", "mixup_ss", "mixup_qq", "cob")."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; choose from {sorted(MIXERS)}")
    return MIXERS[name](alpha=alpha, beta=beta, layers=layers, fixed_lambda=fixed_lambda)
