"""Functional models for gradient-based meta-learning.

A functional model holds no state: parameters live in a dict (owned by the learner) and are passed to
`trace`. Every tensor is task-batched: inputs are (T, N, ...) and a parameter is either shared by all
tasks (its natural shape) or task-specific with a leading T dimension (adapted parameters).

Layer positions (used by the mixers): position 0 = the input, position k = the output of block k,
position `n_layers` = the model output. Mixing may happen at positions 0 .. n_layers - 1.

Batch norm: no running statistics. Statistics are always computed on the (masked, valid) support rows of
each task, and the *same support statistics* normalise query rows, mixed rows and rows scored at
prediction time. Hence a compound's prediction never depends on which other compounds are scored with it,
and padding rows never affect the statistics. Per-step (MAML++) batch-norm weights/biases: one row per
inner step, selected by the `step` index (clamped to the last row).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from assayfew.meta.sparse import SparseRows, spmm

__all__ = ["Stats", "FunctionalModel", "MLP", "masked_mse", "masked_moments", "linear"]

Stats = dict[int, tuple[Tensor, Tensor]]  # block index -> (mean, var), each broadcastable to (T, 1, H)


@runtime_checkable
class FunctionalModel(Protocol):
    """What learners and mixers need from a model."""

    n_layers: int  # number of blocks incl. the head; positions 0..n_layers
    n_bn_sets: int  # rows of per-step normalisation parameters (>= 1)
    head_names: tuple[str, ...]  # parameters of the last block (ANIL adapts these)
    adaptable_names: tuple[str, ...]  # parameters sensible to adapt in an inner loop (MAML adapts these)

    def init_params(self, generator: torch.Generator | None = None) -> dict[str, Tensor]: ...

    def trace(self, params: dict[str, Tensor], h: Tensor, step: int, *, mask: Tensor | None = None,
              stats: Stats | None = None, start: int = 0, stop: int | None = None,
              cache: dict | None = None) -> tuple[list[Tensor], Stats]: ...

    def loss(self, pred: Tensor, y: Tensor, mask: Tensor) -> Tensor: ...


def masked_mse(pred: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Per-task mean squared error over valid rows: pred (T, N[, 1]), y/mask (T, N) -> (T,)."""
    if pred.dim() == y.dim() + 1 and pred.shape[-1] == 1:
        pred = pred.squeeze(-1)
    err = (pred - y).square() * mask
    return err.sum(1) / mask.sum(1).clamp_min(1.0)


def masked_moments(z: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over dim 1 (rows), using only rows with mask 1. z (T, N, H)."""
    if mask is None:
        mean = z.mean(1, keepdim=True)
        return mean, (z - mean).square().mean(1, keepdim=True)
    if z.dim() == 3:  # (T, N, H): weighted row sums as batched products (no (T, N, H) temporaries)
        wts = (mask / mask.sum(1, keepdim=True).clamp_min(1.0)).unsqueeze(1)  # (T, 1, N)
        mean = torch.matmul(wts, z)
        return mean, torch.matmul(wts, (z - mean).square())
    m = mask.reshape(*mask.shape[:2], *([1] * (z.dim() - 2)))
    cnt = m.sum(1, keepdim=True).clamp_min(1.0)
    mean = (z * m).sum(1, keepdim=True) / cnt
    var = ((z - mean).square() * m).sum(1, keepdim=True) / cnt
    return mean, var


def linear(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """h (T, N, in) @ w, w (in, out) shared or (T, in, out) per task; plus b (out,) or (T, out)."""
    if w.dim() == 3 and w.shape[-1] == 1:  # per-task single-output head: mul-sum beats a batched matvec
        out = (h * w.transpose(-1, -2)).sum(-1, keepdim=True)
    else:
        out = torch.matmul(h, w)
    if b is not None:
        out = out + (b.unsqueeze(-2) if b.dim() == 2 else b)
    return out


def _row(p: Tensor, idx: int) -> Tensor:
    """Select step row `idx` of a (S, H) or task-batched (T, S, H) parameter, shaped to broadcast."""
    r = p.select(-2, min(idx, p.shape[-2] - 1))
    return r.unsqueeze(-2) if r.dim() == 2 else r


class MLP:
    """Fully-connected net: hidden block = Linear [-> transform] -> batch norm -> leaky ReLU; head = Linear.

    Parameter names (weights are stored (in, out)): block{k}_weight/_bias/_bn_weight/_bn_bias[/_transform] (k = 1..len(hidden)),
    head_weight, head_bias [, head_transform]. `transforms=True` adds T-Net transformation matrices
    (identity at init) after each linear map. `per_step_blocks`: which blocks get per-step batch-norm
    parameters ("all", as MAML++, or only the "last" hidden block: then the body before it is
    step-independent and computed once per task by ANIL-type learners). `sparse_input`: use a sparse
    product for block 1 (None = automatically on CPU when <= 25% of the inputs are non-zero).
    """

    def __init__(self, in_dim: int = 1024, hidden: Sequence[int] = (500, 500), n_steps: int = 5,
                 negative_slope: float = 0.01, *, out_dim: int = 1, transforms: bool = False,
                 bn_eps: float = 1e-5, out_bias: float = 0.0, per_step_blocks: str = "all",
                 sparse_input: bool | None = None) -> None:
        if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden) or n_steps < 1:
            raise ValueError("MLP: dimensions and n_steps must be positive")
        if per_step_blocks not in ("all", "last"):
            raise ValueError("MLP: per_step_blocks must be 'all' or 'last'")
        self.in_dim = int(in_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.n_steps = int(n_steps)
        self.negative_slope = float(negative_slope)
        self.out_dim = int(out_dim)
        self.transforms = bool(transforms)
        self.bn_eps = float(bn_eps)
        self.out_bias = float(out_bias)
        self.per_step_blocks = per_step_blocks
        self.sparse_input = sparse_input
        self.n_layers = len(self.hidden) + 1
        self.n_mix_layers = self.n_layers  # mixable positions 0 .. n_layers - 1
        self.n_bn_sets = self.n_steps
        self.head_names = ("head_weight", "head_bias")
        names = []
        for k in range(1, len(self.hidden) + 1):
            names += [f"block{k}_weight", f"block{k}_bias"]
        self.adaptable_names = tuple(names) + self.head_names

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "hidden": list(self.hidden), "n_steps": self.n_steps,
                "negative_slope": self.negative_slope, "out_dim": self.out_dim,
                "transforms": self.transforms, "bn_eps": self.bn_eps, "out_bias": self.out_bias,
                "per_step_blocks": self.per_step_blocks, "sparse_input": self.sparse_input}

    def with_transforms(self) -> MLP:
        cfg = self.config()
        cfg["transforms"] = True
        return MLP(**cfg)

    def init_params(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Linear weights (in, out), uniform(±1/sqrt(fan_in)) as torch.nn.Linear; BN weight 1 / bias 0;
        transforms = I. Created on the generator's device (the CPU without one): move the learner after."""
        params: dict[str, Tensor] = {}
        dims = (self.in_dim, *self.hidden)
        device = generator.device if generator is not None else torch.device("cpu")

        def lin(fan_in: int, fan_out: int) -> tuple[Tensor, Tensor]:
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_in, fan_out, generator=generator, device=device) * 2 - 1) * bound
            b = (torch.rand(fan_out, generator=generator, device=device) * 2 - 1) * bound
            return w, b

        for k in range(1, len(self.hidden) + 1):
            w, b = lin(dims[k - 1], dims[k])
            params[f"block{k}_weight"], params[f"block{k}_bias"] = w, b
            params[f"block{k}_bn_weight"] = torch.ones(self.bn_rows(k), dims[k], device=device)
            params[f"block{k}_bn_bias"] = torch.zeros(self.bn_rows(k), dims[k], device=device)
            if self.transforms:
                params[f"block{k}_transform"] = torch.eye(dims[k], device=device)
        w, b = lin(dims[-1], self.out_dim)
        params["head_weight"], params["head_bias"] = w, torch.full_like(b, self.out_bias)
        if self.transforms:
            params["head_transform"] = torch.eye(self.out_dim, device=device)
        return params

    def bn_rows(self, k: int) -> int:
        """Rows of per-step batch-norm parameters of block k (1 = shared by all steps)."""
        return self.n_bn_sets if self.per_step_blocks == "all" or k == len(self.hidden) else 1

    def uses_sparse_input(self, h: Tensor, nnz: Callable[[], int] | None = None) -> bool:
        """Whether block 1 runs as a sparse product on the (T, N, D) input h (`nnz`: its memoised
        non-zero count)."""
        if h.requires_grad or h.dim() != 3:
            return False
        if self.sparse_input is not None:
            return self.sparse_input
        return (h.device.type == "cpu" and h.numel() > 0
                and (int(torch.count_nonzero(h)) if nnz is None else nnz()) <= 0.25 * h.numel())

    def joint_first_linear(self, params: dict[str, Tensor], inputs: Sequence[Tensor],
                           rows: SparseRows) -> list[Tensor]:
        """Block-1 linear map (and transform) of several (T, N_i, D) inputs in one sparse product with shared
        weights; `rows` = the inputs flattened and stacked in order (`SparseRows.vstack`)."""
        w, b = params["block1_weight"], params["block1_bias"]
        sizes = [x.shape[0] * x.shape[1] for x in inputs]
        if w.dim() != 2 or rows.n_rows != sum(sizes) or rows.n_cols != w.shape[0]:
            raise ValueError("joint_first_linear: needs shared block-1 weights and the stacked rows of the inputs")
        z = spmm(rows, w) + b
        if self.transforms:
            z = torch.matmul(z, params["block1_transform"])
        return [part.view(*x.shape[:-1], -1) for part, x in zip(z.split(sizes), inputs)]

    def _first_linear(self, h: Tensor, w: Tensor, b: Tensor, rows: Callable[[], SparseRows] | None = None,
                      nnz: Callable[[], int] | None = None) -> Tensor:
        """Block-1 linear map; sparse (embedding-bag) product on CPU for sparse constant inputs
        (fingerprints). Per-task weights (T, in, out) use the block-diagonal form of the batch.
        `rows` / `nnz`: give h flattened to (T*N, D) as `SparseRows` / h's non-zero count, when the caller
        has them memoised."""
        if not self.uses_sparse_input(h, nnz) or w.dim() not in (2, 3):
            return linear(h, w, b)
        bias = b.unsqueeze(-2) if b.dim() == 2 else b
        if w.dim() == 2:
            sp = rows() if rows is not None else None
            if sp is None or sp.n_rows != h.shape[0] * h.shape[1] or sp.n_cols != h.shape[-1]:
                sp = SparseRows.from_dense(h.reshape(-1, h.shape[-1]))
            return spmm(sp, w).reshape(*h.shape[:-1], w.shape[-1]) + bias
        out = spmm(SparseRows.from_batched(h), w.reshape(-1, w.shape[-1]))
        return out.reshape(*h.shape[:-1], w.shape[-1]) + bias

    def _block(self, params: dict[str, Tensor], h: Tensor, k: int, step: int, mask: Tensor | None,
               stats: Stats, cache: dict | None) -> Tensor:
        key = f"lin{k}"
        if cache is not None and key in cache:
            z = cache[key]
        else:
            if k == 1:
                c = cache if cache is not None else {}
                z = self._first_linear(h, params["block1_weight"], params["block1_bias"], c.get("sparse_rows"),
                                       c.get("input_nnz"))
            else:
                z = linear(h, params[f"block{k}_weight"], params[f"block{k}_bias"])
            if self.transforms:
                z = linear(z, params[f"block{k}_transform"], None)
            if cache is not None:
                cache[key] = z
        if k not in stats:
            mkey = f"mom{k}"  # support statistics of a memoised linear map are step-independent too
            if cache is not None and mkey in cache:
                stats[k] = cache[mkey]
            else:
                stats[k] = masked_moments(z, mask)
                if cache is not None:
                    cache[mkey] = stats[k]
        return self.normalize(params, z, k, step, stats)

    def pre_activation(self, params: dict[str, Tensor], h: Tensor, k: int) -> Tensor:
        """Linear map (and transform) of hidden block k (>= 2) applied to the block input h."""
        z = linear(h, params[f"block{k}_weight"], params[f"block{k}_bias"])
        if self.transforms:
            z = linear(z, params[f"block{k}_transform"], None)
        return z

    def normalize(self, params: dict[str, Tensor], z: Tensor, k: int, step: int, stats: Stats) -> Tensor:
        """Batch norm (given statistics, step's affine parameters) and leaky ReLU of block k."""
        mean, var = stats[k]
        scale = torch.rsqrt(var + self.bn_eps) * _row(params[f"block{k}_bn_weight"], step)
        shift = _row(params[f"block{k}_bn_bias"], step) - mean * scale
        return F.leaky_relu(torch.addcmul(shift, z, scale), self.negative_slope)

    def trace(self, params: dict[str, Tensor], h: Tensor, step: int, *, mask: Tensor | None = None,
              stats: Stats | None = None, start: int = 0, stop: int | None = None,
              cache: dict | None = None) -> tuple[list[Tensor], Stats]:
        """Run positions start -> stop (default: output). Returns the hiddens at positions start..stop and
        the batch-norm statistics (given ones reused; missing ones computed from `h`'s masked rows).

        `cache` (optional, one dict per input tensor) memoises step-independent work across inner steps
        (block 1's linear map; whole blocks without per-step parameters); only valid while the body
        parameters are unchanged and, for a query input, the support statistics are the same (the
        learner guarantees both)."""
        stop = self.n_layers if stop is None else stop
        if not 0 <= start <= stop <= self.n_layers:
            raise ValueError(f"MLP.trace: invalid positions start={start}, stop={stop}")
        stats = dict(stats) if stats else {}
        out = [h]
        invariant = cache is not None and start == 0  # still on a step-independent prefix of blocks
        for k in range(start + 1, stop + 1):
            if k < self.n_layers:
                input_invariant = invariant
                invariant = invariant and self.bn_rows(k) == 1
                if invariant and ("h", k) in cache:  # type: ignore[operator]
                    h, stats[k] = cache[("h", k)], cache[("s", k)]  # type: ignore[index]
                else:
                    h = self._block(params, h, k, step, mask, stats, cache if input_invariant else None)
                    if invariant:
                        cache[("h", k)], cache[("s", k)] = h, stats[k]  # type: ignore[index]
            else:
                h = linear(h, params["head_weight"], params["head_bias"])
                if self.transforms:
                    h = linear(h, params["head_transform"], None)
            out.append(h)
        return out, stats

    def forward_from(self, params: dict[str, Tensor], h: Tensor, start_layer: int, step: int,
                     stats: Stats | None = None) -> Tensor:
        """Model output from the hidden `h` at position `start_layer`. Pass the support `stats` (without
        them the statistics of `h` itself are used, which makes rows depend on each other)."""
        return self.trace(params, h, step, stats=stats, start=start_layer)[0][-1]

    def loss(self, pred: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        return masked_mse(pred, y, mask)
