"""Batched learners: meta-gradients vs a per-task loop, adaptation scope, learned rates, invariances."""

from __future__ import annotations

import pytest
import torch

from assayfew.meta import MIXERS, MLP, TaskBatch, build_learner, build_mixer, masked_mse, pad_tasks
from assayfew.meta.reference import reference_meta_loss
from assayfew.meta.registry import option_names
from assayfew.meta.synthetic import random_fingerprint_tasks


pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 24


def random_tasks(sizes, dim: int = DIM, seed: int = 0, offset: float = 6.5):
    return random_fingerprint_tasks(sizes, dim, seed=seed, offset=offset)


def random_batch(sizes=((9, 6), (4, 11), (7, 7)), dim: int = DIM, seed: int = 0) -> TaskBatch:
    return pad_tasks(random_tasks(sizes, dim, seed))


def grads(module: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    named = list(module.named_parameters())
    gs = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, gs)}


def _mixer(name: str, **options):
    """A mixer with those of the options it has (none and cob have no layers)."""
    return build_mixer(name, **{k: v for k, v in options.items() if k in option_names(MIXERS[name])})


def _learner(name: str, model_opts: dict | None = None, **kw):
    opts = {"hidden": (16, 12), "per_step_blocks": "all", **(model_opts or {})}
    model = MLP(DIM, n_steps=3, **opts)
    return build_learner(name, model, inner_steps=3, inner_lr=0.05, seed=1, **kw).double()


@pytest.mark.parametrize(
    ("learner", "mixer", "epoch", "opts"),
    [
        ("anil++", "metamix", 3, {"msl_epochs": 10}),
        ("anil++", "metamix", 12, {"msl_epochs": 10}),
        ("anil++", "metamix", 12, {"model_opts": {"per_step_blocks": "last"}}),
        ("anil++", "metamix", 3, {"msl_epochs": 10, "model_opts": {"per_step_blocks": "last"}}),
        ("anil++", "metamix", 3, {"msl_epochs": 10, "model_opts": {"per_step_blocks": "last", "sparse_input": True}}),
        ("anil++", "cob", 3, {"msl_epochs": 10, "model_opts": {"per_step_blocks": "last", "hidden": (16,)}}),
        ("anil++", "mixup_qq", 1, {"model_opts": {"sparse_input": False}}),
        ("anil", "metamix", 0, {"model_opts": {"hidden": (16, 12, 8)}}),
        ("maml", "metamix", 0, {}),
        ("maml", "none", 0, {}),
        ("anil", "cob", 0, {}),
        ("metasgd", "mixup_ss", 0, {}),
        ("tnet", "mixup_qq", 0, {}),
    ],
)
def test_batched_meta_gradient_matches_per_task_loop(learner, mixer, epoch, opts):
    torch.manual_seed(0)
    lrn = _learner(learner, **opts)
    with torch.no_grad():  # move off the symmetric init so every parameter matters
        for p in lrn.params.values():
            p.add_(0.05 * torch.randn_like(p))
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    mix = _mixer(mixer, layers=(0, 1, 2))
    loss, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(5), epoch=epoch)
    ref = reference_meta_loss(lrn, batch, mix, generator=torch.Generator().manual_seed(5), epoch=epoch)
    assert torch.allclose(loss, ref, rtol=1e-9, atol=1e-9)
    g_batched, g_loop = grads(lrn, loss), grads(lrn, ref)
    assert sum(float(g.abs().sum()) for g in g_batched.values()) > 0
    for name in g_loop:
        assert torch.allclose(g_batched[name], g_loop[name], atol=1e-5, rtol=1e-5), name


def test_reference_detects_a_wrong_plan():
    """The comparison can fail: a different random plan gives a different loss."""
    lrn = _learner("anil++")
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    mix = build_mixer("metamix", layers=(0, 1, 2))
    loss, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(5))
    ref = reference_meta_loss(lrn, batch, mix, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(loss, ref)


def test_anil_adapts_only_the_head():
    lrn = _learner("anil")
    xs, ys, _, _ = random_tasks([(10, 5)], dim=DIM)[0]
    adapted = lrn.adapt(xs.double(), ys.double())
    for name, meta in lrn.params.items():
        new = adapted.params[name]
        changed = not torch.equal(new.reshape(meta.shape) if new.numel() == meta.numel() else new, meta)
        assert changed == (name in ("head_weight", "head_bias")), name


def test_tnet_never_adapts_transforms():
    lrn = _learner("tnet")
    assert "block1_transform" in lrn.params and "head_transform" in lrn.params
    xs, ys, _, _ = random_tasks([(10, 5)], dim=DIM)[0]
    adapted = lrn.adapt(xs.double(), ys.double())
    assert torch.equal(adapted.params["block1_transform"], lrn.params["block1_transform"])
    assert not torch.equal(adapted.params["head_weight"][0], lrn.params["head_weight"])


@pytest.mark.parametrize("name", ["anil++", "metasgd"])
def test_learned_inner_rates_get_gradients(name):
    lrn = _learner(name)
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    loss, _ = lrn.meta_loss(batch, build_mixer("metamix"), generator=torch.Generator().manual_seed(0), epoch=20)
    loss.backward()
    assert len(lrn.lrs) > 0
    for n, p in lrn.lrs.items():
        assert p.grad is not None and float(p.grad.abs().min() if name == "anil++" else p.grad.abs().max()) > 0, n


def test_first_order_epochs_cut_second_order_terms():
    lrn = _learner("maml", first_order_epochs=2)
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    mix = build_mixer("none")
    g = torch.Generator
    first = grads(lrn, lrn.meta_loss(batch, mix, generator=g().manual_seed(0), epoch=0)[0])
    second = grads(lrn, lrn.meta_loss(batch, mix, generator=g().manual_seed(0), epoch=2)[0])
    fo_ref = grads(lrn, reference_meta_loss(lrn, batch, mix, generator=g().manual_seed(0), epoch=0,
                                            second_order=False))
    assert all(torch.allclose(first[n], fo_ref[n], atol=1e-8) for n in first)
    assert not all(torch.allclose(first[n], second[n], atol=1e-8) for n in first)


@pytest.mark.parametrize("model_opts", [{"per_step_blocks": "last"}, {"per_step_blocks": "all"}])
def test_fused_head_loop_matches_reference_first_and_second_order(model_opts):
    """ANIL++ with per-step batch norm in the last block only runs its inner loop as one fused node
    (hand-written backward); with it on all blocks the general path runs. Both equal the per-task loop,
    first order (epoch < first_order_epochs) and second order."""
    lrn = _learner("anil++", model_opts, first_order_epochs=2, msl_epochs=4)
    assert lrn.fast_path is not None and lrn.fast_path.fused == (model_opts["per_step_blocks"] == "last")
    with torch.no_grad():
        for p in lrn.params.values():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=p.dtype))
        for p in lrn.lrs.values():
            p.mul_(torch.linspace(0.5, 1.5, p.numel(), dtype=p.dtype).reshape(p.shape))
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    mix = build_mixer("metamix", layers=(1, 2))
    g = torch.Generator
    for epoch, second_order in ((0, False), (1, False), (3, True)):
        loss, _ = lrn.meta_loss(batch, mix, generator=g().manual_seed(epoch), epoch=epoch)
        ref = reference_meta_loss(lrn, batch, mix, generator=g().manual_seed(epoch), epoch=epoch,
                                  second_order=second_order)
        assert torch.allclose(loss, ref, rtol=1e-9, atol=1e-9)
        got, want = grads(lrn, loss), grads(lrn, ref)
        for name in want:
            assert torch.allclose(got[name], want[name], atol=1e-6, rtol=1e-6), (epoch, name)


def test_msl_weights_anneal():
    lrn = _learner("anil++", msl_epochs=10)
    w0, w5, w10 = (lrn.step_weights(e, 3) for e in (0, 5, 10))
    assert w0 == pytest.approx([1 / 3] * 3)
    assert w5[0] == pytest.approx(1 / 6) and sum(w5) == pytest.approx(1.0)
    assert w10 == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("name", ["anil++", "maml", "tnet"])
def test_prediction_of_a_row_does_not_depend_on_other_rows(name):
    lrn = _learner(name)
    xs, ys, xq, _ = random_tasks([(12, 9)], dim=DIM, seed=3)[0]
    xs, ys, xq = xs.double(), ys.double(), xq.double()
    adapted = lrn.adapt(xs, ys)
    full = lrn.predict(adapted, xq)
    alone = torch.stack([lrn.predict(adapted, xq[i : i + 1])[0] for i in range(len(xq))])
    other = torch.cat([xq[:1], (torch.rand(5, DIM, dtype=torch.float64) < 0.5).double()])
    with_others = lrn.predict(adapted, other)[0]
    assert torch.allclose(full, alone, atol=1e-6, rtol=0)
    assert abs(float(with_others - full[0])) < 1e-6
    assert float(full.std()) > 0  # predictions are not trivially constant


@pytest.mark.parametrize("mixer", ["none", "metamix", "cob", "mixup_ss", "mixup_qq"])
def test_padding_rows_change_nothing(mixer):
    lrn = _learner("anil++")
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    extra_s, extra_q = 3, 4

    def pad(x, m, n, fill):
        shape = (x.shape[0], n, *x.shape[2:])
        return torch.cat([x, fill(shape)], 1)

    junk = lambda shape: 50 * torch.randn(shape, generator=g, dtype=torch.float64)  # noqa: E731
    zeros = lambda shape: torch.zeros(shape, dtype=torch.float64)  # noqa: E731
    padded = TaskBatch(pad(batch.xs, batch.ms, extra_s, junk), pad(batch.ys, batch.ms, extra_s, junk),
                       pad(batch.ms, batch.ms, extra_s, zeros), pad(batch.xq, batch.mq, extra_q, junk),
                       pad(batch.yq, batch.mq, extra_q, junk), pad(batch.mq, batch.mq, extra_q, zeros))
    mix = _mixer(mixer, layers=(0, 1, 2))
    a, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(2), epoch=4)
    b, _ = lrn.meta_loss(padded, mix, generator=torch.Generator().manual_seed(2), epoch=4)
    assert torch.allclose(a, b, atol=1e-10)
    ga, gb = grads(lrn, a), grads(lrn, b)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-8), n


def test_batched_adapt_matches_single_task_adapt():
    lrn = _learner("anil++")
    tasks = random_tasks([(9, 6), (4, 11)], dim=DIM)
    batch = random_batch(((9, 6), (4, 11)), dim=DIM).to(dtype=torch.float64)
    pred = lrn.predict(lrn.adapt(batch.xs, batch.ys, batch.ms), batch.xq)
    for t, (xs, ys, xq, yq) in enumerate(tasks):
        single = lrn.adapt_and_predict(xs.double(), ys.double(), xq.double())
        assert torch.allclose(pred[t, : len(xq)], single, atol=1e-8)
        assert float(masked_mse(single[None], yq.double()[None], torch.ones(1, len(yq), dtype=torch.float64))) >= 0


def test_adaptation_reduces_support_loss():
    lrn = build_learner("anil", MLP(DIM, (16,), per_step_blocks="all"), inner_steps=10, inner_lr=0.1, seed=0)
    xs, ys, _, _ = random_tasks([(20, 5)], dim=DIM, offset=0.0)[0]
    before = lrn.predict(lrn.adapt(xs, ys, steps=0), xs)
    after = lrn.predict(lrn.adapt(xs, ys), xs)
    assert float((after - ys).square().mean()) < 0.8 * float((before - ys).square().mean())


def _family_tasks(g: torch.Generator, n_tasks: int, proj: torch.Tensor):
    """y = a_t * s(x) + b_t with a representation s shared by all tasks."""
    tasks = []
    for _ in range(n_tasks):
        a, b = 1 + torch.rand(1, generator=g), 6 + torch.randn(1, generator=g) * 0.5
        xs, xq = (torch.rand(12, DIM, generator=g) < 0.3).float(), (torch.rand(12, DIM, generator=g) < 0.3).float()
        tasks.append((xs, a * torch.tanh(xs @ proj).sum(1) + b, xq, a * torch.tanh(xq @ proj).sum(1) + b))
    return tasks


@pytest.mark.parametrize("name", ["anil++", "maml"])
def test_meta_training_improves_adapted_query_error(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(DIM, 3, generator=g) * 0.5
    lrn = build_learner(name, MLP(DIM, (32, 32), n_steps=5, out_bias=6.0, per_step_blocks="all"), inner_steps=5, inner_lr=0.05, seed=0)
    test = pad_tasks(_family_tasks(torch.Generator().manual_seed(99), 16, proj))

    def query_mse() -> float:
        pred = lrn.predict(lrn.adapt(test.xs, test.ys, test.ms), test.xq)
        return float(masked_mse(pred, test.yq, test.mq).mean())

    before = query_mse()
    opt = torch.optim.Adam(lrn.parameters(), lr=3e-3)
    mixer, mg = build_mixer("metamix", layers=(1, 2)), torch.Generator().manual_seed(1)
    for it in range(100):
        loss, _ = lrn.meta_loss(pad_tasks(_family_tasks(g, 8, proj)), mixer, generator=mg, epoch=it // 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert query_mse() < 0.4 * before


def test_ridge_head_matches_closed_form_per_task():
    lrn = _learner("anil++")
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    alpha = 3.0
    pred = lrn.predict(lrn.adapt(batch.xs, batch.ys, batch.ms, ridge_alpha=alpha), batch.xq)
    b = lrn.bn_step(lrn.inner_steps - 1)
    params = dict(lrn.params.items())
    for t in range(batch.n_tasks):
        s_ok, q_ok = batch.ms[t] > 0, batch.mq[t] > 0
        fs, stats = lrn.model.trace(params, batch.xs[t][s_ok][None], b, stop=2)
        fq = lrn.model.trace(params, batch.xq[t][q_ok][None], b, stats=stats, stop=2)[0][-1][0]
        f, y = fs[-1][0].detach(), batch.ys[t][s_ok]
        fm, ym = f.mean(0), y.mean()
        w = torch.linalg.solve((f - fm).T @ (f - fm) + alpha * torch.eye(f.shape[1], dtype=f.dtype), (f - fm).T @ (y - ym))
        expected = (fq.detach() - fm) @ w + ym
        assert torch.allclose(pred[t][q_ok], expected, atol=1e-8)
    single = lrn.adapt_and_predict(batch.xs[0][:9], batch.ys[0][:9], batch.xq[0][:1], ridge_alpha=alpha)
    assert torch.allclose(single, pred[0][:1], atol=1e-8)  # row-independent, same as batched


def test_ridge_head_refused_where_it_does_not_apply():
    xs, ys, _, _ = random_tasks([(6, 3)])[0]
    with pytest.raises(ValueError, match="ridge head"):
        _learner("maml").adapt(xs.double(), ys.double(), ridge_alpha=1.0)
    with pytest.raises(ValueError, match="ridge head"):
        _learner("tnet").adapt(xs.double(), ys.double(), ridge_alpha=1.0)


@pytest.mark.parametrize("mixer", ["metamix", "mixup_ss", "mixup_qq"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_mixing_through_memoised_linear_maps_matches_per_task_loop(mixer, layer):
    lrn = _learner("anil++", {"per_step_blocks": "last"})
    with torch.no_grad():
        for p in lrn.params.values():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype))
    batch = random_batch(dim=DIM).to(dtype=torch.float64)
    mix = _mixer(mixer, layers=(layer,))
    loss, info = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(2), epoch=12)
    ref = reference_meta_loss(lrn, batch, mix, generator=torch.Generator().manual_seed(2), epoch=12)
    assert info["layer"] == layer and torch.allclose(loss, ref, rtol=1e-9, atol=1e-9)
    g_batched, g_loop = grads(lrn, loss), grads(lrn, ref)
    for name in g_loop:
        assert torch.allclose(g_batched[name], g_loop[name], atol=1e-5, rtol=1e-5), name
