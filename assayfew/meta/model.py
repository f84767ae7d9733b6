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
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from assayfew.meta.headloop import head_inner_loop
from assayfew.meta.kinds import TaskKind, masked_mse
from assayfew.meta.memo import Memo
from assayfew.meta.registry import Registry
from assayfew.meta.sparse import SparseRows, spmm

__all__ = ["Stats", "FunctionalModel", "ModelBase", "HeadFastPath", "MODELS", "build_model", "MLP", "masked_mse",
           "masked_moments", "linear"]

Stats = dict[int, tuple[Tensor, Tensor]]  # block index -> (mean, var), each broadcastable to (T, 1, H)


@dataclass(frozen=True)
class HeadFastPath:
    """A model's offer to run a head-only inner loop faster than generic autograd (`ModelBase.head_fast_path`).

    closed_form: the head's inner gradients in closed form (no autograd.grad per step);
    fused: all inner steps as one autograd node (`assayfew.meta.headloop`), support features memoised."""

    closed_form: bool = True
    fused: bool = False


@runtime_checkable
class FunctionalModel(Protocol):
    """What learners and mixers need from a model (implementations subclass `ModelBase`)."""

    name: ClassVar[str]
    n_layers: int  # number of blocks incl. the head; positions 0..n_layers
    n_bn_sets: int  # rows of per-step normalisation parameters (>= 1)
    out_dim: int  # outputs per row (1 for regression, C for C-way classification)
    head_names: tuple[str, ...]  # parameters of the last block (ANIL adapts these)
    adaptable_names: tuple[str, ...]  # parameters sensible to adapt in an inner loop (MAML adapts these)

    def config(self) -> dict: ...

    def init_params(self, generator: torch.Generator | None = None) -> dict[str, Tensor]: ...

    def trace(self, params: dict[str, Tensor], h: Tensor, step: int, *, mask: Tensor | None = None,
              stats: Stats | None = None, start: int = 0, stop: int | None = None,
              memo: Memo | None = None) -> tuple[list[Tensor], Stats]: ...

    def head_fast_path(self, kind: TaskKind, adapt_names: Sequence[str], *, lr_mode: str,
                       per_step_bn: bool) -> HeadFastPath | None: ...

    def fixed_prefix(self, adapt_names: Sequence[str]) -> int: ...

    def prime_memos(self, params: dict[str, Tensor], xs: Tensor, ms: Tensor, xq: Tensor, mq: Tensor,
                    memo_s: Memo, memo_q: Memo, joint_rows: Callable[[], SparseRows] | None,
                    valid_rows: Callable[[str], Tensor] | None = None) -> None: ...

    def affine_after(self, position: int) -> bool: ...

    def affine(self, params: dict[str, Tensor], h: Tensor, position: int) -> Tensor: ...

    def bits_forward(self, params: dict[str, Tensor], stats: Stats, step: int) -> BitsForward | None: ...

    def from_linear(self, params: dict[str, Tensor], z: Tensor, position: int, step: int, stats: Stats,
                    stop: int | None = None) -> Tensor: ...


@dataclass(frozen=True)
class BitsForward:
    """One adapted network's inference on 0/1 inputs given as their set bits: the first map is a sum of
    `table` rows (one per set bit) plus `bias`, so several networks' tables can be concatenated and summed in
    one `F.embedding_bag` (column indices, row offsets; `MetaModel.bits_scorer`); `rest` maps that (N, width)
    sum to the output."""

    table: Tensor  # (bits, width)
    bias: Tensor  # (width,)
    rest: Callable[[Tensor], Tensor]


class ModelBase:
    """Defaults of the optional parts of the model protocol: no fast path, no memoised affine maps.

    A model overrides `head_fast_path` to offer a fast path and checks its own preconditions there (the
    task kind's loss, activation, head shape, ...); learners never inspect a model's class. Offering
    `HeadFastPath(closed_form=True)` commits the model to `head_grads(h, w, b, target, mask, create_graph)`
    (support loss and head gradients from the last hidden h); `fused=True` to `fused_head_inner(...)` too
    (see `MLP`). A test must show the fast path equals the generic one (`tests/unit/test_meta_core.py`)."""

    name: ClassVar[str] = "base"

    def head_fast_path(self, kind: TaskKind, adapt_names: Sequence[str], *, lr_mode: str,
                       per_step_bn: bool) -> HeadFastPath | None:
        """The fast path this model offers for a head-only inner loop with these settings, or None."""
        return None

    def fixed_prefix(self, adapt_names: Sequence[str]) -> int:
        """How many leading blocks compute the same output at every inner step when `adapt_names` are adapted
        (none of their parameters adapted, no per-step rows): learners that adapt more than the head run
        them once per meta-batch and resume from there. 0 (the default) = no such promise."""
        return 0

    def prime_memos(self, params: dict[str, Tensor], xs: Tensor, ms: Tensor, xq: Tensor, mq: Tensor,
                    memo_s: Memo, memo_q: Memo, joint_rows: Callable[[], SparseRows] | None,
                    valid_rows: Callable[[str], Tensor] | None = None) -> None:
        """Fill the support and query memos together before the inner loop (optional speed-up).
        `valid_rows(which)`: flat indices of the valid "s"/"q" rows when the batch knows them (no device sync)."""

    def affine_after(self, position: int) -> bool:
        """Whether the map after hidden `position` starts with an affine map whose output `trace` memoises
        as `Memo.linear[position + 1]` (mixers may then mix those outputs instead of the hiddens)."""
        return False

    def affine(self, params: dict[str, Tensor], h: Tensor, position: int) -> Tensor:
        """The affine map that follows hidden `position`, applied to h (only where `affine_after`)."""
        raise NotImplementedError(f"{type(self).__name__} memoises no affine maps")

    def from_linear(self, params: dict[str, Tensor], z: Tensor, position: int, step: int, stats: Stats,
                    stop: int | None = None) -> Tensor:
        """Hidden at position `stop` (default: the model output) from z, the affine output that follows hidden
        `position` (only where `affine_after`)."""
        raise NotImplementedError(f"{type(self).__name__} memoises no affine maps")

    def bits_forward(self, params: dict[str, Tensor], stats: Stats, step: int) -> BitsForward | None:
        """Inference for one adapted network (2-D `adapt`) on 0/1 inputs given as their set bits (see
        `BitsForward`), giving the (N, out_dim) output that `trace` gives the dense rows; None when this model
        (or these parameters) offers none. A test must show it equals `trace` (`tests/unit/test_screen.py`)."""
        return None

    def with_transforms(self) -> ModelBase:
        """The same model with T-Net transformation layers (models without them raise)."""
        raise ValueError(f"model {self.name!r} has no transformation layers (T-Net needs them)")

    def forward_from(self, params: dict[str, Tensor], h: Tensor, start_layer: int, step: int,
                     stats: Stats | None = None) -> Tensor:
        """Model output from the hidden `h` at position `start_layer`. Pass the support `stats` (without
        them the statistics of `h` itself are used, which makes rows depend on each other)."""
        return self.trace(params, h, step, stats=stats, start=start_layer)[0][-1]  # type: ignore[attr-defined]


MODELS: Registry[ModelBase] = Registry("model")


def build_model(name: str = "mlp", **options) -> ModelBase:
    """Model by name (one of MODELS) with its options."""
    return MODELS.build(name, **options)


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


@MODELS.register
class MLP(ModelBase):
    """Fully-connected net: hidden block = Linear [-> transform] -> batch norm -> leaky ReLU; head = Linear.

    Parameter names (weights are stored (in, out)): block{k}_weight/_bias/_bn_weight/_bn_bias[/_transform] (k = 1..len(hidden)),
    head_weight, head_bias [, head_transform]. `transforms=True` adds T-Net transformation matrices
    (identity at init) after each linear map. `per_step_blocks`: which blocks get per-step batch-norm
    parameters ("all", as MAML++, or only the "last" hidden block: then the body before it is
    step-independent and computed once per task by ANIL-type learners). `sparse_input`: use a sparse
    product for block 1 (None = automatically on CPU when <= 25% of the inputs are non-zero).

    Fast path (`head_fast_path`): a plain linear head (no transform) adapted alone under a squared-error
    loss with one output gets its inner gradients in closed form; with per-step batch norm in the last hidden
    block only (or none) and fixed or per-step rates, all steps run as one fused node (`headloop`).
    """

    name = "mlp"

    def __init__(self, in_dim: int = 1024, hidden: Sequence[int] = (500, 500), n_steps: int = 5,
                 negative_slope: float = 0.01, *, out_dim: int = 1, transforms: bool = False,
                 bn_eps: float = 1e-5, out_bias: float = 0.0, per_step_blocks: str = "last",
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
        """The same net with T-Net transformation matrices after each linear map."""
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

    def width(self, position: int) -> int:
        """Units of the hidden at `position` (0 = the input)."""
        return (self.in_dim, *self.hidden, self.out_dim)[position]

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
               stats: Stats, memo: Memo | None) -> Tensor:
        z = None if memo is None else memo.linear.get(k)
        if z is None:
            if k == 1:
                z = self._first_linear(h, params["block1_weight"], params["block1_bias"],
                                       None if memo is None else memo.sparse_rows,
                                       None if memo is None else memo.input_nnz)
            else:
                z = linear(h, params[f"block{k}_weight"], params[f"block{k}_bias"])
            if self.transforms:
                z = linear(z, params[f"block{k}_transform"], None)
            if memo is not None:
                memo.linear[k] = z
        if k not in stats:  # support statistics of a memoised linear map are step-independent too
            hit = None if memo is None else memo.moments.get(k)
            if hit is None:
                hit = masked_moments(z, mask)
                if memo is not None:
                    memo.moments[k] = hit
            stats[k] = hit
        return self.normalize(params, z, k, step, stats)

    def pre_activation(self, params: dict[str, Tensor], h: Tensor, k: int) -> Tensor:
        """Linear map (and transform) of hidden block k applied to the block input h (dense)."""
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
              memo: Memo | None = None) -> tuple[list[Tensor], Stats]:
        """Run positions start -> stop (default: output). Returns the hiddens at positions start..stop and
        the batch-norm statistics (given ones reused; missing ones computed from `h`'s masked rows).

        `memo` (optional, one per input tensor) memoises step-independent work across inner steps
        (block 1's linear map; whole blocks without per-step parameters); see `assayfew.meta.memo`."""
        stop = self.n_layers if stop is None else stop
        if not 0 <= start <= stop <= self.n_layers:
            raise ValueError(f"MLP.trace: invalid positions start={start}, stop={stop}")
        stats = dict(stats) if stats else {}
        out = [h]
        invariant = memo is not None and start == 0  # still on a step-independent prefix of blocks
        for k in range(start + 1, stop + 1):
            if k < self.n_layers:
                input_invariant = invariant
                invariant = invariant and self.bn_rows(k) == 1
                hit = memo.blocks.get(k) if invariant and memo is not None else None
                if hit is not None:
                    h, stats[k] = hit
                else:
                    h = self._block(params, h, k, step, mask, stats, memo if input_invariant else None)
                    if invariant and memo is not None:
                        memo.blocks[k] = (h, stats[k])
            else:
                h = self.affine(params, h, k - 1)
            out.append(h)
        return out, stats

    def bits_forward(self, params: dict[str, Tensor], stats: Stats,
                     step: int) -> Callable[[Tensor, Tensor], Tensor] | None:
        """`trace`'s operations from block 1's sparse product on (no dense input, no memo; for scoring
        libraries). Shared block-1 weights only (ANIL-type adaptation), no transforms. Each block's batch norm
        (fixed statistics at inference) is folded into its linear map once, so a row block costs one sparse
        sum or matrix product and one leaky ReLU per block (equal to `trace` up to float32 rounding)."""
        if self.transforms or params["block1_weight"].dim() != 2:
            return None
        if any(p.dim() > 2 and p.shape[0] != 1 for p in params.values()):
            return None  # a batch of several adaptations

        def single(name: str) -> Tensor:  # an adapted weight/bias without its task dimension of 1
            p = params[name].detach()
            return p.reshape(p.shape[-2:]) if name.endswith("weight") else p.reshape(-1)

        folded = []
        for k in range(1, len(self.hidden) + 1):
            w, b = single(f"block{k}_weight"), single(f"block{k}_bias")
            mean, var = (s.detach().reshape(-1) for s in stats[k])
            scale = torch.rsqrt(var + self.bn_eps) * _row(params[f"block{k}_bn_weight"].detach(), step).reshape(-1)
            shift = _row(params[f"block{k}_bn_bias"].detach(), step).reshape(-1) - mean * scale
            folded.append(((w * scale).contiguous(), b.reshape(-1) * scale + shift))
        head_w, head_b = single("head_weight"), single("head_bias")
        slope = self.negative_slope

        def rest(z: Tensor) -> Tensor:
            h = F.leaky_relu_(z, slope)
            for w, b in folded[1:]:
                h = F.leaky_relu_(torch.addmm(b, h, w), slope)
            return torch.addmm(head_b, h, head_w)

        return BitsForward(table=folded[0][0], bias=folded[0][1], rest=rest)

    # ---- fast paths (see the class docstring) -------------------------------------------------------
    def head_fast_path(self, kind: TaskKind, adapt_names: Sequence[str], *, lr_mode: str,
                       per_step_bn: bool) -> HeadFastPath | None:
        if (kind.loss_name != "mse" or self.out_dim != 1 or self.transforms
                or set(adapt_names) != {"head_weight", "head_bias"}):
            return None
        fused = (len(self.hidden) >= 1 and self.negative_slope >= 0 and lr_mode in ("fixed", "per_step")
                 and (not per_step_bn or self.per_step_blocks == "last"))
        return HeadFastPath(closed_form=True, fused=fused)

    def head_grads(self, h: Tensor, w: Tensor, b: Tensor, y: Tensor, mask: Tensor,
                   create_graph: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """(closed-form fast path) Per-task masked MSE of the linear head pred = h w + b (h (T, N, H),
        w (T, H, 1), b (T, 1)) and its gradient w.r.t. w and b: r = 2 mask (pred - y) / n, dw = h^T r,
        db = sum r. Differentiable (as autograd.grad with create_graph) when `create_graph`, else detached."""
        cnt = mask.sum(1).clamp_min(1.0)
        diff = linear(h, w, b).squeeze(-1) - y
        loss = (diff.square() * mask).sum(1) / cnt  # = masked_mse(pred, y, mask)
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            r = diff * (mask * (2.0 / cnt).unsqueeze(1))
            gw = torch.bmm(r.unsqueeze(1), h).transpose(1, 2)
            gb = r.sum(1, keepdim=True)
        if not create_graph:
            gw, gb = gw.detach(), gb.detach()
        return loss, {"head_weight": gw, "head_bias": gb}

    def prime_memos(self, params: dict[str, Tensor], xs: Tensor, ms: Tensor, xq: Tensor, mq: Tensor,
                    memo_s: Memo, memo_q: Memo, joint_rows: Callable[[], SparseRows] | None,
                    valid_rows: Callable[[str], Tensor] | None = None) -> None:
        """With per-step batch norm in the last hidden block only, that block's (step-independent) linear map
        runs once on the valid support and query rows together (one product, no padding rows); padding rows
        get 0 there (they are masked out of statistics, losses and mixing partners). Block 1 of both runs as
        one sparse product when `joint_rows` (their stacked sparse form) is given."""
        if self.per_step_blocks != "last" or self.n_layers < 3:
            return
        last = self.n_layers - 1
        if (joint_rows is not None and params["block1_weight"].dim() == 2
                and self.uses_sparse_input(xs, memo_s.input_nnz) and self.uses_sparse_input(xq, memo_q.input_nnz)):
            memo_s.linear[1], memo_q.linear[1] = self.joint_first_linear(params, [xs, xq], joint_rows())
        hs, stats = self.trace(params, xs, 0, mask=ms, stop=last - 1, memo=memo_s)
        hq = self.trace(params, xq, 0, stats=stats, stop=last - 1, memo=memo_q)[0][-1]
        (t, ns, width), nq = hs[-1].shape, hq.shape[1]
        if valid_rows is not None:  # no device sync when the batch was given them on the host
            si, qi = valid_rows("s"), valid_rows("q")
        else:
            si, qi = (ms.reshape(-1) > 0).nonzero().squeeze(1), (mq.reshape(-1) > 0).nonzero().squeeze(1)
        rows = torch.cat([hs[-1].reshape(t * ns, width).index_select(0, si),
                          hq.reshape(t * nq, width).index_select(0, qi)])
        z = self.pre_activation(params, rows, last)
        n_s = si.numel()
        memo_s.linear[last] = z.new_zeros(t * ns, z.shape[-1]).index_copy(0, si, z[:n_s]).view(t, ns, -1)
        memo_q.linear[last] = z.new_zeros(t * nq, z.shape[-1]).index_copy(0, qi, z[n_s:]).view(t, nq, -1)

    def fused_head_inner(self, params: dict[str, Tensor], xs: Tensor, ms: Tensor, memo: Memo, ys: Tensor,
                         bn_rows: Tensor, lr_w: Tensor, lr_b: Tensor, *, second_order: bool,
                         ) -> tuple[Tensor, Tensor, list[tuple[list[Tensor], Stats]], Tensor]:
        """(fused fast path) All inner steps of the head as one node: returns the head after each step
        ws (S, T, H, 1), bs (S, T, 1), the support trace (hiddens to the last hidden block, statistics) of
        each step, and the per-task support loss before adaptation (T,). `bn_rows` (S,) long: the batch-norm
        row of each step (clamped to the rows there are)."""
        last = self.n_layers - 1
        prefix, stats = self.trace(params, xs, 0, mask=ms, stop=last - 1, memo=memo)
        z = memo.linear.get(last)
        if z is None:
            z = memo.linear[last] = self.pre_activation(params, prefix[-1], last)
        mom = memo.moments.get(last)
        if mom is None:
            mom = memo.moments[last] = masked_moments(z, ms)
        bn_w, bn_b = params[f"block{last}_bn_weight"], params[f"block{last}_bn_bias"]
        rows = bn_rows.clamp_max(bn_w.shape[0] - 1)
        t = z.shape[0]
        w0 = params["head_weight"].unsqueeze(0).expand(t, *params["head_weight"].shape)
        b0 = params["head_bias"].unsqueeze(0).expand(t, *params["head_bias"].shape)
        ws, bs, feats, loss0 = head_inner_loop(z, mom[0], mom[1], bn_w.index_select(0, rows),
                                               bn_b.index_select(0, rows), w0, b0, lr_w, lr_b, ys, ms,
                                               eps=self.bn_eps, slope=self.negative_slope,
                                               second_order=second_order)
        full = {**stats, last: mom}
        return ws, bs, [([*prefix, h], full) for h in feats], loss0

    def affine_after(self, position: int) -> bool:
        return 0 <= position < self.n_layers

    def affine(self, params: dict[str, Tensor], h: Tensor, position: int) -> Tensor:
        if position + 1 < self.n_layers:
            return self.pre_activation(params, h, position + 1)
        out = linear(h, params["head_weight"], params["head_bias"])
        return linear(out, params["head_transform"], None) if self.transforms else out

    def from_linear(self, params: dict[str, Tensor], z: Tensor, position: int, step: int, stats: Stats,
                    stop: int | None = None) -> Tensor:
        if position == self.n_layers - 1:  # the head's output is the model output
            return z
        h = self.normalize(params, z, position + 1, step, stats)
        return self.trace(params, h, step, stats=stats, start=position + 1, stop=stop)[0][-1]
