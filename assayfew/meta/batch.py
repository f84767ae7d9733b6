"""Padded meta-batches: T tasks with variable support/query sizes, masks mark the real rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from assayfew.meta.sparse import SparseRows

__all__ = ["TaskBatch", "pad_tasks"]


@dataclass
class TaskBatch:
    """A padded meta-batch (all float tensors). Valid rows come first in each task; masks are 1.0/0.0.

    xs (T, Ns, D), ys (T, Ns), ms (T, Ns): support; xq (T, Nq, D), yq (T, Nq), mq (T, Nq): query.
    """

    xs: Tensor
    ys: Tensor
    ms: Tensor
    xq: Tensor
    yq: Tensor
    mq: Tensor
    _rows: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def input_nnz(self, which: str) -> int:
        """Number of non-zero support ("s") or query ("q") inputs (memoised like `sparse_rows`)."""
        x = self.xs if which == "s" else self.xq
        key = ("nnz", id(x), x._version)
        hit = self._rows.get(("nnz", which))
        if hit is None or hit[0] != key:
            hit = (key, int(torch.count_nonzero(x)), x)
            self._rows[("nnz", which)] = hit
        return hit[1]

    def sparse_rows(self, which: str) -> SparseRows:
        """Support ("s") or query ("q") inputs flattened to (T*N, D) in sparse form, or both stacked
        ("sq": support rows, then query rows), converted once per batch (memoised; recomputed if an input
        tensor was replaced or modified in place)."""
        if which == "sq":
            key = (id(self.xs), self.xs._version, id(self.xq), self.xq._version)
            hit = self._rows.get("sq")
            if hit is None or hit[0] != key:
                hit = (key, SparseRows.vstack(self.sparse_rows("s"), self.sparse_rows("q")), (self.xs, self.xq))
                self._rows["sq"] = hit
            return hit[1]
        x = self.xs if which == "s" else self.xq
        key = (id(x), x._version)
        hit = self._rows.get(which)
        if hit is None or hit[0] != key:
            hit = (key, SparseRows.from_dense(x.detach().reshape(-1, x.shape[-1])), x)
            self._rows[which] = hit
        return hit[1]

    def set_sparse_rows(self, which: str, rows: SparseRows) -> None:
        """Give the sparse form of the support ("s") or query ("q") inputs when it is already known
        (e.g. built from stored fingerprint bits); it must equal `SparseRows.from_dense` of them."""
        x = self.xs if which == "s" else self.xq
        if rows.n_rows != x.shape[0] * x.shape[1] or rows.n_cols != x.shape[-1]:
            raise ValueError(f"set_sparse_rows: shape ({rows.n_rows}, {rows.n_cols}) does not match the inputs")
        self._rows[which] = ((id(x), x._version), rows, x)
        self._rows[("nnz", which)] = (("nnz", id(x), x._version), int(rows.by_row.indices.numel()), x)

    def valid_rows(self, which: str) -> Tensor:
        """Flat indices (into T*N) of the valid support ("s") or query ("q") rows, in order (memoised;
        given by `set_valid_rows` when known on the host, so that no device sync is needed)."""
        m = self.ms if which == "s" else self.mq
        key = (id(m), m._version)
        hit = self._rows.get(("valid", which))
        if hit is None or hit[0] != key:
            hit = (key, (m.reshape(-1) > 0).nonzero().squeeze(1), m)
            self._rows[("valid", which)] = hit
        return hit[1]

    def set_valid_rows(self, which: str, index: Tensor) -> None:
        """Give `valid_rows(which)` when already known; it must equal the non-zero positions of the mask."""
        m = self.ms if which == "s" else self.mq
        self._rows[("valid", which)] = ((id(m), m._version), index, m)

    def tasks(self, start: int, stop: int) -> TaskBatch:
        """Tasks start..stop-1 (a rank's share of a meta-batch), padded as the whole batch."""
        part = TaskBatch(*(t[start:stop] for t in (self.xs, self.ys, self.ms, self.xq, self.yq, self.mq)))
        if start == 0 and stop >= self.n_tasks:
            part._rows.update(self._rows)
        return part

    @property
    def n_tasks(self) -> int:
        return int(self.xs.shape[0])

    def pin_memory(self) -> TaskBatch:
        """The batch in page-locked host memory (for non-blocking copies to a GPU); memoised valid rows kept."""
        pinned = TaskBatch(*(t.pin_memory() for t in (self.xs, self.ys, self.ms, self.xq, self.yq, self.mq)))
        for w in ("s", "q"):
            if ("valid", w) in self._rows:
                pinned.set_valid_rows(w, self._rows[("valid", w)][1].pin_memory())
        return pinned

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
           non_blocking: bool = False) -> TaskBatch:
        def mv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype, non_blocking=non_blocking)

        moved = TaskBatch(mv(self.xs), mv(self.ys), mv(self.ms), mv(self.xq), mv(self.yq), mv(self.mq))
        if moved.xs is self.xs and moved.xq is self.xq:  # same input tensors: memoised forms stay valid
            moved._rows.update(self._rows)
        else:  # valid-row indices travel with the masks (the sparse forms are rebuilt where needed)
            for w in ("s", "q"):
                if ("valid", w) in self._rows:
                    moved.set_valid_rows(w, self._rows[("valid", w)][1].to(device=device, non_blocking=non_blocking))
        return moved


def _as_tensor(a: np.ndarray | Tensor, what: str, task: int) -> Tensor:
    try:
        t = a if isinstance(a, Tensor) else torch.from_numpy(np.asarray(a))
    except (TypeError, ValueError) as e:
        raise ValueError(f"task {task}: {what} is not a numeric array ({e})") from e
    if not torch.is_floating_point(t) and t.dtype not in (torch.bool, torch.uint8, torch.int8, torch.int16,
                                                          torch.int32, torch.int64):
        raise ValueError(f"task {task}: {what} has unsupported dtype {t.dtype}")
    return t.detach().to(torch.float32)  # finiteness is checked once on the padded tensors


def _check_finite(padded: Tensor, parts: list[Tensor], what: str) -> None:
    """Fast exact test first: a sum is finite only if every term is (a finite sum that overflows falls
    through to the element-wise check); only when that fails, find the task to name."""
    if bool(torch.isfinite(padded.sum())) or bool(torch.isfinite(padded).all()):
        return
    for i, p in enumerate(parts):
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"task {i}: {what} contains non-finite values")


def _pad(parts: list[Tensor], n: int) -> tuple[Tensor, Tensor]:
    shape = (len(parts), n, *parts[0].shape[1:])
    out = parts[0].new_zeros(shape)
    mask = parts[0].new_zeros((len(parts), n))
    for i, p in enumerate(parts):
        out[i, : p.shape[0]] = p
        mask[i, : p.shape[0]] = 1.0
    return out, mask


def pad_tasks(tasks: Sequence[tuple[np.ndarray | Tensor, ...]]) -> TaskBatch:
    """Pad tasks [(xs, ys, xq, yq), ...] of variable sizes into one float32 `TaskBatch` (CPU)."""
    if len(tasks) == 0:
        raise ValueError("pad_tasks: no tasks given")
    xs_l, ys_l, xq_l, yq_l = [], [], [], []
    feat_shape: tuple[int, ...] | None = None
    for i, task in enumerate(tasks):
        if len(task) != 4:
            raise ValueError(f"task {i}: expected (xs, ys, xq, yq), got {len(task)} items")
        xs, ys, xq, yq = (_as_tensor(a, n, i) for a, n in zip(task, ("xs", "ys", "xq", "yq")))
        for x, y, n in ((xs, ys, "support"), (xq, yq, "query")):
            if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"task {i}: {n} inputs {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
            if x.shape[0] == 0:
                raise ValueError(f"task {i}: empty {n} set")
        if xs.shape[1:] != xq.shape[1:]:
            raise ValueError(f"task {i}: support/query feature shapes differ")
        if feat_shape is None:
            feat_shape = tuple(xs.shape[1:])
        elif tuple(xs.shape[1:]) != feat_shape:
            raise ValueError(f"task {i}: feature shape {tuple(xs.shape[1:])} != {feat_shape} of task 0")
        xs_l.append(xs), ys_l.append(ys), xq_l.append(xq), yq_l.append(yq)
    ns = max(x.shape[0] for x in xs_l)
    nq = max(x.shape[0] for x in xq_l)
    xs_p, ms = _pad(xs_l, ns)
    ys_p, _ = _pad(ys_l, ns)
    xq_p, mq = _pad(xq_l, nq)
    yq_p, _ = _pad(yq_l, nq)
    for padded, parts, what in ((xs_p, xs_l, "xs"), (ys_p, ys_l, "ys"), (xq_p, xq_l, "xq"), (yq_p, yq_l, "yq")):
        _check_finite(padded, parts, what)
    return TaskBatch(xs_p, ys_p, ms, xq_p, yq_p, mq)
