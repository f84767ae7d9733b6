"""PoseNet: the pose-regression network of MR-MAML / MetaMix as a functional model batched over tasks.

An encoder of `len(encoder)` stride-2 3×3 convolutions (-> batch norm -> ReLU) that is meta-learned but never
adapted in the inner loop (it is not among `adaptable_names`, and `fixed_prefix` tells learners that its
output is step-independent, so they compute it once per meta-batch), then `n_blocks` adapted blocks of 3×3
convolution (`filters` channels, padding 1) -> batch norm -> ReLU -> 2×2 max-pool, then a linear head to one
output (the azimuth, scaled ×10 by the benchmark as the reference code does; squared-error task kind).

Inputs are (T, N, C, H, W) images or the same flattened to (T, N, C·H·W). Positions: 0 = the image,
1..E = the encoder blocks, E+1..E+B = the adapted blocks, `n_layers` = the output; mixers may mix at any
position < `n_layers`. Adapted (per-task) convolutions run as one grouped convolution by default (10-15%
faster than Conv-4's per-task loop at these small maps; `benchmarks/pose_step.py`). Batch-norm statistics are those of each task's (masked) support images, per channel,
as for Conv-4; the encoder's batch norm has one row (step-independent), adapted blocks one row per step
(used by learners with per-step batch norm). Registered as model "pose".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from assayfew.meta.conv4 import (BATCHINGS, bn_row, channel_moments, conv_block_params, head_params, pool2, task_conv,
                                 trace_images)
from assayfew.meta.memo import Memo
from assayfew.meta.model import MODELS, ModelBase, Stats

__all__ = ["PoseNet"]


@MODELS.register
class PoseNet(ModelBase):
    """Encoder (un-adapted stride-2 convolutions) + adapted conv blocks + linear head. Parameter names:
    enc{k}_weight (out, in, 3, 3), enc{k}_bias, enc{k}_bn_weight / _bn_bias (1, channels); block{k}_weight,
    block{k}_bias, block{k}_bn_weight / _bn_bias (n_steps, filters); head_weight (features, out_dim),
    head_bias (initialised to `out_bias`, e.g. the middle of the label range)."""

    name = "pose"

    def __init__(self, *, out_dim: int = 1, in_channels: int = 1, image_size: int = 128,
                 encoder: Sequence[int] = (8, 16, 16, 16), filters: int = 16, n_blocks: int = 2, n_steps: int = 5,
                 bn_eps: float = 1e-5, out_bias: float = 0.0, batching: str = "grouped") -> None:
        encoder = tuple(int(c) for c in encoder)
        if min(out_dim, in_channels, image_size, filters, n_blocks, n_steps, *encoder, 1) < 1:
            raise ValueError("PoseNet: sizes must be positive")
        if image_size >> (len(encoder) + n_blocks) < 1:
            raise ValueError(f"PoseNet: {image_size}-pixel images are too small for {len(encoder)} stride-2 "
                             f"and {n_blocks} pooling blocks")
        if batching not in BATCHINGS:
            raise ValueError(f"PoseNet: batching must be one of {BATCHINGS}")
        self.out_dim, self.in_channels, self.image_size = int(out_dim), int(in_channels), int(image_size)
        self.encoder, self.filters, self.n_blocks, self.n_steps = encoder, int(filters), int(n_blocks), int(n_steps)
        self.bn_eps, self.out_bias, self.batching = float(bn_eps), float(out_bias), batching
        self.n_enc = len(encoder)
        self.n_layers = self.n_enc + self.n_blocks + 1
        self.n_bn_sets = self.n_steps
        self.head_names = ("head_weight", "head_bias")
        convs = tuple(f"block{k}_{p}" for k in range(1, self.n_blocks + 1) for p in ("weight", "bias"))
        self.adaptable_names = convs + self.head_names  # never the encoder
        self.features = self.filters * (self.image_size >> (self.n_enc + self.n_blocks)) ** 2

    def config(self) -> dict:
        return {"out_dim": self.out_dim, "in_channels": self.in_channels, "image_size": self.image_size,
                "encoder": list(self.encoder), "filters": self.filters, "n_blocks": self.n_blocks,
                "n_steps": self.n_steps, "bn_eps": self.bn_eps, "out_bias": self.out_bias, "batching": self.batching}

    def init_params(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Convolutions: Xavier-uniform weights, zero biases; BN weight 1 / bias 0; head uniform
        ±1/sqrt(features), bias `out_bias`."""
        params: dict[str, Tensor] = {}
        cin = self.in_channels
        for k, cout in enumerate(self.encoder, 1):
            params |= conv_block_params(f"enc{k}", cin, cout, 1, generator)
            cin = cout
        for k in range(1, self.n_blocks + 1):
            params |= conv_block_params(f"block{k}", cin, self.filters, self.n_bn_sets, generator)
            cin = self.filters
        return params | head_params(self.features, self.out_dim, self.out_bias, generator)

    def fixed_prefix(self, adapt_names: Sequence[str]) -> int:
        """The leading encoder blocks none of whose parameters are adapted (their outputs are step-independent:
        the encoder's batch norm has one row)."""
        adapted = set(adapt_names)
        for k in range(1, self.n_enc + 1):
            if any(f"enc{k}_{p}" in adapted for p in ("weight", "bias", "bn_weight", "bn_bias")):
                return k - 1
        return self.n_enc

    def _norm(self, params: dict[str, Tensor], z: Tensor, name: str, k: int, step: int, mask: Tensor | None,
              stats: Stats) -> Tensor:
        if k not in stats:
            stats[k] = channel_moments(z, mask)
        mean, var = stats[k]
        scale = torch.rsqrt(var + self.bn_eps) * bn_row(params[f"{name}_bn_weight"], step)
        return F.relu(torch.addcmul(bn_row(params[f"{name}_bn_bias"], step) - mean * scale, z, scale))

    def block(self, params: dict[str, Tensor], h: Tensor, k: int, step: int, mask: Tensor | None,
              stats: Stats) -> Tensor:
        """Position k's block: an encoder block (k <= E: stride-2 convolution, batch norm, ReLU) or an adapted
        block (convolution, batch norm, ReLU, 2×2 max-pool)."""
        if k <= self.n_enc:
            name = f"enc{k}"
            z = task_conv(h, params[f"{name}_weight"], params[f"{name}_bias"], self.batching, stride=2)
            return self._norm(params, z, name, k, step, mask, stats)
        name = f"block{k - self.n_enc}"
        a = self._norm(params, task_conv(h, params[f"{name}_weight"], params[f"{name}_bias"], self.batching),
                       name, k, step, mask, stats)
        return pool2(a)

    def trace(self, params: dict[str, Tensor], h: Tensor, step: int, *, mask: Tensor | None = None,
              stats: Stats | None = None, start: int = 0, stop: int | None = None,
              memo: Memo | None = None) -> tuple[list[Tensor], Stats]:
        """Run positions start -> stop (default: the output); returns the hiddens at start..stop and the
        batch-norm statistics (given ones reused, missing ones from `h`'s masked images). `memo` is unused:
        learners reuse the step-independent encoder output themselves (`fixed_prefix`)."""
        return trace_images(self, params, h, step, mask=mask, stats=stats, start=start, stop=stop)
