"""Conv-4: the few-shot image classifier of MAML / MetaMix as a functional model batched over tasks.

Four blocks of 3×3 convolution (`filters` channels, padding 1) -> batch norm -> ReLU -> 2×2 max-pool, then a
linear head on the flattened features (64 for 28×28 Omniglot, 64·5·5 for 84×84 MiniImagenet). Inputs are
(T, N, C, H, W); a parameter is shared (its natural shape) or task-specific with a leading T (adapted).

Registered as model "conv4" (`assayfew.meta.model.MODELS`); implements the `FunctionalModel` protocol
(positions 0 = the image, k = the output of block k, `n_layers` = the logits; mixers read and resume from
any position < `n_layers`; no fast path: learners use the generic autograd inner loop). `out_dim` = the
number of ways, filled in from the classification task kind. Batch-norm statistics are those of each
task's (masked) support images, per channel over images and pixels, as for the MLP.

Task-specific convolution weights run as one grouped convolution (tasks folded into channels,
`batching="grouped"`), as `torch.func.vmap` over `conv2d` (`batching="vmap"`) or as
a loop of per-task convolutions (`batching="loop"`, the default: fastest on CPU); shared weights fold the
tasks into the image batch. `benchmarks/image_step.py` measures them (DEVELOPERS.md has the figures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from assayfew.meta.memo import Memo
from assayfew.meta.model import MODELS, ModelBase, Stats, linear

__all__ = ["Conv4", "BATCHINGS", "bn_row", "channel_moments", "pool2", "task_conv", "trace_images", "conv_block_params",
           "head_params"]

#: How task-specific convolution weights run: a loop of per-task convolutions (stacked; the fastest on
#: CPU, see DEVELOPERS.md), one grouped convolution, or torch.func vmap
BATCHINGS = ("loop", "grouped", "vmap")


def bn_row(p: Tensor, step: int) -> Tensor:
    """Step row of a (S, C) or per-task (T, S, C) batch-norm parameter, shaped to broadcast over
    (T, N, C, H, W)."""
    r = p.select(-2, min(step, p.shape[-2] - 1))
    return r.reshape(-1, 1, r.shape[-1], 1, 1) if r.dim() == 2 else r.reshape(1, 1, -1, 1, 1)


def channel_moments(z: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per-task, per-channel mean and biased variance of z (T, N, C, H, W) over valid images and pixels."""
    if mask is None or bool((mask > 0).all()):  # every image valid (the usual N-way K-shot episode)
        var, mean = torch.var_mean(z, (1, 3, 4), correction=0, keepdim=True)
        return mean, var
    m = mask.reshape(*mask.shape, 1, 1, 1)
    cnt = m.sum(1, keepdim=True).clamp_min(1.0) * (z.shape[3] * z.shape[4])
    mean = (z * m).sum((1, 3, 4), keepdim=True) / cnt
    var = ((z - mean).square() * m).sum((1, 3, 4), keepdim=True) / cnt
    return mean, var


def conv_block_params(name: str, cin: int, cout: int, bn_rows: int, generator: torch.Generator | None,
                      ) -> dict[str, Tensor]:
    """A 3×3 convolution block's parameters: Xavier-uniform weight, zero bias (as MAML); `bn_rows` rows of
    batch-norm weight 1 / bias 0."""
    bound = (6.0 / (cin * 9 + cout * 9)) ** 0.5
    return {f"{name}_weight": (torch.rand(cout, cin, 3, 3, generator=generator) * 2 - 1) * bound,
            f"{name}_bias": torch.zeros(cout), f"{name}_bn_weight": torch.ones(bn_rows, cout),
            f"{name}_bn_bias": torch.zeros(bn_rows, cout)}


def head_params(features: int, out_dim: int, bias: float, generator: torch.Generator | None) -> dict[str, Tensor]:
    """A linear head as torch.nn.Linear's default weight (uniform ±1/sqrt(features)), bias `bias`."""
    bound = 1.0 / features ** 0.5
    return {"head_weight": (torch.rand(features, out_dim, generator=generator) * 2 - 1) * bound,
            "head_bias": torch.full((out_dim,), float(bias))}


def pool2(a: Tensor) -> Tensor:
    """2×2 max-pool of (T, N, C, H, W) images."""
    p = F.max_pool2d(a.flatten(0, 1), 2)
    return p.view(*a.shape[:2], *p.shape[1:])


def task_conv(h: Tensor, w: Tensor, b: Tensor, batching: str = "loop", *, stride: int = 1) -> Tensor:
    """3×3 convolution (padding 1) of h (T, N, C, H, W) with shared (out, in, 3, 3) or per-task
    (T, out, in, 3, 3) weights and (out,) or (T, out) biases; per-task weights run as `batching` says."""
    t, n = h.shape[:2]
    if w.dim() == 4 and b.dim() == 1:  # shared: fold tasks into the image batch
        z = F.conv2d(h.reshape(t * n, *h.shape[2:]), w, b, stride=stride, padding=1)
        return z.view(t, n, *z.shape[1:])
    w = w if w.dim() == 5 else w.unsqueeze(0).expand(t, *w.shape)
    b = b if b.dim() == 2 else b.unsqueeze(0).expand(t, *b.shape)
    if batching == "vmap":
        return vmap(lambda x, wt, bt: F.conv2d(x, wt, bt, stride=stride, padding=1))(h, w, b)
    if batching == "loop":  # unbind, not h[i]: one backward node, not a full-size zero tensor per task
        return torch.stack([F.conv2d(x, wt, bt, stride=stride, padding=1)
                            for x, wt, bt in zip(h.unbind(0), w.unbind(0), b.unbind(0))])
    c, hh, ww = h.shape[2:]
    x = h.transpose(0, 1).reshape(n, t * c, hh, ww)  # tasks folded into channels
    z = F.conv2d(x, w.reshape(t * w.shape[1], *w.shape[2:]), b.reshape(-1), stride=stride, padding=1, groups=t)
    return z.view(n, t, -1, *z.shape[2:]).transpose(0, 1)


def trace_images(model: Conv4 | ModelBase, params: dict[str, Tensor], h: Tensor, step: int, *, mask: Tensor | None,
                 stats: Stats | None, start: int, stop: int | None) -> tuple[list[Tensor], Stats]:
    """`trace` of an image model with `block(params, h, k, step, mask, stats)` for positions 1..n_layers - 1
    and a linear head on the flattened last block; h is (T, N, C, H, W) or, at position 0, flat (T, N, C*H*W)."""
    n_layers = model.n_layers  # type: ignore[union-attr]
    stop = n_layers if stop is None else stop
    if not 0 <= start <= stop <= n_layers:
        raise ValueError(f"{type(model).__name__}.trace: invalid positions start={start}, stop={stop}")
    stats = dict(stats) if stats else {}
    out = [h]
    if start == 0 and h.dim() == 3:  # flat images (T, N, C*H*W), as learners' (T, N, D) inputs
        h = h.view(*h.shape[:2], model.in_channels, model.image_size, model.image_size)  # type: ignore[union-attr]
    for k in range(start + 1, stop + 1):
        if k < n_layers:
            h = model.block(params, h, k, step, mask, stats)  # type: ignore[union-attr]
        else:
            h = linear(h.flatten(2), params["head_weight"], params["head_bias"])
        out.append(h)
    return out, stats


@MODELS.register
class Conv4(ModelBase):
    """Conv-4 over (T, N, C, H, W) images, or the same flattened to (T, N, C*H*W) (then position 0, the
    input, is flat too; batched `MetaLearner.adapt` takes (T, N, D) inputs). Parameter names: block{k}_weight (out, in, 3, 3), block{k}_bias,
    block{k}_bn_weight / _bn_bias (n_steps, filters) (per-step rows, used by learners with per-step batch
    norm), head_weight (features, out_dim), head_bias."""

    name = "conv4"

    def __init__(self, *, out_dim: int = 5, in_channels: int = 1, image_size: int = 28, filters: int = 64,
                 n_blocks: int = 4, n_steps: int = 5, bn_eps: float = 1e-5, batching: str = "loop") -> None:
        if min(out_dim, in_channels, image_size, filters, n_blocks, n_steps) < 1:
            raise ValueError("Conv4: sizes must be positive")
        if image_size >> n_blocks < 1:
            raise ValueError(f"Conv4: {image_size}-pixel images are too small for {n_blocks} pooling blocks")
        if batching not in BATCHINGS:
            raise ValueError(f"Conv4: batching must be one of {BATCHINGS}")
        self.out_dim, self.in_channels, self.image_size = int(out_dim), int(in_channels), int(image_size)
        self.filters, self.n_blocks, self.n_steps = int(filters), int(n_blocks), int(n_steps)
        self.bn_eps, self.batching = float(bn_eps), batching
        self.n_layers = self.n_blocks + 1
        self.n_bn_sets = self.n_steps
        self.head_names = ("head_weight", "head_bias")
        convs = tuple(f"block{k}_{p}" for k in range(1, self.n_blocks + 1) for p in ("weight", "bias"))
        self.adaptable_names = convs + self.head_names
        self.features = self.filters * (self.image_size >> self.n_blocks) ** 2

    def config(self) -> dict:
        return {"out_dim": self.out_dim, "in_channels": self.in_channels, "image_size": self.image_size,
                "filters": self.filters, "n_blocks": self.n_blocks, "n_steps": self.n_steps,
                "bn_eps": self.bn_eps, "batching": self.batching}

    def init_params(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Convolutions: Xavier-uniform weights, zero biases (as MAML); BN weight 1 / bias 0; head as
        torch.nn.Linear's default (uniform ±1/sqrt(features)), zero bias."""
        params: dict[str, Tensor] = {}
        cin = self.in_channels
        for k in range(1, self.n_blocks + 1):
            params |= conv_block_params(f"block{k}", cin, self.filters, self.n_bn_sets, generator)
            cin = self.filters
        return params | head_params(self.features, self.out_dim, 0.0, generator)

    def conv(self, h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """3×3 convolution (padding 1) of h (T, N, C, H, W) with shared or per-task weights (`task_conv`)."""
        return task_conv(h, w, b, self.batching)

    def block(self, params: dict[str, Tensor], h: Tensor, k: int, step: int, mask: Tensor | None,
              stats: Stats) -> Tensor:
        """Block k: convolution, batch norm (statistics `stats[k]`, computed from h's masked images when
        missing), ReLU, 2×2 max-pool. With per-task weights and the "loop" batching the whole block runs per
        task (its full-resolution tensors stay cache-sized; only the pooled outputs are stacked)."""
        w, b = params[f"block{k}_weight"], params[f"block{k}_bias"]
        if self.batching == "loop" and (w.dim() == 5 or b.dim() == 2):
            t = h.shape[0]
            w = w if w.dim() == 5 else w.unsqueeze(0).expand(t, *w.shape)
            b = b if b.dim() == 2 else b.unsqueeze(0).expand(t, *b.shape)
            zs = [F.conv2d(x, wt, bt, padding=1).unsqueeze(0) for x, wt, bt in zip(h.unbind(0), w.unbind(0), b.unbind(0))]
            if k not in stats:
                moments = [channel_moments(z, None if mask is None else mask[i : i + 1]) for i, z in enumerate(zs)]
                stats[k] = (torch.cat([m for m, _ in moments]), torch.cat([v for _, v in moments]))
            scale, shift = self._bn_affine(params, k, step, stats)
            return torch.cat([self._relu_pool(z, sc, sh) for z, sc, sh in zip(zs, scale.unbind(0), shift.unbind(0))])
        z = self.conv(h, w, b)
        if k not in stats:
            stats[k] = channel_moments(z, mask)
        scale, shift = self._bn_affine(params, k, step, stats)
        return self._relu_pool(z, scale, shift)

    def _bn_affine(self, params: dict[str, Tensor], k: int, step: int, stats: Stats) -> tuple[Tensor, Tensor]:
        """Batch norm of block k as z * scale + shift, each (T, 1, C, 1, 1) (statistics per task)."""
        mean, var = stats[k]
        scale = torch.rsqrt(var + self.bn_eps) * bn_row(params[f"block{k}_bn_weight"], step)
        return scale, bn_row(params[f"block{k}_bn_bias"], step) - mean * scale

    @staticmethod
    def _relu_pool(z: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """ReLU(z * scale + shift) and 2×2 max-pool of z (T, N, C, H, W) (or of one task's (1, N, C, H, W)
        with its (1, C, 1, 1) scale and shift)."""
        return pool2(F.relu(torch.addcmul(shift, z, scale)))

    def trace(self, params: dict[str, Tensor], h: Tensor, step: int, *, mask: Tensor | None = None,
              stats: Stats | None = None, start: int = 0, stop: int | None = None,
              memo: Memo | None = None) -> tuple[list[Tensor], Stats]:
        """Run positions start -> stop (default: the logits); returns the hiddens at start..stop and the
        batch-norm statistics (given ones reused, missing ones from `h`'s masked images). `memo` is
        accepted for the protocol and unused (the learners already reuse a fixed body across steps)."""
        return trace_images(self, params, h, step, mask=mask, stats=stats, start=start, stop=stop)
