"""Gradient-based meta-learners (MAML, ANIL, ANIL++, Meta-SGD, T-Net) over a `FunctionalModel`.

All learners run a whole padded meta-batch at once: adapted parameters carry a leading task dimension and
one `torch.autograd.grad` call over the sum of per-task losses gives every task's inner gradient (tasks
are independent, so that equals per-task gradients). Second order goes through the inner loop
(`create_graph=True`). When only head parameters are adapted (ANIL family), the body is evaluated once
per batch-norm parameter set and reused across inner steps; with per-step batch norm (ANIL++) the first
block's linear map is still computed only once (with per-step batch norm in the last hidden block only,
that block's linear map runs once on the valid support and query rows together). A plain linear MSE head
gets its inner gradients in closed form (differentiable, no `autograd.grad` per step); with per-step batch norm in
the last hidden block only, all its steps run as one fused node (`assayfew.meta.headloop`), and mixing at a
position followed by an affine map mixes that map's memoised outputs instead of recomputing it.

Batch-norm statistics come from each task's valid support rows (see `assayfew.meta.model`).
Labels are used as given: centre them outside, or set `MLP(out_bias=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from assayfew.meta.batch import TaskBatch
from assayfew.meta.mixing import Mixer, MixPlan, _gather_rows, _mix
from assayfew.meta.headloop import head_inner_loop
from assayfew.meta.model import MLP, FunctionalModel, Stats, linear, masked_moments

__all__ = ["AdaptedParams", "MetaLearner", "MAML", "ANIL", "ANILPlusPlus", "MetaSGD", "TNet", "LEARNERS",
           "build_learner"]


@dataclass
class AdaptedParams:
    """Result of `MetaLearner.adapt`: per-task parameters, support statistics, batch-norm step index."""

    params: dict[str, Tensor]
    stats: Stats
    bn_step: int
    batched: bool  # True when adapt() got (T, N, D) inputs


def _step(param: Tensor, grad: Tensor, lr: Tensor | float) -> Tensor:
    """param - lr * grad (a fixed rate as one fused op: fewer passes over large adapted weights)."""
    if isinstance(lr, float):
        return torch.add(param, grad, alpha=-lr)
    return param - lr * grad


def _head_mse_grads(h: Tensor, w: Tensor, b: Tensor, y: Tensor, mask: Tensor,
                    create_graph: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-task masked MSE of the linear head pred = h w + b (h (T, N, H), w (T, H, 1), b (T, 1)) and its
    gradient w.r.t. w and b in closed form: r = 2 mask (pred - y) / n, dw = h^T r, db = sum r.
    Differentiable (as autograd.grad with create_graph) when `create_graph`, else detached."""
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


class _Body:
    """Body (all blocks but the head) outputs under fixed body parameters, memoised per BN step."""

    def __init__(self, model: FunctionalModel, params: dict[str, Tensor], xs: Tensor, ms: Tensor,
                 xq: Tensor | None, batch: TaskBatch | None = None) -> None:
        self.model, self.params, self.xs, self.ms, self.xq = model, params, xs, ms, xq
        self._cs: dict = {}
        self._cq: dict = {}
        if batch is not None:  # the batch memoises its sparse input form (reused across meta-iterations)
            self._cs["sparse_rows"] = lambda: batch.sparse_rows("s")
            self._cq["sparse_rows"] = lambda: batch.sparse_rows("q")
            self._cs["input_nnz"] = lambda: batch.input_nnz("s")
            self._cq["input_nnz"] = lambda: batch.input_nnz("q")
        self._s: dict[int, tuple[list[Tensor], Stats]] = {}
        self._q: dict[int, list[Tensor]] = {}
        self.mixed: dict = {}  # step-independent mixes of memoised linear outputs (see _View.run_mixed)
        self.mq = None if batch is None else batch.mq
        self.batch = batch
        self._primed = False

    def _prime(self) -> None:
        """MLP with per-step batch norm in the last hidden block only: its (step-independent) linear map
        runs once on the valid support and query rows together (one product, no padding rows); padding
        rows get 0 there (they are masked out of statistics, losses and mixing partners)."""
        self._primed = True
        m = self.model
        if (self.xq is None or self.mq is None or not isinstance(m, MLP) or m.per_step_blocks != "last"
                or m.n_layers < 3):
            return
        last = m.n_layers - 1
        if (self.batch is not None and self.params["block1_weight"].dim() == 2
                and m.uses_sparse_input(self.xs, self._cs["input_nnz"])
                and m.uses_sparse_input(self.xq, self._cq["input_nnz"])):  # block 1 of both in one product
            self._cs["lin1"], self._cq["lin1"] = m.joint_first_linear(self.params, [self.xs, self.xq],
                                                                      self.batch.sparse_rows("sq"))
        hs, stats = m.trace(self.params, self.xs, 0, mask=self.ms, stop=last - 1, cache=self._cs)
        hq = m.trace(self.params, self.xq, 0, stats=stats, stop=last - 1, cache=self._cq)[0][-1]
        (t, ns, width), nq = hs[-1].shape, hq.shape[1]
        assert self.batch is not None
        si, qi = self.batch.valid_rows("s"), self.batch.valid_rows("q")  # no device sync when given on the host
        rows = torch.cat([hs[-1].reshape(t * ns, width).index_select(0, si),
                          hq.reshape(t * nq, width).index_select(0, qi)])
        z = m.pre_activation(self.params, rows, last)
        n_s = si.numel()
        self._cs[f"lin{last}"] = z.new_zeros(t * ns, z.shape[-1]).index_copy(0, si, z[:n_s]).view(t, ns, -1)
        self._cq[f"lin{last}"] = z.new_zeros(t * nq, z.shape[-1]).index_copy(0, qi, z[n_s:]).view(t, nq, -1)

    def last_preact(self) -> tuple[Tensor, Tensor, Tensor]:
        """(MLP) the support pre-activation of the last hidden block and its support mean and variance,
        from the step-independent prefix (valid when only that block has per-step parameters)."""
        if not self._primed:
            self._prime()
        assert isinstance(self.model, MLP)
        last = self.model.n_layers - 1
        key, mkey = f"lin{last}", f"mom{last}"
        if key not in self._cs:
            hs = self.model.trace(self.params, self.xs, 0, mask=self.ms, stop=last - 1, cache=self._cs)[0]
            self._cs[key] = self.model.pre_activation(self.params, hs[-1], last)
        if mkey not in self._cs:
            self._cs[mkey] = masked_moments(self._cs[key], self.ms)
        return self._cs[key], *self._cs[mkey]

    def set_support_features(self, b: int, h: Tensor) -> None:
        """(MLP) use `h` as the support output of the last hidden block under batch-norm set b (computed
        elsewhere from `last_preact`, e.g. by the fused head loop)."""
        if b in self._s:
            return
        last = self.model.n_layers - 1
        _, mean, var = self.last_preact()
        hs, stats = self.model.trace(self.params, self.xs, b, mask=self.ms, stop=last - 1, cache=self._cs)
        self._s[b] = ([*hs, h], {**stats, last: (mean, var)})

    def support(self, b: int) -> tuple[list[Tensor], Stats]:
        if not self._primed:
            self._prime()
        if b not in self._s:
            self._s[b] = self.model.trace(self.params, self.xs, b, mask=self.ms,
                                          stop=self.model.n_layers - 1, cache=self._cs)
        return self._s[b]

    def query(self, b: int) -> list[Tensor]:
        if not self._primed:
            self._prime()
        if b not in self._q:
            assert self.xq is not None
            stats = self.support(b)[1]
            self._q[b] = self.model.trace(self.params, self.xq, b, stats=stats,
                                          stop=self.model.n_layers - 1, cache=self._cq)[0]
        return self._q[b]


class _View:
    """The adapted network after one inner step (implements mixing.EvalView)."""

    def __init__(self, learner: MetaLearner, params: dict[str, Tensor], b: int, batch: TaskBatch,
                 body: _Body | None) -> None:
        self.model = learner.model
        self.params, self.b, self.body = params, b, body
        self.xs, self.xq = batch.xs, batch.xq
        self.ys, self.ms, self.yq, self.mq = batch.ys, batch.ms, batch.yq, batch.mq
        self._s: list[Tensor] | None = None
        self._q: list[Tensor] | None = None
        self._stats: Stats | None = None

    def _support(self) -> list[Tensor]:
        if self._s is None:
            if self.body is not None:
                hs, self._stats = self.body.support(self.b)
                head = self.model.trace(self.params, hs[-1], self.b, stats=self._stats,
                                        start=self.model.n_layers - 1)[0][-1]
                self._s = [*hs, head]
            else:
                self._s, self._stats = self.model.trace(self.params, self.xs, self.b, mask=self.ms)
        return self._s

    @property
    def stats(self) -> Stats:
        self._support()
        assert self._stats is not None
        return self._stats

    def _query(self) -> list[Tensor]:
        if self._q is None:
            if self.body is not None:
                hq = self.body.query(self.b)
                head = self.model.trace(self.params, hq[-1], self.b, stats=self.stats,
                                        start=self.model.n_layers - 1)[0][-1]
                self._q = [*hq, head]
            else:
                self._q = self.model.trace(self.params, self.xq, self.b, stats=self.stats)[0]
        return self._q

    def hidden(self, which: str, position: int) -> Tensor:
        hs = self._support() if which == "s" else self._query()
        return hs[position]

    def run_from(self, h: Tensor, position: int) -> Tensor:
        pos = position % (self.model.n_layers + 1)
        return self.model.trace(self.params, h, self.b, stats=self.stats, start=pos)[0][-1]

    def _linear_out(self, which: str, pos: int) -> Tensor | None:
        """The (memoised) output of the linear map that follows position `pos`, or None."""
        if pos == self.model.n_layers - 1:  # the head: its output is the prediction
            return self.hidden(which, -1)
        if self.body is None or not isinstance(self.model, MLP):
            return None
        cache = self.body._cs if which == "s" else self.body._cq
        key = f"lin{pos + 1}"
        if key not in cache:  # not memoised yet (e.g. query rows before their first trace)
            self.hidden(which, pos)
        return cache.get(key)

    def run_mixed(self, a: str, idx: Tensor, b: str, lam: Tensor, position: int) -> Tensor:
        """Output for the mixed hidden lam * hidden(a)[idx] + (1 - lam) * hidden(b) at `position` (as
        run_from). The map after the position is affine, so mixing its (memoised) outputs is the same."""
        pos = position % (self.model.n_layers + 1)
        za = self._linear_out(a, pos) if pos < self.model.n_layers else None
        zb = self._linear_out(b, pos) if za is not None else None
        if za is None or zb is None:
            return self.run_from(_mix(_gather_rows(self.hidden(a, pos), idx), self.hidden(b, pos), lam), pos)
        if pos == self.model.n_layers - 1:  # mixing predictions: step-specific
            return _mix(_gather_rows(za, idx), zb, lam)
        # the memoised linear outputs are step-independent, so their mix is too (one plan per meta-batch)
        key = (a, b, pos)
        hit = None if self.body is None else self.body.mixed.get(key)
        if hit is None or hit[0] is not idx or hit[1] is not lam:
            hit = (idx, lam, _mix(_gather_rows(za, idx), zb, lam))
            if self.body is not None:
                self.body.mixed[key] = hit
        z = hit[2]
        assert isinstance(self.model, MLP)
        h = self.model.normalize(self.params, z, pos + 1, self.b, self.stats)
        return self.model.trace(self.params, h, self.b, stats=self.stats, start=pos + 1)[0][-1]

    def loss(self, pred: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        return self.model.loss(pred, y, mask)


class MetaLearner(nn.Module):
    """Holds all meta-parameters: the network initialisation (`params`) and learned inner rates (`lrs`).

    lr_mode: "fixed" (scalar `inner_lr`), "per_step" (one learned rate per adapted tensor and step,
    MAML++ LSLR), "per_param" (one learned rate per adapted scalar, Meta-SGD).
    msl_epochs > 0: MAML++ multi-step loss; non-final step weights decay linearly from 1/n to 0 over
    that many epochs. first_order_epochs: first-order inner loop during the first epochs.
    """

    name = "base"

    def __init__(self, model: FunctionalModel, *, adapt: Sequence[str], inner_steps: int = 5,
                 inner_lr: float = 0.01, lr_mode: str = "fixed", per_step_bn: bool = False,
                 msl_epochs: int = 0, first_order_epochs: int = 0, seed: int = 0) -> None:
        super().__init__()
        if inner_steps < 1:
            raise ValueError("inner_steps must be >= 1")
        if lr_mode not in ("fixed", "per_step", "per_param"):
            raise ValueError(f"unknown lr_mode {lr_mode!r}")
        self.model = model
        init = model.init_params(torch.Generator().manual_seed(seed))
        missing = [n for n in adapt if n not in init]
        if missing:
            raise ValueError(f"adapted parameters {missing} not in the model")
        self.params = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})
        self.adapt_names = tuple(adapt)
        self.head_only = set(self.adapt_names) <= set(model.head_names)
        # plain linear single-output head with masked MSE: inner gradients in closed form (no autograd.grad)
        self._closed_head = (type(model) is MLP and not model.transforms and model.out_dim == 1
                             and set(self.adapt_names) == {"head_weight", "head_bias"})
        # ... and when only the last hidden block has per-step batch norm, all steps run as one fused node
        self._fused_head = (self._closed_head and len(model.hidden) >= 1 and lr_mode in ("fixed", "per_step")
                            and (not per_step_bn or model.per_step_blocks == "last"))
        self.inner_steps = int(inner_steps)
        self.inner_lr = float(inner_lr)
        self.lr_mode = lr_mode
        self.per_step_bn = bool(per_step_bn)
        self.msl_epochs = int(msl_epochs)
        self.first_order_epochs = int(first_order_epochs)
        self.epoch = 0
        self.build_options: dict = {}  # set by build_learner (for learner_config)
        self.built_from: FunctionalModel = model
        lrs: dict[str, nn.Parameter] = {}
        for n in self.adapt_names:
            if lr_mode == "per_step":
                lrs[n] = nn.Parameter(torch.full((self.inner_steps,), self.inner_lr, device=init[n].device))
            elif lr_mode == "per_param":
                lrs[n] = nn.Parameter(torch.full_like(init[n], self.inner_lr))
        self.lrs = nn.ParameterDict(lrs)

    # ---- small pieces -------------------------------------------------------------------------
    def bn_step(self, step: int) -> int:
        return min(step, self.model.n_bn_sets - 1) if self.per_step_bn else 0

    def lr(self, name: str, step: int) -> Tensor | float:
        if self.lr_mode == "per_step":
            rates = self.lrs[name]
            return rates[min(step, rates.shape[0] - 1)]
        if self.lr_mode == "per_param":
            return self.lrs[name]
        return self.inner_lr

    def step_weights(self, epoch: int, steps: int) -> list[float]:
        """Weights of the outer loss after each inner step (MAML++ multi-step loss annealing)."""
        if self.msl_epochs <= 0 or epoch >= self.msl_epochs or steps == 1:
            return [0.0] * (steps - 1) + [1.0]
        w = (1.0 - epoch / self.msl_epochs) / steps
        return [w] * (steps - 1) + [1.0 - (steps - 1) * w]

    def epoch_end(self, epoch: int, n_epochs: int) -> None:
        """Annealing hook: records the next epoch (used when `meta_loss` gets no explicit epoch)."""
        self.epoch = epoch + 1

    def _support_pred(self, params: dict[str, Tensor], xs: Tensor, ms: Tensor, b: int,
                      body: _Body | None) -> tuple[Tensor, Stats]:
        if body is not None:
            hs, stats = body.support(b)
            pred = self.model.trace(params, hs[-1], b, stats=stats, start=self.model.n_layers - 1)[0][-1]
            return pred, stats
        hs, stats = self.model.trace(params, xs, b, mask=ms)
        return hs[-1], stats

    def _inner(self, meta: dict[str, Tensor], xs: Tensor, ys: Tensor, ms: Tensor, steps: int, *,
               create_graph: bool, body: _Body | None, leaf_each_step: bool = False,
               on_step: Callable[[int, dict[str, Tensor], int], None] | None = None,
               ) -> tuple[dict[str, Tensor], Tensor]:
        """Batched inner loop; returns the adapted parameters (adapted ones with a leading T) and the
        mean support loss before adaptation."""
        t = xs.shape[0]
        if body is not None and self._fused_head and steps > 0:
            return self._fused_inner(meta, body, ys, ms, steps, create_graph=create_graph, on_step=on_step)
        fast = {n: meta[n].unsqueeze(0).expand(t, *meta[n].shape) for n in self.adapt_names}
        if leaf_each_step:
            fast = {n: v.detach().clone().requires_grad_(True) for n, v in fast.items()}
        loss0 = xs.new_zeros(())
        for s in range(steps):
            b = self.bn_step(s)
            if body is not None and self._closed_head:
                loss, grads = _head_mse_grads(body.support(b)[0][-1], fast["head_weight"], fast["head_bias"],
                                              ys, ms, create_graph)
                grads = [grads[n] for n in fast]
            else:
                params = {**meta, **fast}
                pred, _ = self._support_pred(params, xs, ms, b, body)
                loss = self.model.loss(pred, ys, ms)
                grads = torch.autograd.grad(loss.sum(), list(fast.values()), create_graph=create_graph)
            if s == 0:
                loss0 = loss.detach().mean()
            fast = {n: _step(fast[n], g, self.lr(n, s)) for n, g in zip(list(fast), grads)}
            if leaf_each_step:
                fast = {n: v.detach().requires_grad_(True) for n, v in fast.items()}
            if on_step is not None:
                on_step(s, {**meta, **fast}, b)
        return {**meta, **fast}, loss0

    def _fused_inner(self, meta: dict[str, Tensor], body: _Body, ys: Tensor, ms: Tensor, steps: int, *,
                     create_graph: bool, on_step: Callable[[int, dict[str, Tensor], int], None] | None,
                     ) -> tuple[dict[str, Tensor], Tensor]:
        """`_inner` for a closed-form head on an MLP whose last hidden block alone has per-step batch norm:
        one fused autograd node for all steps (see `assayfew.meta.headloop`)."""
        model = self.model
        assert isinstance(model, MLP)
        last = model.n_layers - 1
        z, mean, var = body.last_preact()
        bn_w, bn_b = meta[f"block{last}_bn_weight"], meta[f"block{last}_bn_bias"]
        bn_rows = self._constant(("bn_rows", steps, bn_w.shape[0]), lambda: torch.tensor(
            [min(self.bn_step(s), bn_w.shape[0] - 1) for s in range(steps)], dtype=torch.long, device="cpu"), z.device)
        rates = [torch.stack([torch.as_tensor(self.lr(name, s), dtype=z.dtype, device=z.device)
                              for s in range(steps)]) for name in ("head_weight", "head_bias")
                 ] if self.lr_mode != "fixed" else [self._constant(("rates", steps, z.dtype), lambda: torch.full(
                     (steps,), self.inner_lr, dtype=z.dtype, device="cpu"), z.device)] * 2
        t = z.shape[0]
        w0 = meta["head_weight"].unsqueeze(0).expand(t, *meta["head_weight"].shape)
        b0 = meta["head_bias"].unsqueeze(0).expand(t, *meta["head_bias"].shape)
        ws, bs, hs, loss0 = head_inner_loop(z, mean, var, bn_w.index_select(0, bn_rows),
                                            bn_b.index_select(0, bn_rows), w0, b0, rates[0], rates[1], ys, ms,
                                            eps=model.bn_eps, slope=model.negative_slope, second_order=create_graph)
        params = meta
        for s in range(steps):
            body.set_support_features(self.bn_step(s), hs[s])
            params = {**meta, "head_weight": ws[s], "head_bias": bs[s]}
            if on_step is not None:
                on_step(s, params, self.bn_step(s))
        return params, loss0.mean()

    def _constant(self, key: tuple, make: Callable[[], Tensor], device: torch.device) -> Tensor:
        """A small constant tensor built on the host (`make`) once and kept on `device` (a host-to-device copy every
        meta-iteration would make the host wait for the GPU)."""
        cache = self.__dict__.setdefault("_constants", {})
        full_key = (*key, device)
        if full_key not in cache:
            cache[full_key] = make().to(device)
        return cache[full_key]

    # ---- public API ---------------------------------------------------------------------------
    def meta_loss(self, batch: TaskBatch, mixer: Mixer, *, generator: torch.Generator, epoch: int | None = None,
                  second_order: bool = True, plan: MixPlan | None = None) -> tuple[Tensor, dict]:
        """Scalar outer loss of a padded meta-batch (differentiable w.r.t. all meta-parameters) and info
        {"support_loss": mean support loss before adaptation, "outer_loss": the returned loss (detached),
        "layer": the mixing position drawn}. The mixer's random plan (layer, λ, pairs) is drawn once and
        shared by all multi-step-loss terms. `epoch=None` uses the epoch recorded by `epoch_end`. `plan`: a
        plan drawn beforehand (e.g. on the host, see `assayfew.trainstep`) instead of one from `generator`."""
        epoch = self.epoch if epoch is None else epoch
        if plan is None:
            plan = mixer.sample(batch, self.model.n_layers, generator)
        weights = self.step_weights(epoch, self.inner_steps)
        create_graph = second_order and epoch >= self.first_order_epochs
        meta = dict(self.params.items())
        body = _Body(self.model, meta, batch.xs, batch.ms, batch.xq, batch) if self.head_only else None
        terms: list[Tensor] = []

        def on_step(s: int, params: dict[str, Tensor], b: int) -> None:
            if weights[s] > 0:
                terms.append(weights[s] * mixer.loss(_View(self, params, b, batch, body), plan))

        _, loss0 = self._inner(meta, batch.xs, batch.ys, batch.ms, self.inner_steps,
                               create_graph=create_graph, body=body, on_step=on_step)
        total = torch.stack(terms).sum() if len(terms) > 1 else terms[0]
        return total, {"support_loss": loss0, "outer_loss": total.detach(), "layer": plan.layer}

    def adapt(self, xs: Tensor, ys: Tensor, ms: Tensor | None = None, *, steps: int | None = None,
              ridge_alpha: float | None = None) -> AdaptedParams:
        """Inference-time adaptation of one task (2-D xs) or a padded batch of tasks (3-D xs).

        ridge_alpha: instead of gradient steps, fit the head in closed form (ridge regression with an
        unpenalised intercept on the penultimate features, batch norm of the last inner step);
        head-only learners with a plain linear head only."""
        steps = self.inner_steps if steps is None else int(steps)
        batched = xs.dim() == 3
        if not batched:
            xs, ys = xs.unsqueeze(0), ys.unsqueeze(0)
            ms = None if ms is None else ms.unsqueeze(0)
        if ms is None:
            ms = torch.ones(xs.shape[:2], dtype=xs.dtype, device=xs.device)
        meta = {k: v.detach() for k, v in self.params.items()}
        if ridge_alpha is not None:
            return self._ridge_adapt(meta, xs, ys, ms, self.bn_step(max(steps - 1, 0)), float(ridge_alpha),
                                     batched)
        with torch.enable_grad():
            body = _Body(self.model, meta, xs, ms, None) if self.head_only else None
            with torch.no_grad():
                if body is not None:
                    for s in range(steps):
                        body.support(self.bn_step(s))
            params, _ = self._inner(meta, xs, ys, ms, steps, create_graph=False, body=body,
                                    leaf_each_step=True)
        params = {k: v.detach() for k, v in params.items()}
        b = self.bn_step(max(steps - 1, 0))
        with torch.no_grad():
            _, stats = self._support_pred(params, xs, ms, b, body)
        stats = {k: (m.detach(), v.detach()) for k, (m, v) in stats.items()}
        return AdaptedParams(params, stats, b, batched)

    @torch.no_grad()
    def _ridge_adapt(self, meta: dict[str, Tensor], xs: Tensor, ys: Tensor, ms: Tensor, b: int, alpha: float,
                     batched: bool) -> AdaptedParams:
        head = meta.get("head_weight")
        if (not self.head_only or head is None or head.dim() != 2 or head.shape[1] != 1
                or set(self.model.head_names) != {"head_weight", "head_bias"} or "head_transform" in meta):
            raise ValueError(f"ridge head: needs a head-only learner with a plain single-output linear head "
                             f"({self.name} does not qualify)")
        if alpha <= 0:
            raise ValueError("ridge head: ridge_alpha must be > 0")
        feats, stats = self.model.trace(meta, xs, b, mask=ms, stop=self.model.n_layers - 1)
        f, m = feats[-1], ms.unsqueeze(-1)
        cnt = m.sum(1, keepdim=True).clamp_min(1.0)
        f_mean = (f * m).sum(1, keepdim=True) / cnt  # (T, 1, H)
        y_mean = (ys.unsqueeze(-1) * m).sum(1, keepdim=True) / cnt  # (T, 1, 1)
        fc, yc = (f - f_mean) * m, (ys.unsqueeze(-1) - y_mean) * m
        n, h = f.shape[1], f.shape[2]
        if n <= h:  # dual form: w = Fc^T (Fc Fc^T + alpha I)^-1 yc; padding rows get zero coefficients
            gram = fc @ fc.transpose(1, 2) + alpha * torch.eye(n, dtype=f.dtype, device=f.device)
            w = fc.transpose(1, 2) @ torch.linalg.solve(gram, yc)
        else:
            gram = fc.transpose(1, 2) @ fc + alpha * torch.eye(h, dtype=f.dtype, device=f.device)
            w = torch.linalg.solve(gram, fc.transpose(1, 2) @ yc)
        bias = (y_mean - f_mean @ w).reshape(-1, 1)
        params = {**meta, "head_weight": w, "head_bias": bias}
        return AdaptedParams(params, {k: (a.detach(), v.detach()) for k, (a, v) in stats.items()}, b, batched)

    @torch.no_grad()
    def predict(self, adapted: AdaptedParams, x: Tensor) -> Tensor:
        """Predictions for x ((N, D) after a 2-D adapt, (T, N, D) after a batched one); rows independent."""
        if not adapted.batched:
            x = x.unsqueeze(0)
        out = self.model.trace(adapted.params, x, adapted.bn_step, stats=adapted.stats)[0][-1]
        if out.shape[-1] == 1:
            out = out.squeeze(-1)
        return out if adapted.batched else out.squeeze(0)

    @torch.no_grad()
    def predict_many(self, adapted: Sequence[AdaptedParams], x: Tensor, memo: dict | None = None) -> list[Tensor]:
        """[predict(a, x) for a in adapted] for 2-D adaptations; when they share block 1's parameters
        (head-only learners: adaptation leaves the body unchanged) its linear map on x runs once.
        `memo`: x's sparse form and non-zero count as memoised callables ("sparse_rows", "input_nnz"), when
        the caller shares them between learners."""
        first = ("block1_weight", "block1_bias", "block1_transform")

        def body_key(a: AdaptedParams) -> tuple:
            return tuple((a.params[k].data_ptr(), tuple(a.params[k].shape)) for k in first if k in a.params)

        if (not isinstance(self.model, MLP) or any(a.batched for a in adapted)
                or len({body_key(a) for a in adapted}) > 1):
            return [self.predict(a, x) for a in adapted]
        seen: dict = dict(memo or {})  # the first trace memoises block 1's linear map ("lin1") here
        out = []
        for a in adapted:
            cache = {"lin1": seen["lin1"]} if "lin1" in seen else seen
            pred = self.model.trace(a.params, x.unsqueeze(0), a.bn_step, stats=a.stats, cache=cache)[0][-1]
            out.append(pred.squeeze(-1).squeeze(0) if pred.shape[-1] == 1 else pred.squeeze(0))
        return out

    def adapt_and_predict(self, xs: Tensor, ys: Tensor, xq: Tensor, *, steps: int | None = None,
                          ridge_alpha: float | None = None) -> Tensor:
        return self.predict(self.adapt(xs, ys, steps=steps, ridge_alpha=ridge_alpha), xq)


class MAML(MetaLearner):
    name = "maml"

    def __init__(self, model: FunctionalModel, **kw) -> None:
        super().__init__(model, adapt=model.adaptable_names, **kw)


class ANIL(MetaLearner):
    name = "anil"

    def __init__(self, model: FunctionalModel, **kw) -> None:
        super().__init__(model, adapt=model.head_names, **kw)


class ANILPlusPlus(MetaLearner):
    """ANIL + MAML++: per-step BN parameters, learned per-step inner rates, multi-step loss annealing."""

    name = "anil++"

    def __init__(self, model: FunctionalModel, *, msl_epochs: int = 10, first_order_epochs: int = 0,
                 per_step_bn: bool = True, **kw) -> None:
        super().__init__(model, adapt=model.head_names, lr_mode="per_step", per_step_bn=per_step_bn,
                         msl_epochs=msl_epochs, first_order_epochs=first_order_epochs, **kw)


class MetaSGD(MetaLearner):
    """Learned per-parameter inner rates; adapts `adapt` = "all" (default) or "head" parameters."""

    name = "metasgd"

    def __init__(self, model: FunctionalModel, *, adapt: str = "all", **kw) -> None:
        names = model.adaptable_names if adapt == "all" else model.head_names
        super().__init__(model, adapt=names, lr_mode="per_param", **kw)


class TNet(MetaLearner):
    """T-Net (Lee & Choi, 2018), simplified: meta-learned transformation matrices (identity at init) after
    each linear map; the inner loop adapts the task weights of the head only (`adapt="all"`: all linear
    weights and biases), never the transforms."""

    name = "tnet"

    def __init__(self, model: FunctionalModel, *, adapt: str = "head", **kw) -> None:
        if not getattr(model, "transforms", False):
            if not hasattr(model, "with_transforms"):
                raise ValueError("tnet needs a model with transformation layers (with_transforms())")
            model = model.with_transforms()  # type: ignore[attr-defined]
        names = model.adaptable_names if adapt == "all" else model.head_names
        super().__init__(model, adapt=names, **kw)


LEARNERS: dict[str, type[MetaLearner]] = {c.name: c for c in (MAML, ANIL, ANILPlusPlus, MetaSGD, TNet)}


def build_learner(name: str, model: FunctionalModel | None = None, *, inner_steps: int = 5,
                  inner_lr: float = 0.01, **opts) -> MetaLearner:
    """Learner by name (one of LEARNERS). `opts` go to the learner (e.g. msl_epochs, first_order_epochs,
    per_step_bn, adapt, seed)."""
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; choose from {sorted(LEARNERS)}")
    model = MLP() if model is None else model
    learner = LEARNERS[name](model, inner_steps=inner_steps, inner_lr=inner_lr, **opts)
    learner.build_options = {"inner_steps": inner_steps, "inner_lr": inner_lr, **opts}
    learner.built_from = model
    return learner
