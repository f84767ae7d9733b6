"""Gradient-based meta-learners (MAML, ANIL, ANIL++, Meta-SGD, T-Net) and a closed-form ridge head (R2D2)
over any model of the protocol in `assayfew.meta.model`, for any task kind (`assayfew.meta.kinds`).

Each learner is a small class that owns its options and its adaptation: which parameters it adapts
(`adapt_names`), its inner rates (`lr`: fixed, learned per step (MAML++), or per parameter (Meta-SGD)) and
its inner loop (`inner_loop`; the ridge head replaces it with a closed-form fit). Learners are registered
by name in `LEARNERS` and built with `build_learner` (options checked against the learner's own).

All learners run a whole padded meta-batch at once: adapted parameters carry a leading task dimension and
one `torch.autograd.grad` call over the sum of per-task losses gives every task's inner gradient (tasks
are independent, so that equals per-task gradients). Second order goes through the inner loop
(`create_graph=True`). When only head parameters are adapted (ANIL family), the body is evaluated once
per batch-norm parameter set and memoised (`assayfew.meta.memo.Memo`). A model may offer a fast path for
such a head-only loop (`head_fast_path`: closed-form head gradients, or all steps in one fused node); it
checks its own preconditions, and `fast_path=False` forces the generic path.

Batch-norm statistics come from each task's valid support rows (see `assayfew.meta.model`).
Labels are used as given: centre them outside, or set `MLP(out_bias=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from assayfew.meta.batch import TaskBatch
from assayfew.meta.kinds import Regression, TaskKind
from assayfew.meta.memo import Memo
from assayfew.meta.mixing import Mixer, MixPlan, ViewBase, gather_rows, mix, select_tasks
from assayfew.meta.model import MLP, FunctionalModel, HeadFastPath, Stats
from assayfew.meta.registry import Registry, option_defaults

if TYPE_CHECKING:
    from assayfew.meta.regularizers import Regularizer

__all__ = ["AdaptedParams", "MetaLearner", "MAML", "ANIL", "ANILPlusPlus", "MetaSGD", "TNet", "RidgeHead",
           "LEARNERS", "build_learner", "ridge_head"]


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


def ridge_head(f: Tensor, target: Tensor, mask: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Per-task ridge regression with an unpenalised intercept: features f (T, N, H), targets (T, N) or
    (T, N, C), mask (T, N) -> weight (T, H, C), bias (T, C). Dual form when N <= H (padding rows get zero
    coefficients). Differentiable."""
    y = target.unsqueeze(-1) if target.dim() == 2 else target
    m = mask.unsqueeze(-1)
    cnt = m.sum(1, keepdim=True).clamp_min(1.0)
    f_mean = (f * m).sum(1, keepdim=True) / cnt  # (T, 1, H)
    y_mean = (y * m).sum(1, keepdim=True) / cnt  # (T, 1, C)
    fc, yc = (f - f_mean) * m, (y - y_mean) * m
    n, h = f.shape[1], f.shape[2]
    if n <= h:  # w = Fc^T (Fc Fc^T + alpha I)^-1 yc
        gram = fc @ fc.transpose(1, 2) + alpha * torch.eye(n, dtype=f.dtype, device=f.device)
        w = fc.transpose(1, 2) @ torch.linalg.solve(gram, yc)
    else:
        gram = fc.transpose(1, 2) @ fc + alpha * torch.eye(h, dtype=f.dtype, device=f.device)
        w = torch.linalg.solve(gram, fc.transpose(1, 2) @ yc)
    return w, (y_mean - f_mean @ w).squeeze(1)


class _Body:
    """Body (all blocks but the head) outputs under fixed body parameters, memoised per BN step."""

    def __init__(self, model: FunctionalModel, params: dict[str, Tensor], xs: Tensor, ms: Tensor,
                 batch: TaskBatch | None = None) -> None:
        self.model, self.params, self.xs, self.ms = model, params, xs, ms
        self.xq = None if batch is None else batch.xq
        self.mq = None if batch is None else batch.mq
        self.memo_s, self.memo_q = Memo(), Memo()
        self.batch = batch
        if batch is not None:  # the batch memoises its sparse input form (reused across meta-iterations)
            self.memo_s.sparse_rows, self.memo_s.input_nnz = (lambda: batch.sparse_rows("s")), (lambda: batch.input_nnz("s"))
            self.memo_q.sparse_rows, self.memo_q.input_nnz = (lambda: batch.sparse_rows("q")), (lambda: batch.input_nnz("q"))
        self._s: dict[int, tuple[list[Tensor], Stats]] = {}
        self._q: dict[int, list[Tensor]] = {}
        self.mixed: dict[tuple, tuple] = {}  # step-independent mixes of memoised affine outputs (_View.run_mixed)
        self._primed = False

    def prime(self) -> None:
        """Let the model fill both memos together (once, before the first trace)."""
        if self._primed:
            return
        self._primed = True
        if self.xq is not None and self.mq is not None and self.batch is not None:
            batch = self.batch
            self.model.prime_memos(self.params, self.xs, self.ms, self.xq, self.mq, self.memo_s, self.memo_q,
                                   lambda: batch.sparse_rows("sq"), batch.valid_rows)

    def set_support(self, b: int, trace: tuple[list[Tensor], Stats]) -> None:
        """Use `trace` (hiddens to the last hidden block, statistics) as the support trace under BN set b."""
        self._s.setdefault(b, trace)

    def support(self, b: int) -> tuple[list[Tensor], Stats]:
        self.prime()
        if b not in self._s:
            self._s[b] = self.model.trace(self.params, self.xs, b, mask=self.ms, stop=self.model.n_layers - 1,
                                          memo=self.memo_s)
        return self._s[b]

    def query(self, b: int) -> list[Tensor]:
        self.prime()
        if b not in self._q:
            assert self.xq is not None
            stats = self.support(b)[1]
            self._q[b] = self.model.trace(self.params, self.xq, b, stats=stats, stop=self.model.n_layers - 1,
                                          memo=self.memo_q)[0]
        return self._q[b]


class _View(ViewBase):
    """The adapted network after one inner step (implements mixing.EvalView)."""

    def __init__(self, learner: MetaLearner, params: dict[str, Tensor], b: int, batch: TaskBatch,
                 body: _Body | None) -> None:
        self.model, self.kind = learner.model, learner.kind
        self.per_task = learner.adapt_names  # parameters with a leading task dimension
        self.params, self.b, self.body = params, b, body
        self.xs, self.xq = batch.xs, batch.xq
        self.ys, self.ms, self.yq, self.mq = batch.ys, batch.ms, batch.yq, batch.mq
        self._s: list[Tensor] | None = None
        self._q: list[Tensor] | None = None
        self._stats: Stats | None = None
        self._subsets: dict[int, tuple[Tensor, dict[str, Tensor], Stats]] = {}

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

    def _restricted(self, tasks: Tensor | None) -> tuple[dict[str, Tensor], Stats]:
        """Parameters and statistics of a subset of the tasks (memoised per subset tensor)."""
        if tasks is None:
            return self.params, self.stats
        hit = self._subsets.get(id(tasks))
        if hit is None or hit[0] is not tasks:
            params = {n: (p.index_select(0, tasks) if n in self.per_task else p) for n, p in self.params.items()}
            stats = {k: (m.index_select(0, tasks), v.index_select(0, tasks)) for k, (m, v) in self.stats.items()}
            hit = (tasks, params, stats)
            self._subsets[id(tasks)] = hit
        return hit[1], hit[2]

    def run_from(self, h: Tensor, position: int, tasks: Tensor | None = None) -> Tensor:
        pos = position % (self.model.n_layers + 1)
        params, stats = self._restricted(tasks)
        return self.model.trace(params, h, self.b, stats=stats, start=pos)[0][-1]

    def _affine_out(self, which: str, pos: int) -> Tensor | None:
        """The (memoised) output of the affine map that follows position `pos`, or None."""
        if pos == self.model.n_layers - 1:  # the head: its output is the prediction
            return self.hidden(which, -1)
        if self.body is None:
            return None
        memo = self.body.memo_s if which == "s" else self.body.memo_q
        if pos + 1 not in memo.linear:  # not memoised yet (e.g. query rows before their first trace)
            self.hidden(which, pos)
        return memo.linear.get(pos + 1)

    def run_mixed(self, a: str, idx: Tensor, b: str, lam: Tensor, position: int,
                  tasks: Tensor | None = None) -> Tensor:
        """Output for the mixed hidden lam * hidden(a)[idx] + (1 - lam) * hidden(b) at `position` (as
        run_from). Where the map after the position is affine (`model.affine_after`), mixing its memoised
        outputs is the same and the mix is step-independent (one per meta-batch) below the head."""
        pos = position % (self.model.n_layers + 1)
        za = self._affine_out(a, pos) if pos < self.model.n_layers and self.model.affine_after(pos) else None
        zb = self._affine_out(b, pos) if za is not None else None
        if za is None or zb is None:
            return super().run_mixed(a, idx, b, lam, pos, tasks)
        if pos == self.model.n_layers - 1:  # mixing predictions: step-specific
            return mix(gather_rows(select_tasks(za, tasks), select_tasks(idx, tasks)), select_tasks(zb, tasks),
                       select_tasks(lam, tasks))
        key = (a, b, pos)
        hit = None if self.body is None else self.body.mixed.get(key)
        if hit is None or hit[0] is not idx or hit[1] is not lam or hit[2] is not tasks:
            z = mix(gather_rows(select_tasks(za, tasks), select_tasks(idx, tasks)), select_tasks(zb, tasks),
                    select_tasks(lam, tasks))
            hit = (idx, lam, tasks, z)
            if self.body is not None:
                self.body.mixed[key] = hit
        params, stats = self._restricted(tasks)
        return self.model.from_linear(params, hit[3], pos, self.b, stats)

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return self.kind.loss(pred, target, mask)


class MetaLearner(nn.Module):
    """Holds all meta-parameters: the network initialisation (`params`) and learned inner rates (`lrs`).

    Subclasses set `name` and `lr_mode` ("fixed": scalar `inner_lr`; "per_step": one learned rate per adapted
    tensor and step, MAML++ LSLR; "per_param": one learned rate per adapted scalar, Meta-SGD) and choose the
    adapted parameters. msl_epochs > 0: MAML++ multi-step loss; non-final step weights decay linearly from 1/n
    to 0 over that many epochs. first_order_epochs: first-order inner loop during the first epochs.
    `kind`: the task kind (default regression); the model's output width must match it.
    """

    name: ClassVar[str] = "base"
    lr_mode: ClassVar[str] = "fixed"
    closed_form: ClassVar[bool] = False  # the ridge head: adaptation is a closed-form fit, not steps

    def __init__(self, model: FunctionalModel, kind: TaskKind | None, adapt: Sequence[str], *, inner_steps: int = 5,
                 inner_lr: float = 0.01, per_step_bn: bool = False, msl_epochs: int = 0,
                 first_order_epochs: int = 0, seed: int = 0, fast_path: bool = True) -> None:
        super().__init__()
        if inner_steps < 1:
            raise ValueError("inner_steps must be >= 1")
        if first_order_epochs < 0 or msl_epochs < 0:
            raise ValueError("first_order_epochs and msl_epochs must be >= 0")
        self.model = model
        self.kind = Regression() if kind is None else kind
        if int(model.out_dim) != self.kind.out_dim:
            raise ValueError(f"model has {model.out_dim} outputs but a {self.kind.name} task kind needs "
                             f"{self.kind.out_dim}")
        init = model.init_params(torch.Generator().manual_seed(seed))
        self.params = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})
        self.inner_steps = int(inner_steps)
        self.inner_lr = float(inner_lr)
        self.per_step_bn = bool(per_step_bn)
        self.msl_epochs = int(msl_epochs)
        self.first_order_epochs = int(first_order_epochs)
        self.allow_fast_path = bool(fast_path)
        self.epoch = 0
        self.build_options: dict = {}  # set by build_learner (for the config)
        self.built_from: FunctionalModel = model
        self.regularizer: Regularizer | None = None  # set by build_learner (None: no regulariser, no extra work)
        self.set_adapted(adapt)

    def set_adapted(self, adapt: Sequence[str], *, memo_body: bool = True) -> None:
        """Adapt the parameters `adapt` in the inner loop (fresh inner rates for them). `memo_body=False`:
        never memoise the body (a regulariser changes it inside the inner loop), so no head fast path."""
        missing = [n for n in adapt if n not in self.params]
        if missing:
            raise ValueError(f"adapted parameters {missing} not in the model")
        self.adapt_names = tuple(adapt)
        self.head_only = memo_body and set(self.adapt_names) <= set(self.model.head_names)
        self.fast_path: HeadFastPath | None = None
        if self.allow_fast_path and self.head_only:
            self.fast_path = self.model.head_fast_path(self.kind, self.adapt_names, lr_mode=self.lr_mode,
                                                       per_step_bn=self.per_step_bn)
        lrs: dict[str, nn.Parameter] = {}
        for n in self.adapt_names:
            p = self.params[n]
            if self.lr_mode == "per_step":
                lrs[n] = nn.Parameter(torch.full((self.inner_steps,), self.inner_lr, device=p.device, dtype=p.dtype))
            elif self.lr_mode == "per_param":
                lrs[n] = nn.Parameter(torch.full_like(p.detach(), self.inner_lr))
        self.lrs = nn.ParameterDict(lrs)

    # ---- small pieces -------------------------------------------------------------------------
    def bn_step(self, step: int) -> int:
        return min(step, self.model.n_bn_sets - 1) if self.per_step_bn else 0

    def lr(self, name: str, step: int) -> Tensor | float:
        """Inner rate of adapted parameter `name` at inner step `step`."""
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

    def inner_loop(self, meta: dict[str, Tensor], xs: Tensor, ys: Tensor, ms: Tensor, steps: int, *,
                   create_graph: bool, body: _Body | None, leaf_each_step: bool = False,
                   on_step: Callable[[int, dict[str, Tensor], int], None] | None = None,
                   extras: Sequence[dict[str, Tensor]] | None = None,
                   ) -> tuple[dict[str, Tensor], Tensor]:
        """Batched inner loop; returns the adapted parameters (adapted ones with a leading T) and the
        mean support loss before adaptation. `on_step(s, params, bn_step)` sees the parameters after each step.
        `extras[s]`: entries added to the parameters of step s's support pass only (a regulariser's noise)."""
        t = xs.shape[0]
        fast_path = self.fast_path
        if body is not None and fast_path is not None and fast_path.fused and steps > 0:
            return self._fused_inner(meta, body, ys, ms, steps, create_graph=create_graph, on_step=on_step)
        target = self.kind.targets(ys)
        fast = {n: meta[n].unsqueeze(0).expand(t, *meta[n].shape) for n in self.adapt_names}
        if leaf_each_step:
            fast = {n: v.detach().clone().requires_grad_(True) for n, v in fast.items()}
        loss0 = xs.new_zeros(())
        for s in range(steps):
            b = self.bn_step(s)
            if body is not None and fast_path is not None:  # closed-form head gradients (the model's offer)
                loss, named = self.model.head_grads(body.support(b)[0][-1], fast["head_weight"],  # type: ignore[attr-defined]
                                                    fast["head_bias"], target, ms, create_graph)
                grads = [named[n] for n in fast]
            else:
                inner = {**meta, **fast} if extras is None else {**meta, **fast, **extras[s]}
                pred, _ = self._support_pred(inner, xs, ms, b, body)
                loss = self.kind.loss(pred, target, ms)
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
        """`inner_loop` through the model's fused head loop (one autograd node for all steps)."""
        body.prime()
        dtype, device = ys.dtype, ys.device
        if self.lr_mode == "fixed":
            rates = [self._constant(("rates", steps, dtype), lambda: torch.full((steps,), self.inner_lr, dtype=dtype,
                                                                                device="cpu"), device)] * 2
        else:
            rates = [torch.stack([torch.as_tensor(self.lr(name, s), dtype=dtype, device=device)
                                  for s in range(steps)]) for name in ("head_weight", "head_bias")]
        rows = self._constant(("bn_rows", steps), lambda: torch.tensor([self.bn_step(s) for s in range(steps)],
                                                                        dtype=torch.long, device="cpu"), device)
        ws, bs, traces, loss0 = self.model.fused_head_inner(  # type: ignore[attr-defined]
            meta, body.xs, body.ms, body.memo_s, ys, rows, rates[0], rates[1], second_order=create_graph)
        params = meta
        for s in range(steps):
            body.set_support(self.bn_step(s), traces[s])
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
        "layers": the mixing position drawn for each task, "layer": that position when all tasks share it}.
        The mixer's random plan is drawn once and shared by all multi-step-loss terms. `epoch=None` uses the
        epoch recorded by `epoch_end`. `plan`: a plan drawn beforehand (e.g. on the host, see
        `assayfew.trainstep`) instead of one from `generator`."""
        epoch = self.epoch if epoch is None else epoch
        if plan is None:
            plan = mixer.sample(batch, self.model.n_layers, generator, self.kind)
        weights = self.step_weights(epoch, self.inner_steps)
        create_graph = second_order and epoch >= self.first_order_epochs
        meta = dict(self.params.items())
        reg, extras = self.regularizer, None
        if reg is not None:  # its random draws follow the plan's: stochastic meta-weights, then inner noise
            meta = reg.sample(meta, generator)
            extras = reg.inner_extras(batch.xs, self.inner_steps, generator)
        per_task = reg is not None and reg.per_task
        body = _Body(self.model, meta, batch.xs, batch.ms, batch) if self.head_only else None
        terms: list[Tensor] = []

        def on_step(s: int, params: dict[str, Tensor], b: int) -> None:
            if weights[s] > 0:
                view = _View(self, params, b, batch, body)
                terms.append(weights[s] * (mixer.task_losses(view, plan) if per_task else mixer.loss(view, plan)))

        _, loss0 = self.inner_loop(meta, batch.xs, batch.ys, batch.ms, self.inner_steps,
                                   create_graph=create_graph, body=body, on_step=on_step, extras=extras)
        total = torch.stack(terms).sum(0) if len(terms) > 1 else terms[0]
        if reg is not None:
            total = reg.outer(total, dict(self.params.items()))
        return total, {"support_loss": loss0, "outer_loss": total.detach(), "layers": plan.layers,
                       "layer": plan.layer}

    def adapt(self, xs: Tensor, ys: Tensor, ms: Tensor | None = None, *, steps: int | None = None,
              ridge_alpha: float | None = None) -> AdaptedParams:
        """Inference-time adaptation of one task (2-D xs) or a padded batch of tasks (3-D xs).

        steps: inner steps (default the learner's; 0 = no adaptation). ridge_alpha: instead of gradient
        steps, fit the head in closed form (ridge regression with an unpenalised intercept on the
        penultimate features, batch norm of the last inner step); head-only learners with a plain linear head
        only."""
        steps = self.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError("adapt: steps must be >= 0")
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
            body = _Body(self.model, meta, xs, ms) if self.head_only else None
            with torch.no_grad():
                if body is not None:
                    for s in range(steps):
                        body.support(self.bn_step(s))
            extras = None if self.regularizer is None else self.regularizer.inner_extras(xs, steps, None)
            params, _ = self.inner_loop(meta, xs, ys, ms, steps, create_graph=False, body=body,
                                        leaf_each_step=True, extras=extras)
        params = {k: v.detach() for k, v in params.items()}
        b = self.bn_step(max(steps - 1, 0))
        with torch.no_grad():
            _, stats = self._support_pred(params, xs, ms, b, body)
        stats = {k: (m.detach(), v.detach()) for k, (m, v) in stats.items()}
        return AdaptedParams(params, stats, b, batched)

    def _check_ridge_head(self, meta: dict[str, Tensor]) -> None:
        head = meta.get("head_weight")
        if (not self.head_only or head is None or head.dim() != 2
                or set(self.model.head_names) != {"head_weight", "head_bias"} or "head_transform" in meta):
            raise ValueError(f"ridge head: needs a head-only learner with a plain linear head "
                             f"({self.name} does not qualify)")

    @torch.no_grad()
    def _ridge_adapt(self, meta: dict[str, Tensor], xs: Tensor, ys: Tensor, ms: Tensor, b: int, alpha: float,
                     batched: bool) -> AdaptedParams:
        self._check_ridge_head(meta)
        if alpha <= 0:
            raise ValueError("ridge head: ridge_alpha must be > 0")
        feats, stats = self.model.trace(meta, xs, b, mask=ms, stop=self.model.n_layers - 1)
        w, bias = ridge_head(feats[-1], self.kind.targets(ys), ms, alpha)
        params = {**meta, "head_weight": w, "head_bias": bias}
        return AdaptedParams(params, {k: (a.detach(), v.detach()) for k, (a, v) in stats.items()}, b, batched)

    @torch.no_grad()
    def predict(self, adapted: AdaptedParams, x: Tensor, memo: Memo | None = None) -> Tensor:
        """Predictions for x ((N, D) after a 2-D adapt, (T, N, D) after a batched one); rows independent.
        Regression: (…, N); classification: logits (…, N, C). `memo`: x's sparse form and non-zero count
        (`Memo.sparse_rows` / `input_nnz`) when the caller shares them between learners; nothing else of it
        is read or written, since the body's outputs depend on each adaptation's statistics."""
        if not adapted.batched:
            x = x.unsqueeze(0)
        own = None if memo is None else Memo(sparse_rows=memo.sparse_rows, input_nnz=memo.input_nnz)
        out = self.model.trace(adapted.params, x, adapted.bn_step, stats=adapted.stats, memo=own)[0][-1]
        if out.shape[-1] == 1:
            out = out.squeeze(-1)
        return out if adapted.batched else out.squeeze(0)

    def adapt_and_predict(self, xs: Tensor, ys: Tensor, xq: Tensor, *, steps: int | None = None,
                          ridge_alpha: float | None = None) -> Tensor:
        return self.predict(self.adapt(xs, ys, steps=steps, ridge_alpha=ridge_alpha), xq)


LEARNERS: Registry[MetaLearner] = Registry("learner")


@LEARNERS.register
class MAML(MetaLearner):
    """MAML: every adaptable parameter, fixed inner rate."""

    name = "maml"

    def __init__(self, model: FunctionalModel, kind: TaskKind | None = None, /, *, inner_steps: int = 5,
                 inner_lr: float = 0.01, first_order_epochs: int = 0, seed: int = 0, fast_path: bool = True) -> None:
        super().__init__(model, kind, model.adaptable_names, inner_steps=inner_steps, inner_lr=inner_lr,
                         first_order_epochs=first_order_epochs, seed=seed, fast_path=fast_path)


@LEARNERS.register
class ANIL(MetaLearner):
    """ANIL: MAML on the head only."""

    name = "anil"

    def __init__(self, model: FunctionalModel, kind: TaskKind | None = None, /, *, inner_steps: int = 5,
                 inner_lr: float = 0.01, first_order_epochs: int = 0, seed: int = 0, fast_path: bool = True) -> None:
        super().__init__(model, kind, model.head_names, inner_steps=inner_steps, inner_lr=inner_lr,
                         first_order_epochs=first_order_epochs, seed=seed, fast_path=fast_path)


@LEARNERS.register
class ANILPlusPlus(MetaLearner):
    """ANIL + MAML++: per-step BN parameters, learned per-step inner rates, multi-step loss annealing."""

    name = "anil++"
    lr_mode = "per_step"

    def __init__(self, model: FunctionalModel, kind: TaskKind | None = None, /, *, inner_steps: int = 5,
                 inner_lr: float = 0.01, msl_epochs: int = 10, first_order_epochs: int = 0, per_step_bn: bool = True,
                 seed: int = 0, fast_path: bool = True) -> None:
        super().__init__(model, kind, model.head_names, inner_steps=inner_steps, inner_lr=inner_lr,
                         per_step_bn=per_step_bn, msl_epochs=msl_epochs, first_order_epochs=first_order_epochs,
                         seed=seed, fast_path=fast_path)


def _scope(model: FunctionalModel, adapt: str) -> tuple[str, ...]:
    if adapt not in ("all", "head"):
        raise ValueError(f"adapt must be 'all' or 'head', got {adapt!r}")
    return tuple(model.adaptable_names) if adapt == "all" else tuple(model.head_names)


@LEARNERS.register
class MetaSGD(MetaLearner):
    """Learned per-parameter inner rates; adapts `adapt` = "all" (default) or "head" parameters."""

    name = "metasgd"
    lr_mode = "per_param"

    def __init__(self, model: FunctionalModel, kind: TaskKind | None = None, /, *, adapt: str = "all",
                 inner_steps: int = 5, inner_lr: float = 0.01, first_order_epochs: int = 0, seed: int = 0,
                 fast_path: bool = True) -> None:
        super().__init__(model, kind, _scope(model, adapt), inner_steps=inner_steps, inner_lr=inner_lr,
                         first_order_epochs=first_order_epochs, seed=seed, fast_path=fast_path)


@LEARNERS.register
class TNet(MetaLearner):
    """T-Net (Lee & Choi, 2018), simplified: meta-learned transformation matrices (identity at init) after
    each linear map; the inner loop adapts the task weights of the head only (`adapt="all"`: all linear
    weights and biases), never the transforms."""

    name = "tnet"

    def __init__(self, model: FunctionalModel, kind: TaskKind | None = None, /, *, adapt: str = "head",
                 inner_steps: int = 5, inner_lr: float = 0.01, first_order_epochs: int = 0, seed: int = 0,
                 fast_path: bool = True) -> None:
        if not getattr(model, "transforms", False):
            model = model.with_transforms()  # type: ignore[attr-defined]
        super().__init__(model, kind, _scope(model, adapt), inner_steps=inner_steps, inner_lr=inner_lr,
                         first_order_epochs=first_order_epochs, seed=seed, fast_path=fast_path)


@LEARNERS.register
class RidgeHead(MetaLearner):
    """R2D2-style closed-form head (Bertinetto et al., 2019): the body is meta-learned; each task's linear
    head is the ridge-regression fit (penalty `ridge_alpha`, unpenalised intercept) on the support features
    and the task kind's targets (one-hot for classification), differentiable, so the outer loss trains the
    body through the fit. No inner steps or rates."""

    name = "r2d2"
    closed_form = True

    def __init__(self, model: FunctionalModel, kind: TaskKind | None = None, /, *, ridge_alpha: float = 1.0,
                 seed: int = 0) -> None:
        if ridge_alpha <= 0:
            raise ValueError("r2d2: ridge_alpha must be > 0")
        super().__init__(model, kind, model.head_names, inner_steps=1, seed=seed, fast_path=False)
        self.ridge_alpha = float(ridge_alpha)
        self._check_ridge_head(dict(self.params.items()))

    def inner_loop(self, meta: dict[str, Tensor], xs: Tensor, ys: Tensor, ms: Tensor, steps: int, *,
                   create_graph: bool, body: _Body | None, leaf_each_step: bool = False,
                   on_step: Callable[[int, dict[str, Tensor], int], None] | None = None,
                   extras: Sequence[dict[str, Tensor]] | None = None,
                   ) -> tuple[dict[str, Tensor], Tensor]:
        if steps == 0:
            return dict(meta), xs.new_zeros(())
        target = self.kind.targets(ys)
        with torch.set_grad_enabled(torch.is_grad_enabled() and create_graph):
            if body is not None:
                feats = body.support(0)[0][-1]
            else:
                feats = self.model.trace(meta, xs, 0, mask=ms, stop=self.model.n_layers - 1)[0][-1]
            w, bias = ridge_head(feats, target, ms, self.ridge_alpha)
        with torch.no_grad():  # the support loss of the meta-learned head, before the fit
            pred0 = self.model.trace(meta, feats, 0, start=self.model.n_layers - 1)[0][-1]
            loss0 = self.kind.loss(pred0, target, ms).mean()
        params = {**meta, "head_weight": w, "head_bias": bias}
        if on_step is not None:
            on_step(0, params, 0)
        return params, loss0

    def adapt(self, xs: Tensor, ys: Tensor, ms: Tensor | None = None, *, steps: int | None = None,
              ridge_alpha: float | None = None) -> AdaptedParams:
        """The closed-form fit (`steps=0`: the meta-learned head, unadapted)."""
        return super().adapt(xs, ys, ms, steps=steps,
                             ridge_alpha=self.ridge_alpha if ridge_alpha is None and steps != 0 else ridge_alpha)


def build_learner(name: str, model: FunctionalModel | None = None, kind: TaskKind | None = None, *,
                  regularizer: Regularizer | None = None, **options) -> MetaLearner:
    """Learner by name (one of LEARNERS) on `model` (default: the fingerprint MLP) for task `kind` (default:
    regression). `options` are the learner's own (e.g. inner_steps, inner_lr, msl_epochs, adapt, seed); an
    option the learner does not have is an error. `regularizer` (`assayfew.meta.regularizers`) is attached
    to the learner (its meta-parameters seeded from the learner's seed); "none" attaches nothing."""
    model = MLP() if model is None else model
    learner = LEARNERS.build(name, model, kind, **options)
    learner.build_options = {k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in (option_defaults(type(learner)) | options).items()}
    learner.built_from = model
    if regularizer is not None and regularizer.name != "none":
        seed = int(learner.build_options.get("seed", 0))
        regularizer.attach(learner, torch.Generator().manual_seed(seed * 1_000_003 + 1))
        learner.regularizer = regularizer
    return learner
