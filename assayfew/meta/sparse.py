"""Sparse-input linear map for fingerprint batches: X (N, D) sparse constant, W (D, out) dense.

`SparseRows.from_dense(x)` stores X once in row-major and column-major form; `spmm(rows, w)` computes
X @ W with `embedding_bag` (sum mode). Its backward is the same operation with the transposed
structure, so it is differentiable any number of times (needed for second-order meta-gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SparseRows", "spmm"]


@dataclass(frozen=True)
class _Bags:
    indices: Tensor  # column (or row) ids, grouped by bag
    offsets: Tensor  # start of each bag
    weights: Tensor | None  # values (None when all ones)


@dataclass(frozen=True)
class SparseRows:
    n_rows: int
    n_cols: int
    by_row: _Bags  # X as bags of columns
    by_col: _Bags  # X^T as bags of rows

    @staticmethod
    def from_dense(x: Tensor) -> SparseRows:
        """X (N, D)."""
        n, d = x.shape
        nz = x.to(torch.bool).nonzero()  # same positions as x.nonzero(), faster on a bool tensor
        return SparseRows._build(nz[:, 0], nz[:, 1], x[nz[:, 0], nz[:, 1]], n, d)

    @staticmethod
    def from_batched(x: Tensor) -> SparseRows:
        """X (T, N, D) as the block-diagonal (T*N, T*D) matrix: spmm with W (T*D, out) applies each
        task's own weights W[t] to its rows (per-task adapted first layers)."""
        t, n, d = x.shape
        nz = x.to(torch.bool).nonzero()
        vals = x[nz[:, 0], nz[:, 1], nz[:, 2]]
        return SparseRows._build(nz[:, 0] * n + nz[:, 1], nz[:, 0] * d + nz[:, 2], vals, t * n, t * d)

    @staticmethod
    def from_coordinates(rows: Tensor, cols: Tensor, n: int, d: int, vals: Tensor | None = None) -> SparseRows:
        """X (n, d) from the coordinates of its non-zeros, sorted by row; `vals` None means all ones."""
        if rows.shape != cols.shape or (vals is not None and vals.shape != rows.shape):
            raise ValueError("SparseRows: rows, cols (and vals) must have the same length")
        if rows.numel() and (bool((rows[1:] < rows[:-1]).any()) or int(rows[-1]) >= n or int(rows[0]) < 0
                             or int(cols.min()) < 0 or int(cols.max()) >= d):
            raise ValueError("SparseRows: coordinates out of range or not sorted by row")
        return SparseRows._build(rows, cols, vals, n, d)

    @staticmethod
    def _build(rows: Tensor, cols: Tensor, vals: Tensor | None, n: int, d: int) -> SparseRows:
        """From coordinates sorted by row (as `nonzero` returns them)."""
        binary = vals is None or bool((vals == 1).all())
        row_counts = torch.bincount(rows, minlength=n)
        row_off = torch.cumsum(row_counts, 0) - row_counts
        order = _stable_argsort(cols, d)
        col_counts = torch.bincount(cols, minlength=d)
        col_off = torch.cumsum(col_counts, 0) - col_counts
        return SparseRows(n, d, _Bags(cols, row_off, None if binary else vals),
                          _Bags(rows[order], col_off, None if binary or vals is None else vals[order]))

    @staticmethod
    def vstack(top: SparseRows, bottom: SparseRows) -> SparseRows:
        """The rows of `top` followed by those of `bottom` (same columns), merged without sorting."""
        if top.n_cols != bottom.n_cols:
            raise ValueError(f"SparseRows.vstack: {top.n_cols} and {bottom.n_cols} columns")
        nnz_top = top.by_row.indices.numel()

        def weights(a: _Bags, b: _Bags) -> Tensor | None:
            if a.weights is None and b.weights is None:
                return None
            wa = a.weights if a.weights is not None else torch.ones(a.indices.numel(), device=a.indices.device)
            wb = b.weights if b.weights is not None else torch.ones(b.indices.numel(), device=b.indices.device)
            return torch.cat([wa, wb.to(wa.dtype)])

        by_row = _Bags(torch.cat([top.by_row.indices, bottom.by_row.indices]),
                       torch.cat([top.by_row.offsets, bottom.by_row.offsets + nnz_top]),
                       weights(top.by_row, bottom.by_row))
        # column-major: column c holds top's rows of c, then bottom's (shifted by top.n_rows)
        a_off, b_off = top.by_col.offsets, bottom.by_col.offsets
        a_end = torch.cat([a_off[1:], a_off.new_tensor([nnz_top])])
        a_cnt = a_end - a_off
        b_cnt = torch.cat([b_off[1:], b_off.new_tensor([bottom.by_col.indices.numel()])]) - b_off
        a_pos = torch.arange(nnz_top, device=a_off.device) + b_off.repeat_interleave(a_cnt)
        b_pos = (torch.arange(bottom.by_col.indices.numel(), device=a_off.device)
                 + a_end.repeat_interleave(b_cnt))
        total = nnz_top + bottom.by_col.indices.numel()
        indices = a_off.new_empty(total)
        indices[a_pos] = top.by_col.indices
        indices[b_pos] = bottom.by_col.indices + top.n_rows
        col_w = weights(top.by_col, bottom.by_col)
        if col_w is not None:
            merged = col_w.new_empty(total)
            merged[a_pos], merged[b_pos] = col_w[:nnz_top], col_w[nnz_top:]
            col_w = merged
        return SparseRows(top.n_rows + bottom.n_rows, top.n_cols, by_row, _Bags(indices, a_off + b_off, col_w))

    def transposed(self) -> SparseRows:
        return SparseRows(self.n_cols, self.n_rows, self.by_col, self.by_row)


def _stable_argsort(keys: Tensor, n_keys: int) -> Tensor:
    """Stable argsort of integer keys in [0, n_keys); on CPU with n_keys <= 2**16 numpy's radix sort
    (several times faster than a comparison sort for fingerprint column ids)."""
    if keys.device.type == "cpu" and n_keys <= 1 << 16:
        order = np.argsort(keys.numpy().astype(np.uint16), kind="stable")
        return torch.from_numpy(order).to(keys.dtype)
    return torch.argsort(keys, stable=True)


def _bag_sum(bags: _Bags, dense: Tensor) -> Tensor:
    w = None if bags.weights is None else bags.weights.to(dense.dtype)
    return F.embedding_bag(bags.indices, dense, bags.offsets, mode="sum", per_sample_weights=w)


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dense: Tensor, x: SparseRows) -> Tensor:  # type: ignore[override]
        ctx.x = x
        return _bag_sum(x.by_row, dense)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _SpMM.apply(grad.contiguous(), ctx.x.transposed()), None


def spmm(x: SparseRows, w: Tensor) -> Tensor:
    """X @ W for a constant sparse X (N, D) and dense W (D, out); differentiable in W to any order."""
    if w.shape[0] != x.n_cols:
        raise ValueError(f"spmm: X has {x.n_cols} columns, W has {w.shape[0]} rows")
    return _SpMM.apply(w, x)
