"""Fused inner loop of a linear MSE head on batch-normalised, step-invariant features (ANIL++ fast path).

For an MLP whose only per-step (MAML++) batch-norm parameters sit in the last hidden block, the support
features at inner step s are h_s = leaky(ẑ γ_s + β_s): ẑ (the last block's normalised pre-activation
under the support statistics) is the same at every step, only the affine rows (γ_s, β_s) change. The head
step is closed form: pred = h_s w_s + b_s, r = 2 m (pred - y) / n, w_{s+1} = w_s - η_s h_s^T r,
b_{s+1} = b_s - η'_s Σ r.

`head_inner_loop` runs all steps in one autograd node with a hand-written backward (second order: through
the inner gradients; first order: inner gradients as constants), touching few (T, N, H) buffers per step.
It also returns the features h_s (differentiable), which outer losses on the support reuse. Equal to the
autograd formulation (tested against the per-task reference loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["head_inner_loop"]


def _features(zhat: Tensor, gamma: Tensor, beta: Tensor, slope: float) -> Tensor:
    """leaky(ẑ γ + β) in one buffer."""
    return F.leaky_relu_(torch.addcmul(beta, zhat, gamma), slope)


def _row_dot(h: Tensor, v: Tensor) -> Tensor:
    """Per-task h (T, N, H) times v (T, H, 1) -> (T, N) (mul-sum: faster than a batched matvec on CPU)."""
    return (h * v.transpose(1, 2)).sum(-1)


class _HeadInnerLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, mean: Tensor, var: Tensor, gammas: Tensor, betas: Tensor,  # type: ignore[override]
                w0: Tensor, b0: Tensor, lr_w: Tensor, lr_b: Tensor, y: Tensor, mask: Tensor, eps: float,
                slope: float, second_order: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        rstd = torch.rsqrt(var + eps)
        zhat = torch.addcmul(-mean * rstd, z, rstd)
        cnt = mask.sum(1).clamp_min(1.0)
        kappa = mask * (2.0 / cnt).unsqueeze(1)
        w, b = w0, b0
        ws, bs, hs, rs, gws, gbs = [], [], [], [], [], []
        loss0 = z.new_zeros(z.shape[0])
        for s in range(gammas.shape[0]):
            h = _features(zhat, gammas[s], betas[s], slope)
            diff = _row_dot(h, w) + b - y
            if s == 0:
                loss0 = (diff.square() * mask).sum(1) / cnt
            r = diff * kappa
            gw = torch.bmm(r.unsqueeze(1), h).transpose(1, 2)
            gb = r.sum(1, keepdim=True)
            w = w - lr_w[s] * gw
            b = b - lr_b[s] * gb
            for out, v in ((ws, w), (bs, b), (hs, h), (rs, r), (gws, gw), (gbs, gb)):
                out.append(v)
        w_all = torch.stack(ws)
        ctx.save_for_backward(zhat, rstd, gammas, w0, lr_w, lr_b, kappa, w_all, torch.stack(rs),
                              torch.stack(gws), torch.stack(gbs), *hs)
        ctx.slope, ctx.second_order = slope, second_order
        ctx.mark_non_differentiable(loss0)
        ctx.set_materialize_grads(False)
        return (w_all, torch.stack(bs), loss0, *hs)  # the features as separate outputs: no copies

    @staticmethod
    @once_differentiable
    def backward(ctx, d_ws: Tensor | None, d_bs: Tensor | None, _d_loss0: Tensor | None,  # type: ignore[override]
                 *d_hs: Tensor | None):
        zhat, rstd, gammas, w0, lr_w, lr_b, kappa, ws, rs, gws, gbs, *hs = ctx.saved_tensors
        dw, db = torch.zeros_like(ws[0]), ws.new_zeros(ws.shape[1], 1)
        d_lr_w, d_lr_b = torch.zeros_like(lr_w), torch.zeros_like(lr_b)
        d_gammas, d_betas = torch.zeros_like(gammas), torch.zeros_like(gammas)
        d_z = None
        sum_gp = rstd.new_zeros(rstd.shape)  # Σ_s γ_s Σ_n d_pre_s ẑ, per task (for the variance)
        sum_gq = rstd.new_zeros(rstd.shape)  # Σ_s γ_s Σ_n d_pre_s, per task (for the mean)
        for s in reversed(range(gammas.shape[0])):
            if d_ws is not None:
                dw = dw + d_ws[s]  # now the gradient w.r.t. the head after step s
            if d_bs is not None:
                db = db + d_bs[s]
            d_lr_w[s] = -(gws[s] * dw).sum()
            d_lr_b[s] = -(gbs[s] * db).sum()
            h = hs[s]
            d_h = d_hs[s]  # from outer losses on the support features (None: unused)
            if ctx.second_order:  # else the inner gradients are constants: w_s gets w_{s+1}'s gradient unchanged
                w_s = w0 if s == 0 else ws[s - 1]
                d_gw, d_gb = -lr_w[s] * dw, -lr_b[s] * db
                d_pred = (_row_dot(h, d_gw) + d_gb) * kappa  # through r = kappa (pred - y), gw = h^T r, gb = Σ r
                dw = dw + torch.bmm(d_pred.unsqueeze(1), h).transpose(1, 2)
                db = db + d_pred.sum(1, keepdim=True)
                inner = rs[s].unsqueeze(-1) * d_gw.transpose(1, 2)
                inner.addcmul_(d_pred.unsqueeze(-1), w_s.transpose(1, 2))
                d_h = inner if d_h is None else inner.add_(d_h)
            if d_h is None:
                continue
            d_pre = torch.ops.aten.leaky_relu_backward(d_h, h, ctx.slope, True)
            p_s = (d_pre * zhat).sum(1, keepdim=True)
            q_s = d_pre.sum(1, keepdim=True)
            d_gammas[s], d_betas[s] = p_s.sum((0, 1)), q_s.sum((0, 1))
            sum_gp.addcmul_(p_s, gammas[s])
            sum_gq.addcmul_(q_s, gammas[s])
            scale = gammas[s] * rstd
            d_z = d_pre * scale if d_z is None else d_z.addcmul_(d_pre, scale)
        d_mean = -rstd * sum_gq
        d_var = -0.5 * rstd.square() * sum_gp
        return (d_z, d_mean, d_var, d_gammas, d_betas, dw, db, d_lr_w, d_lr_b, None, None, None, None, None)


def head_inner_loop(z: Tensor, mean: Tensor, var: Tensor, gammas: Tensor, betas: Tensor, w0: Tensor, b0: Tensor,
                    lr_w: Tensor, lr_b: Tensor, y: Tensor, mask: Tensor, *, eps: float, slope: float,
                    second_order: bool = True) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """Inner loop of S head steps on features h_s = leaky(ẑ γ_s + β_s), ẑ = (z - mean) / sqrt(var + eps).

    z (T, N, H) pre-activation, mean/var (T, 1, H) its support moments; gammas, betas (S, H) the
    batch-norm rows of each step; w0 (T, H, 1), b0 (T, 1) initial head; lr_w, lr_b (S,) inner rates;
    y, mask (T, N). Returns ws (S, T, H, 1), bs (S, T, 1) = the head after each step, hs = the features
    (T, N, H) of each step, and the per-task support MSE before adaptation (T,) (not differentiable).
    Differentiable w.r.t. z, mean, var, gammas, betas, w0, b0 and the rates; `second_order=False` treats
    the inner gradients as constants (first-order MAML)."""
    t, _, width = z.shape if z.dim() == 3 else (0, 0, 0)
    if z.dim() != 3 or mean.shape != (t, 1, width) or var.shape != (t, 1, width):
        raise ValueError("head_inner_loop: expected z (T, N, H) and mean, var (T, 1, H)")
    if w0.shape != (t, width, 1) or b0.shape != (t, 1):
        raise ValueError("head_inner_loop: expected w0 (T, H, 1) and b0 (T, 1)")
    if gammas.shape != betas.shape or gammas.shape[1:] != (width,) or lr_w.shape != (gammas.shape[0],) \
            or lr_b.shape != lr_w.shape:
        raise ValueError("head_inner_loop: gammas/betas must be (S, H) and the rates (S,)")
    if slope < 0:
        raise ValueError("head_inner_loop: the leaky slope must be >= 0")
    ws, bs, loss0, *hs = _HeadInnerLoop.apply(z, mean, var, gammas, betas, w0, b0, lr_w, lr_b, y, mask,
                                              float(eps), float(slope), bool(second_order))
    return ws, bs, hs, loss0
