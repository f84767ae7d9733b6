"""Outer-loss mixers: what the meta-objective is computed on after the inner loop.

A mixer draws a `MixPlan` once per meta-iteration (`sample`) and turns an `EvalView` (the adapted network
of one inner step: hiddens of support/query at any layer position, the rest of the network run from a
position, and the task kind's loss) into a scalar outer loss (`loss`). Mixers only use the view, so they
work with any model and any task kind: labels are mixed as the kind's targets (floats, or one-hot vectors
for classification, scored with cross-entropy on the soft targets).

- ``none``: loss on the query set.
- ``metamix`` (Yao et al., 2021, Algorithm 1): per task a position l ~ U(layers); h = λ h_support[idx] +
  (1-λ) h_query, targets likewise, λ_j ~ Beta(α, β) per query row; idx pairs each query row with a support
  row (a random permutation of the valid support rows when there are at least as many as valid query rows,
  otherwise drawn with replacement among them). The network runs on from l on the mixed hidden.
  ``shuffle=True`` (classification; the official code's Channel Shuffle): after mixing, one of
  ``shuffle_groups`` channel groups of each row of class i is replaced by the same channels of a row of a
  paired class j (classes paired by a random permutation per task); the row keeps its target.
- ``mixup_ss`` / ``mixup_qq``: the same mixing within the support / within the query set.
- ``cob``: loss over the concatenation of support and query.
``fixed_lambda`` replaces the Beta draw with a constant. Each mixer takes only its own options.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from assayfew.meta.batch import TaskBatch
from assayfew.meta.kinds import TaskKind
from assayfew.meta.registry import Registry

__all__ = ["MixPlan", "EvalView", "ViewBase", "Mixer", "NoMix", "MetaMix", "MixupSS", "MixupQQ", "Cob", "MIXERS",
           "build_mixer", "numpy_rng", "partners", "gather_rows", "mix", "select_tasks", "layer_groups"]


class EvalView(Protocol):
    """The adapted network at one inner step, as mixers see it. `tasks` (optional): a subset of the tasks
    (indices); inputs given with it hold those tasks only, and outputs are for those tasks only."""

    kind: TaskKind
    ys: Tensor
    ms: Tensor
    yq: Tensor
    mq: Tensor

    def hidden(self, which: str, position: int) -> Tensor: ...  # which in {"s", "q"}; all tasks

    def run_from(self, h: Tensor, position: int, tasks: Tensor | None = None) -> Tensor: ...

    def run_mixed(self, a: str, idx: Tensor, b: str, lam: Tensor, position: int,
                  tasks: Tensor | None = None) -> Tensor: ...

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor: ...  # per task (T,)


def select_tasks(x: Tensor, tasks: Tensor | None) -> Tensor:
    """x restricted to the given tasks (dim 0); all of x when `tasks` is None."""
    return x if tasks is None else x.index_select(0, tasks)


def gather_rows(h: Tensor, idx: Tensor) -> Tensor:
    """h[t, idx[t]] for every task t: h (T, N, ...), idx (T, M) -> (T, M, ...). One flat index_select
    (its backward is an index_add, cheaper than advanced indexing's)."""
    t, n = h.shape[:2]
    flat = (idx + torch.arange(t, device=h.device).unsqueeze(1) * n).reshape(-1)
    return h.reshape(t * n, *h.shape[2:]).index_select(0, flat).reshape(*idx.shape, *h.shape[2:])


def mix(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    """lam * a + (1 - lam) * b, lam (T, N) broadcast over a's trailing dimensions."""
    lam = lam.reshape(*lam.shape, *([1] * (a.dim() - lam.dim())))
    return lam * a + (1 - lam) * b


class ViewBase:
    """The generic `run_mixed`: mix the hiddens, then `run_from` (views may override it with a faster,
    equal computation)."""

    def run_mixed(self, a: str, idx: Tensor, b: str, lam: Tensor, position: int,
                  tasks: Tensor | None = None) -> Tensor:
        h = mix(gather_rows(select_tasks(self.hidden(a, position), tasks), select_tasks(idx, tasks)),  # type: ignore[attr-defined]
                select_tasks(self.hidden(b, position), tasks), select_tasks(lam, tasks))  # type: ignore[attr-defined]
        return self.run_from(h, position, tasks)  # type: ignore[attr-defined]


@dataclass
class MixPlan:
    """Random choices of one meta-iteration: per task the layer position, λ (T, N) and partner indices (T, N);
    with channel shuffle, per task a channel group and for each row the row whose channels it takes."""

    layers: tuple[int, ...] = ()
    lam: Tensor | None = None
    idx: Tensor | None = None
    shuffle_src: Tensor | None = None
    shuffle_group: Tensor | None = None
    shuffle_groups: int = 0
    groups: list[tuple[int, Tensor | None]] = field(default_factory=list)  # (layer, its tasks; None = all)

    @property
    def layer(self) -> int | None:
        """The layer when every task drew the same one, else None."""
        return self.layers[0] if self.layers and len(set(self.layers)) == 1 else None

    def tasks(self, start: int, stop: int) -> MixPlan:
        """The plan of tasks start..stop-1 of its batch (a rank's share of a meta-batch)."""
        pick = (lambda t: None if t is None else t[start:stop])
        layers = self.layers[start:stop]
        device = self.lam.device if self.lam is not None else torch.device("cpu")
        return MixPlan(layers, pick(self.lam), pick(self.idx), pick(self.shuffle_src), pick(self.shuffle_group),
                       self.shuffle_groups, layer_groups(layers, device) if layers else [])

    def to(self, device: torch.device, *, non_blocking: bool = False) -> MixPlan:
        move = (lambda t: None if t is None else t.to(device, non_blocking=non_blocking))
        return MixPlan(self.layers, move(self.lam), move(self.idx), move(self.shuffle_src), move(self.shuffle_group),
                       self.shuffle_groups, [(layer, move(tasks)) for layer, tasks in self.groups])


def layer_groups(layers: Sequence[int], device: torch.device) -> list[tuple[int, Tensor | None]]:
    """Tasks grouped by drawn layer: [(layer, task indices)], or [(layer, None)] when all drew the same."""
    distinct = sorted(set(layers))
    if len(distinct) == 1:
        return [(distinct[0], None)]
    return [(l, torch.tensor([t for t, lt in enumerate(layers) if lt == l], device=device)) for l in distinct]

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


def _local(idx: Tensor, mask: Tensor) -> Tensor:
    """Map indices into padded rows to indices into the valid rows (one task)."""
    return (torch.cumsum(mask > 0, 0) - 1)[idx]


def _shuffle_channels(h: Tensor, src: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Channel shuffle: channel group `group[t]` (dim 2, split into `n_groups` near-equal groups) of each row
    of task t replaced by the same channels of row src[t, row]."""
    width = h.shape[2]
    if width < n_groups:
        raise ValueError(f"channel shuffle: {width} channels cannot form {n_groups} groups")
    of = (torch.arange(width, device=h.device) * n_groups) // width  # group of each channel
    cm = (of.unsqueeze(0) == group.unsqueeze(1)).to(h.dtype)  # (T, C)
    cm = cm.reshape(cm.shape[0], 1, width, *([1] * (h.dim() - 3)))
    return h + cm * (gather_rows(h, src) - h)


class Mixer:
    """Base class; subclasses set `name` and implement `loss` (and `sample` when random). Mixers with a plan
    say which set the partner rows come from (`mix_from`) and which set's rows are mixed (`mix_to`)."""

    name: ClassVar[str] = "base"
    mix_from: ClassVar[str | None] = None
    mix_to: ClassVar[str | None] = None

    def options(self) -> dict:
        """This mixer's hyperparameters (as its constructor takes them)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options().items())})"

    def sample(self, batch: TaskBatch, n_positions: int, generator: torch.Generator,
               kind: TaskKind | None = None) -> MixPlan:
        return MixPlan()

    def loss(self, view: EvalView, plan: MixPlan) -> Tensor:
        """The outer loss: the mean of `task_losses` over the tasks."""
        return self.task_losses(view, plan).mean()

    def task_losses(self, view: EvalView, plan: MixPlan) -> Tensor:
        """The outer loss of each task (T,) (regularisers such as TAML weigh them)."""
        raise NotImplementedError

    def task_plan(self, plan: MixPlan, t: int, ms: Tensor, mq: Tensor) -> MixPlan:
        """Task t's part of `plan`, with indices into its valid rows only (for the per-task reference)."""
        if plan.lam is None or plan.idx is None or self.mix_from is None:
            return plan
        m_from = ms[t] if self.mix_from == "s" else mq[t]
        m_to = ms[t] if self.mix_to == "s" else mq[t]
        own = m_to > 0
        sub = MixPlan(layers=plan.layers[t : t + 1], lam=plan.lam[t][own][None],
                      idx=_local(plan.idx[t][own], m_from)[None], shuffle_groups=plan.shuffle_groups,
                      groups=[(plan.layers[t], None)])
        if plan.shuffle_src is not None and plan.shuffle_group is not None:
            sub.shuffle_src = _local(plan.shuffle_src[t][own], m_to)[None]
            sub.shuffle_group = plan.shuffle_group[t : t + 1]
        return sub


MIXERS: Registry[Mixer] = Registry("mixer")


@MIXERS.register
class NoMix(Mixer):
    name = "none"

    def __init__(self) -> None:
        pass

    def task_losses(self, view: EvalView, plan: MixPlan) -> Tensor:
        return view.loss(view.hidden("q", -1), view.kind.targets(view.yq), view.mq)


@MIXERS.register
class Cob(Mixer):
    name = "cob"

    def __init__(self) -> None:
        pass

    def task_losses(self, view: EvalView, plan: MixPlan) -> Tensor:
        pred = torch.cat([view.hidden("s", -1), view.hidden("q", -1)], 1)
        y = torch.cat([view.kind.targets(view.ys), view.kind.targets(view.yq)], 1)
        m = torch.cat([view.ms, view.mq], 1)
        return view.loss(pred, y, m)


class _Mixing(Mixer):
    """Mixup-style mixers: rows of `mix_to` mixed with partner rows of `mix_from` at a per-task layer."""

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
        self.fixed_lambda = None if fixed_lambda is None else float(fixed_lambda)

    def options(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "layers": list(self.layers),
                "fixed_lambda": self.fixed_lambda}

    def _lambda(self, rng: np.random.Generator, m_to: np.ndarray, like: Tensor) -> Tensor:
        lam = np.full(m_to.shape, 0.5 if self.fixed_lambda is None else self.fixed_lambda)
        if self.fixed_lambda is None:
            for i in range(m_to.shape[0]):
                valid = np.flatnonzero(m_to[i] > 0)
                lam[i, valid] = rng.beta(self.alpha, self.beta, size=valid.size)
        return torch.as_tensor(lam, dtype=like.dtype, device=like.device)

    def sample(self, batch: TaskBatch, n_positions: int, generator: torch.Generator,
               kind: TaskKind | None = None) -> MixPlan:
        bad = [l for l in self.layers if l >= n_positions]
        if bad:
            raise ValueError(f"mixer: layer positions {bad} out of range 0..{n_positions - 1}")
        m_from = batch.ms if self.mix_from == "s" else batch.mq
        m_to = batch.ms if self.mix_to == "s" else batch.mq
        rng = numpy_rng(generator)
        layers = tuple(int(self.layers[i]) for i in rng.integers(len(self.layers), size=batch.n_tasks))
        m_to_np = m_to.detach().cpu().numpy()
        idx = partners(rng, m_from.detach().cpu().numpy(), m_to_np)
        lam = self._lambda(rng, m_to_np, m_to)
        return MixPlan(layers, lam, torch.as_tensor(idx, device=m_to.device),
                       groups=layer_groups(layers, m_to.device))

    def _mixed_hidden_transform(self, h: Tensor, plan: MixPlan, tasks: Tensor | None) -> Tensor:
        return h

    def _group_losses(self, view: EvalView, plan: MixPlan) -> Iterator[tuple[Tensor | None, Tensor]]:
        """Per group of tasks sharing a drawn layer: (its tasks, their losses)."""
        assert plan.lam is not None and plan.idx is not None
        a, b = self.mix_from, self.mix_to
        assert a is not None and b is not None
        ya = view.kind.targets(view.ys if a == "s" else view.yq)
        yb = view.kind.targets(view.ys if b == "s" else view.yq)
        m = view.ms if b == "s" else view.mq
        y = mix(gather_rows(ya, plan.idx), yb, plan.lam)
        for layer, tasks in plan.groups:
            if plan.shuffle_src is None:
                pred = view.run_mixed(a, plan.idx, b, plan.lam, layer, tasks)
            else:
                h = mix(gather_rows(select_tasks(view.hidden(a, layer), tasks), select_tasks(plan.idx, tasks)),
                        select_tasks(view.hidden(b, layer), tasks), select_tasks(plan.lam, tasks))
                assert plan.shuffle_group is not None
                h = _shuffle_channels(h, select_tasks(plan.shuffle_src, tasks),
                                      select_tasks(plan.shuffle_group, tasks), plan.shuffle_groups)
                pred = view.run_from(h, layer, tasks)
            yield tasks, view.loss(pred, select_tasks(y, tasks), select_tasks(m, tasks))

    def loss(self, view: EvalView, plan: MixPlan) -> Tensor:
        total = None
        for _, part in self._group_losses(view, plan):
            total = part.sum() if total is None else total + part.sum()
        assert total is not None
        return total / view.ms.shape[0]

    def task_losses(self, view: EvalView, plan: MixPlan) -> Tensor:
        out: Tensor | None = None
        for tasks, part in self._group_losses(view, plan):
            if tasks is None:
                return part
            out = part.new_zeros(view.ms.shape[0]) if out is None else out
            out = out.index_copy(0, tasks, part)
        assert out is not None
        return out


@MIXERS.register
class MetaMix(_Mixing):
    name = "metamix"
    mix_from, mix_to = "s", "q"

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.5, layers: Sequence[int] = (1, 2),
                 fixed_lambda: float | None = None, shuffle: bool = False, shuffle_groups: int = 4) -> None:
        super().__init__(alpha=alpha, beta=beta, layers=layers, fixed_lambda=fixed_lambda)
        if int(shuffle_groups) < 2:
            raise ValueError("metamix: shuffle_groups must be >= 2")
        self.shuffle, self.shuffle_groups = bool(shuffle), int(shuffle_groups)

    def options(self) -> dict:
        return super().options() | {"shuffle": self.shuffle, "shuffle_groups": self.shuffle_groups}

    def sample(self, batch: TaskBatch, n_positions: int, generator: torch.Generator,
               kind: TaskKind | None = None) -> MixPlan:
        plan = super().sample(batch, n_positions, generator, kind)
        if not self.shuffle:
            return plan
        n_classes = getattr(kind, "n_classes", None)
        if n_classes is None:
            raise ValueError("metamix: channel shuffle needs a classification task kind")
        rng = numpy_rng(generator)
        labels = batch.yq.detach().cpu().numpy().astype(np.int64)
        valid = batch.mq.detach().cpu().numpy() > 0
        src = np.zeros(labels.shape, dtype=np.int64)
        for t in range(labels.shape[0]):
            rows = np.flatnonzero(valid[t])
            src[t] = np.arange(labels.shape[1])
            classes = np.unique(labels[t, rows])
            paired = dict(zip(classes.tolist(), rng.permutation(classes).tolist()))
            for c in classes.tolist():
                own = rows[labels[t, rows] == c]
                pool = rows[labels[t, rows] == paired[c]]
                src[t, own] = pool[rng.integers(pool.size, size=own.size)]
        plan.shuffle_src = torch.as_tensor(src, device=batch.mq.device)
        plan.shuffle_group = torch.as_tensor(rng.integers(self.shuffle_groups, size=labels.shape[0]),
                                             device=batch.mq.device)
        plan.shuffle_groups = self.shuffle_groups
        return plan


@MIXERS.register
class MixupSS(_Mixing):
    name = "mixup_ss"
    mix_from, mix_to = "s", "s"


@MIXERS.register
class MixupQQ(_Mixing):
    name = "mixup_qq"
    mix_from, mix_to = "q", "q"


def build_mixer(name: str, **options) -> Mixer:
    """Mixer by name (one of MIXERS: "none", "metamix", "mixup_ss", "mixup_qq", "cob") with its own options
    (an option the mixer does not have is an error)."""
    return MIXERS.build(name, **options)
