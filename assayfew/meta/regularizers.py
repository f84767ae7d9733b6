"""Meta-regularisers: strategies that any learner composes with (weight decay, CAVIA, Meta-dropout, MR-MAML,
TAML), registered by name in `REGULARIZERS` and built from the `regularizer` part of the core config.

A regulariser acts through a few hooks of `MetaLearner.meta_loss` (all skipped when there is none, so the
default path does no extra work):

- `attach(learner, generator)` (once, at build): add meta-parameters to `learner.params` (saved in
  checkpoints, trained by the outer optimiser), wrap the model with hidden-state transforms
  (`HookedModel`), choose what the inner loop adapts (`learner.set_adapted`).
- `sample(meta, generator)`: the meta-parameters one meta-iteration uses (MR-MAML's stochastic weights).
- `inner_extras(xs, steps, generator)`: entries added to the parameters of each inner step's support pass
  only (Meta-dropout's noise; `generator=None` at prediction: the noise-free value).
- `outer(loss, meta)`: the outer loss from the mixer's loss (per task (T,) when `per_task`) and the
  meta-parameters (an L2 term, a KL term, an inequality penalty).

Random draws come from the meta-iteration's generator after the mixer's plan, in a fixed order, so the
per-task reference (`assayfew.meta.reference`) reproduces them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from assayfew.meta.memo import Memo
from assayfew.meta.model import FunctionalModel, ModelBase, Stats, linear
from assayfew.meta.registry import Registry, option_names

if TYPE_CHECKING:
    from assayfew.meta.learners import MetaLearner

__all__ = ["Regularizer", "REGULARIZERS", "build_regularizer", "HookedModel", "NoRegularizer", "WeightDecay",
           "CAVIA", "MetaDropout", "MRMAML", "TAML", "theil_index"]

#: hook(params, hidden before the block, hidden after it) -> the hidden at that position
Hook = Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]


class HookedModel(ModelBase):
    """`base` with a transform of the hidden at some positions (`hooks`: position -> hook); the hidden
    `trace` returns at such a position is the transformed one. Everything else is the base model's; no
    fast path and no memoised affine maps (the `ModelBase` defaults)."""

    name: ClassVar[str] = "hooked"

    def __init__(self, base: FunctionalModel, hooks: dict[int, Hook]) -> None:
        self.base, self.hooks = base, dict(hooks)

    def __getattr__(self, item: str) -> Any:  # n_layers, head_names, widths, ... are the base model's
        if item in ("base", "hooks"):
            raise AttributeError(item)
        return getattr(self.base, item)

    def with_transforms(self) -> HookedModel:
        return HookedModel(self.base.with_transforms(), self.hooks)  # type: ignore[attr-defined]

    def trace(self, params: dict[str, Tensor], h: Tensor, step: int, *, mask: Tensor | None = None,
              stats: Stats | None = None, start: int = 0, stop: int | None = None,
              memo: Memo | None = None) -> tuple[list[Tensor], Stats]:
        stop = self.base.n_layers if stop is None else stop
        out, stats, pos = [h], dict(stats) if stats else {}, start
        for k in sorted(k for k in self.hooks if start < k <= stop):
            hs, stats = self.base.trace(params, out[-1], step, mask=mask, stats=stats, start=pos, stop=k, memo=memo)
            out += [*hs[1:-1], self.hooks[k](params, hs[-2], hs[-1])]
            pos = k
        if pos < stop:
            hs, stats = self.base.trace(params, out[-1], step, mask=mask, stats=stats, start=pos, stop=stop, memo=memo)
            out += hs[1:]
        return out, stats


def _width(model: FunctionalModel, position: int, who: str) -> int:
    width = getattr(model, "width", None)
    if width is None:
        raise ValueError(f"{who}: model {model.name!r} does not give its hidden widths")
    return int(width(position))


def _hidden_positions(model: FunctionalModel, positions: Sequence[int] | None, who: str) -> tuple[int, ...]:
    hidden = tuple(range(1, model.n_layers))
    chosen = hidden if positions is None else tuple(int(p) for p in positions)
    bad = [p for p in chosen if p not in hidden]
    if not chosen or bad:
        raise ValueError(f"{who}: layers must be hidden positions {list(hidden)}, got {list(chosen)}")
    return chosen


def _needs_inner_loop(learner: MetaLearner, who: str) -> None:
    if learner.closed_form:
        raise ValueError(f"regularizer {who} acts in the inner loop; learner {learner.name!r} fits its head in "
                         "closed form (no inner steps)")


def _per_task(v: Tensor) -> Tensor:
    """A (D,) or task-batched (T, D) vector shaped to broadcast over a (T, N, D) hidden."""
    return v.unsqueeze(-2) if v.dim() == 2 else v


def _draw(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws from `generator` (on its device), moved to `like`'s device and dtype."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device,
                       dtype=like.dtype).to(like.device)


class Regularizer:
    """Base class: no hooks act. Subclasses set `name`, take their hyperparameters as keyword arguments
    and override the hooks they need (see the module docstring)."""

    name: ClassVar[str] = "base"
    per_task: ClassVar[bool] = False  # outer() gets the per-task outer losses (T,) instead of their mean

    def options(self) -> dict:
        """This regulariser's hyperparameters (as its constructor takes them)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                ((k, getattr(self, k)) for k in option_names(type(self)))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options().items())})"

    def attach(self, learner: MetaLearner, generator: torch.Generator) -> None:
        """Called once by `build_learner`, before training or loading weights."""

    def sample(self, meta: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return meta

    def inner_extras(self, xs: Tensor, steps: int,
                     generator: torch.Generator | None) -> list[dict[str, Tensor]] | None:
        return None

    def outer(self, loss: Tensor, meta: dict[str, Tensor]) -> Tensor:
        return loss


REGULARIZERS: Registry[Regularizer] = Registry("regularizer")


def build_regularizer(name: str, **options: Any) -> Regularizer:
    """Regulariser by name (one of REGULARIZERS) with its own options (an unknown option is an error)."""
    return REGULARIZERS.build(name, **options)


@REGULARIZERS.register
class NoRegularizer(Regularizer):
    """No regularisation (the default; `build_learner` attaches nothing)."""

    name = "none"

    def __init__(self) -> None:
        pass


@REGULARIZERS.register
class WeightDecay(Regularizer):
    """L2 penalty decay/2 · Σ θ² on the network's meta-parameters (not the inner rates) added to the outer
    loss, so the outer optimiser's step shrinks them."""

    name = "weight_decay"

    def __init__(self, *, decay: float = 1e-4) -> None:
        if not decay > 0:
            raise ValueError("weight_decay: decay must be > 0")
        self.decay = float(decay)

    def outer(self, loss: Tensor, meta: dict[str, Tensor]) -> Tensor:
        squares = torch.stack([p.square().sum() for p in meta.values()]).sum()
        return loss + 0.5 * self.decay * squares


@REGULARIZERS.register
class CAVIA(Regularizer):
    """CAVIA (Zintgraf et al., 2019): a context vector φ (`context_dim`, zero at the start of each task's
    inner loop) is the only thing the inner loop adapts; the network is meta-learned in the outer loop only.
    φ conditions the hidden at position `layer` by FiLM, h ⊙ (1 + φ W_scale) + φ W_shift (the network's
    batch norm uses per-task support statistics, so φ concatenated to the input would be normalised away).
    The learner's inner rates (fixed, per step or per parameter) apply to φ."""

    name = "cavia"

    def __init__(self, *, context_dim: int = 100, layer: int = 1) -> None:
        if context_dim < 1:
            raise ValueError("cavia: context_dim must be >= 1")
        self.context_dim, self.layer = int(context_dim), int(layer)

    def attach(self, learner: MetaLearner, generator: torch.Generator) -> None:
        _needs_inner_loop(learner, self.name)
        (layer,) = _hidden_positions(learner.model, (self.layer,), self.name)
        width, c = _width(learner.model, layer, self.name), self.context_dim
        bound = 1.0 / math.sqrt(c)
        learner.params["cavia_context"] = nn.Parameter(torch.zeros(c))
        for which in ("scale", "shift"):
            learner.params[f"cavia_{which}"] = nn.Parameter((torch.rand(c, width, generator=generator) * 2 - 1) * bound)

        def film(params: dict[str, Tensor], h_prev: Tensor, h: Tensor) -> Tensor:
            phi = params["cavia_context"]
            scale, shift = phi @ params["cavia_scale"], phi @ params["cavia_shift"]
            return h * (1 + _per_task(scale)) + _per_task(shift)

        learner.model = HookedModel(learner.model, {layer: film})
        learner.set_adapted(("cavia_context",), memo_body=False)


@REGULARIZERS.register
class MetaDropout(Regularizer):
    """Meta-dropout (Lee et al., 2020): in the inner loop only, the hidden h_k of each position in `layers`
    (default: every hidden block) is multiplied by softplus(h_{k-1} W_k + b_k + ε), ε ~ N(0, 1) per unit,
    with the noise network (W_k, b_k; W_k = 0, softplus(b_k) = 1 at the start) meta-learned. The outer
    (query and mixing) pass and prediction run without it; adaptation at prediction uses ε = 0."""

    name = "meta_dropout"

    def __init__(self, *, layers: Sequence[int] | None = None) -> None:
        self.layers = None if layers is None else tuple(int(p) for p in layers)
        self._widths: dict[int, int] = {}

    def attach(self, learner: MetaLearner, generator: torch.Generator) -> None:
        _needs_inner_loop(learner, self.name)
        model = learner.model
        positions = _hidden_positions(model, self.layers, self.name)
        self._widths = {k: _width(model, k, self.name) for k in positions}

        def noisy(k: int) -> Hook:
            def hook(params: dict[str, Tensor], h_prev: Tensor, h: Tensor) -> Tensor:
                eps = params.get(f"metadropout_eps{k}")
                if eps is None:  # outer pass, prediction
                    return h
                mu = linear(h_prev, params[f"metadropout_weight{k}"], params[f"metadropout_bias{k}"])
                return h * F.softplus(mu + eps)
            return hook

        for k, width in self._widths.items():
            learner.params[f"metadropout_weight{k}"] = nn.Parameter(torch.zeros(_width(model, k - 1, self.name), width))
            learner.params[f"metadropout_bias{k}"] = nn.Parameter(torch.full((width,), math.log(math.e - 1)))
        learner.model = HookedModel(model, {k: noisy(k) for k in self._widths})
        learner.set_adapted(learner.adapt_names, memo_body=False)

    def inner_extras(self, xs: Tensor, steps: int,
                     generator: torch.Generator | None) -> list[dict[str, Tensor]] | None:
        t, n = xs.shape[:2]
        return [{f"metadropout_eps{k}": (xs.new_zeros(t, n, w) if generator is None else _draw((t, n, w), generator, xs))
                 for k, w in self._widths.items()} for _ in range(steps)]


@REGULARIZERS.register
class MRMAML(Regularizer):
    """MR-MAML(W) (Yin et al., 2020): the meta-parameters of `scope` ("body": the adaptable weights and
    biases outside the head; "all": all adaptable ones) are Gaussian, θ = μ + σ ε with a learned log σ per
    scalar (initially `init_sigma`), drawn once per meta-iteration; the outer loss gains
    beta · KL(N(μ, σ²) ‖ N(0, 1)) summed over them (weight-space information bottleneck). Adaptation at
    prediction starts from μ."""

    name = "mr_maml"

    def __init__(self, *, beta: float = 1e-5, scope: str = "body", init_sigma: float = 1e-3) -> None:
        if not beta > 0 or not init_sigma > 0:
            raise ValueError("mr_maml: beta and init_sigma must be > 0")
        if scope not in ("body", "all"):
            raise ValueError(f"mr_maml: scope must be 'body' or 'all', got {scope!r}")
        self.beta, self.scope, self.init_sigma = float(beta), scope, float(init_sigma)
        self._names: tuple[str, ...] = ()

    def attach(self, learner: MetaLearner, generator: torch.Generator) -> None:
        model = learner.model
        names = tuple(n for n in model.adaptable_names if self.scope == "all" or n not in model.head_names)
        if not names:
            raise ValueError(f"mr_maml: scope {self.scope!r} holds no parameters of model {model.name!r}")
        self._names = names
        for n in names:
            learner.params[f"mrmaml_logsigma_{n}"] = nn.Parameter(
                torch.full_like(learner.params[n].detach(), math.log(self.init_sigma)))

    def sample(self, meta: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        out = dict(meta)
        for n in self._names:
            out[n] = torch.addcmul(meta[n], meta[f"mrmaml_logsigma_{n}"].exp(), _draw(meta[n].shape, generator, meta[n]))
        return out

    def kl(self, meta: dict[str, Tensor]) -> Tensor:
        """KL(N(μ, σ²) ‖ N(0, 1)) summed over the stochastic meta-parameters."""
        terms = []
        for n in self._names:
            log_sigma = meta[f"mrmaml_logsigma_{n}"]
            terms.append(0.5 * ((2 * log_sigma).exp() + meta[n].square() - 1).sum() - log_sigma.sum())
        return torch.stack(terms).sum()

    def outer(self, loss: Tensor, meta: dict[str, Tensor]) -> Tensor:
        return loss + self.beta * self.kl(meta)


def theil_index(losses: Tensor) -> Tensor:
    """Theil index of non-negative values: mean of (x/μ) log(x/μ), 0 when all are equal."""
    ratio = losses / losses.mean().clamp_min(torch.finfo(losses.dtype).tiny)
    return torch.xlogy(ratio, ratio).mean()


@REGULARIZERS.register
class TAML(Regularizer):
    """TAML, inequality minimisation (Jamal & Qi, 2019): the outer loss is the mean task loss plus
    `weight` · the Theil index of the meta-batch's task losses (no task far better served than another)."""

    name = "taml"
    per_task = True

    def __init__(self, *, weight: float = 1.0) -> None:
        if not weight > 0:
            raise ValueError("taml: weight must be > 0")
        self.weight = float(weight)

    def outer(self, loss: Tensor, meta: dict[str, Tensor]) -> Tensor:
        return loss.mean() + self.weight * theil_index(loss)
