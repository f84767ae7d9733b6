"""Regularisers (`assayfew.meta.regularizers`): each one's meta-gradient against the per-task reference with
every learner, and the mechanism that makes it what it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from assayfew.meta import LEARNERS, MLP, REGULARIZERS, build_kind, build_learner, build_mixer, build_regularizer
from assayfew.meta.learners import _View
from assayfew.meta.regularizers import theil_index
from tests.unit.test_meta_core import DIM, _assert_matches_reference, _batch, _grads, _own

pytestmark = pytest.mark.usefixtures("one_thread")

REG_OPTIONS = {"weight_decay": {"decay": 0.1}, "cavia": {"context_dim": 4, "layer": 1}, "meta_dropout": {},
               "mr_maml": {"beta": 0.01, "init_sigma": 0.05}, "taml": {"weight": 0.5}}
INNER = ("cavia", "meta_dropout")  # act inside the inner loop: need inner steps


def _learner(name: str, reg: str | None, kind: str = "regression", per_step_blocks: str = "all", **options):
    k = build_kind(kind, **({"n_classes": 3} if kind == "classification" else {}))
    model = MLP(DIM, (10, 8), n_steps=3, out_dim=k.out_dim, per_step_blocks=per_step_blocks)
    opts = _own(LEARNERS, name, inner_steps=3, inner_lr=0.1, msl_epochs=4) | options
    regularizer = None if reg is None else build_regularizer(reg, **REG_OPTIONS[reg])
    lrn = build_learner(name, model, k, regularizer=regularizer, seed=1, **opts).double()
    with torch.no_grad():  # off the symmetric init so every parameter matters
        for p in lrn.params.values():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=p.dtype))
    return lrn


def _case(case: str, reg: str | None, **options):
    if case == "metasgd-head":
        return _learner("metasgd", reg, adapt="head", **options)
    return _learner(case, reg, **options)


LEARNER_CASES = ["maml", "anil", "anil++", "metasgd", "metasgd-head", "tnet"]


@pytest.mark.parametrize("learner", LEARNER_CASES)
@pytest.mark.parametrize("reg", sorted(REG_OPTIONS))
def test_every_regularizer_with_every_learner_matches_the_per_task_reference(reg, learner):
    lrn = _case(learner, reg)
    _assert_matches_reference(lrn, _batch("regression"), build_mixer("metamix", layers=(0, 1, 2)), epoch=1)


# ---- the config schema and training plumbing ------------------------------------------------------------
def test_core_config_carries_the_regularizer_through_json_toml_and_the_learner():
    from assayfew.meta.config import CoreConfig, Part

    core = CoreConfig(model=Part("mlp", {"in_dim": DIM, "hidden": [10, 8], "n_steps": 3}),
                      learner=Part("anil++", {"inner_steps": 3}), mixer=Part("metamix"),
                      regularizer=Part("cavia", {"context_dim": 4}))
    for again in (CoreConfig.from_json(core.to_json()), CoreConfig.from_toml(core.to_toml())):
        assert again == core and again.regularizer == Part("cavia", {"context_dim": 4})
    lrn = core.build_learner()
    assert type(lrn.regularizer).__name__ == "CAVIA" and "cavia_context" in lrn.params
    assert CoreConfig.of_learner(lrn).regularizer == Part("cavia", {"context_dim": 4, "layer": 1})
    old = core.to_dict()
    del old["regularizer"]  # a config written before regularizers: none
    assert CoreConfig.from_dict(old).regularizer is None and CoreConfig.from_dict(old).build_learner().regularizer is None
    assert core.with_mixer(None).regularizer == core.regularizer
    assert CoreConfig(model=core.model, learner=core.learner, regularizer=Part("none")).regularizer is None
    for bad in (Part("dropconnect"), Part("cavia", {"width": 3})):
        with pytest.raises(ValueError, match="regularizer"):
            CoreConfig(model=core.model, learner=core.learner, regularizer=bad)


def test_none_attaches_nothing():
    plain = _learner("anil++", None)
    none = build_learner("anil++", MLP(DIM, (10, 8), n_steps=3), regularizer=build_regularizer("none"), seed=1)
    assert none.regularizer is None and set(none.state_dict()) == set(plain.state_dict())
    assert len(REGULARIZERS) == 6


def test_train_config_regularizer_and_fidelity_options_reach_the_model_config():
    from assayfew.train import TrainConfig

    cfg = TrainConfig.from_dict({"regularizer": "mr_maml", "regularizer_options": {"beta": 1e-3}, "algo": "metasgd",
                                 "adapt": "head", "first_order_epochs": 2, "per_step_blocks": "all"})
    core = cfg.core(in_dim=DIM)
    assert core.regularizer is not None and core.regularizer.options == {"beta": 1e-3}
    assert core.learner.options["adapt"] == "head" and core.learner.options["first_order_epochs"] == 2
    assert core.model.options["per_step_blocks"] == "all"
    assert TrainConfig().core(in_dim=DIM).regularizer is None  # the default adds nothing to the model config
    for bad, match in (({"regularizer": "nope"}, "unknown regularizer"),
                       ({"regularizer": "taml", "regularizer_options": {"decay": 1.0}}, "no option"),
                       ({"regularizer": "cavia", "algo": "r2d2"}, "closed form"),
                       ({"regularizer": "weight_decay", "regularizer_options": {"decay": 0}}, "decay"),
                       ({"regularizer_options": [1]}, "table"), ({"adapt": "head"}, "adapt"),
                       ({"per_step_blocks": "first"}, "per_step_blocks")):
        with pytest.raises(ValueError, match=match):
            TrainConfig.from_dict(bad)


@pytest.mark.parametrize("reg", ["cavia", "meta_dropout", "mr_maml"])
def test_a_trained_model_with_regularizer_parameters_saves_and_loads(reg, tmp_path):
    from assayfew.checkpoint import load_model
    from assayfew.train import TrainConfig, train
    from tests.conftest import TINY_CONFIG, make_synthetic_taskset

    ts = make_synthetic_taskset()
    tr, va = ts.subset(ts.assay_ids[:9]), ts.subset(ts.assay_ids[9:])
    cfg = TrainConfig(**TINY_CONFIG | {"epochs": 1, "iters": 3, "regularizer": reg,
                                       "regularizer_options": {"context_dim": 3} if reg == "cavia" else {}})
    train(cfg, tr, va, tmp_path)
    saved = load_file(str(tmp_path / "model" / "weights.safetensors"))
    prefix = {"cavia": "cavia_", "meta_dropout": "metadropout_", "mr_maml": "mrmaml_"}[reg]
    assert any(prefix in k for k in saved)  # its meta-parameters are in the checkpoint
    model = load_model(tmp_path / "model")  # strict: every saved tensor has its place
    assert model.learners[0].regularizer is not None and model.learners[0].regularizer.name == reg
    x, y, _ = va.assay(0)
    first = model.adapt_predict(x[:20], y[:20], x[20:])
    assert np.all(np.isfinite(first))
    np.testing.assert_array_equal(first, load_model(tmp_path / "model").adapt_predict(x[:20], y[:20], x[20:]))


@pytest.mark.parametrize("reg", ["weight_decay", "mr_maml", "taml"])
def test_outer_only_regularizers_keep_the_fused_head_loop_and_match(reg):
    lrn = _learner("anil++", reg, per_step_blocks="last")
    assert lrn.fast_path is not None and lrn.fast_path.fused
    _assert_matches_reference(lrn, _batch("regression"), build_mixer("metamix", layers=(0, 1, 2)), epoch=1)


@pytest.mark.parametrize("reg", ["cavia", "meta_dropout", "taml"])
def test_regularizers_match_the_reference_on_classification(reg):
    _assert_matches_reference(_learner("maml", reg, kind="classification"), _batch("classification"),
                              build_mixer("metamix", layers=(1, 2)), epoch=10)


# ---- each one's mechanism ----------------------------------------------------------------------------------
def test_weight_decay_makes_the_outer_step_shrink_the_weights():
    from assayfew.loop import batch_step

    batch, mix = _batch("regression"), build_mixer("none")
    plain, decayed = _learner("anil++", None), _learner("anil++", "weight_decay")
    gp = _grads(plain, plain.meta_loss(batch, mix, generator=torch.Generator(), epoch=1)[0])
    gd = _grads(decayed, decayed.meta_loss(batch, mix, generator=torch.Generator(), epoch=1)[0])
    for name, p in decayed.params.items():  # the L2 term's gradient is decay * θ, on every network parameter
        assert torch.allclose(gd[f"params.{name}"] - gp[f"params.{name}"], 0.1 * p.detach(), atol=1e-10), name
    for name in decayed.lrs:  # not on the inner rates
        assert torch.allclose(gd[f"lrs.{name}"], gp[f"lrs.{name}"], atol=1e-12)
    for decay, shrinks in ((None, False), (1e3, True)):  # a strong decay dominates the task gradient
        lrn = _learner("anil++", None)
        lrn.regularizer = None if decay is None else build_regularizer("weight_decay", decay=decay)
        before = {k: v.detach().clone() for k, v in lrn.params.items()}
        opt = torch.optim.Adam(lrn.parameters(), lr=1e-2)
        batch_step(lrn, mix, batch, generator=torch.Generator(), epoch=1, device=torch.device("cpu"))
        opt.step()
        smaller = torch.cat([(p.detach().abs() < before[k].abs())[before[k].abs() > 0.02] for k, p in lrn.params.items()])
        assert bool(smaller.all()) == shrinks  # every weight moved towards zero (without decay: not all)


def test_cavia_adapts_only_its_context():
    lrn, batch = _learner("maml", "cavia"), _batch("regression")
    meta = {k: v.detach() for k, v in lrn.params.items()}
    assert lrn.adapt_names == ("cavia_context",)
    adapted = lrn.adapt(batch.xs, batch.ys, batch.ms)
    changed = {k for k, v in adapted.params.items() if v.shape != meta[k].shape or not torch.equal(v, meta[k])}
    assert changed == {"cavia_context"}
    assert adapted.params["cavia_context"].shape == (batch.n_tasks, 4)
    assert not torch.allclose(adapted.params["cavia_context"], meta["cavia_context"].expand(batch.n_tasks, 4))
    loss, _ = lrn.meta_loss(batch, build_mixer("none"), generator=torch.Generator(), epoch=1)
    grads = _grads(lrn, loss)  # the network is learned in the outer loop
    assert all(grads[f"params.{n}"].abs().sum() > 0 for n in ("block1_weight", "head_weight", "cavia_scale"))
    unadapted = lrn.adapt(batch.xs, batch.ys, batch.ms, steps=0)  # the context changes the predictions
    assert not torch.allclose(lrn.predict(adapted, batch.xq), lrn.predict(unadapted, batch.xq))


def test_meta_dropout_perturbs_the_inner_loop_only():
    lrn, batch = _learner("anil", "meta_dropout"), _batch("regression")
    assert lrn.fast_path is None and not lrn.head_only  # the body is perturbed: not memoised
    meta = dict(lrn.params.items())
    noise = lrn.regularizer.inner_extras(batch.xs, lrn.inner_steps, torch.Generator().manual_seed(0))
    assert len(noise) == lrn.inner_steps and {k for k in noise[0]} == {"metadropout_eps1", "metadropout_eps2"}
    seen: list[dict] = []

    def run(extras):
        seen.clear()
        out, _ = lrn.inner_loop(meta, batch.xs, batch.ys, batch.ms, lrn.inner_steps, create_graph=False, body=None,
                                on_step=lambda s, p, b: seen.append(p), extras=extras)
        return out

    noisy, clean = run(noise), run(None)
    assert not torch.allclose(noisy["head_weight"], clean["head_weight"])  # noise in the inner loop
    assert all(not any(k.startswith("metadropout_eps") for k in p) for p in seen)  # outer views never get it
    base = lrn.model.base  # the query pass: exactly the unperturbed network
    q_hooked = lrn.model.trace(noisy, batch.xq, 0, stats=lrn.model.trace(noisy, batch.xs, 0, mask=batch.ms)[1])[0]
    q_base = base.trace(noisy, batch.xq, 0, stats=base.trace(noisy, batch.xs, 0, mask=batch.ms)[1])[0]
    assert all(torch.equal(a, b) for a, b in zip(q_hooked, q_base))
    two = [lrn.predict(lrn.adapt(batch.xs, batch.ys, batch.ms), batch.xq) for _ in range(2)]
    assert torch.equal(*two)  # prediction draws nothing
    a, _ = lrn.meta_loss(batch, build_mixer("none"), generator=torch.Generator().manual_seed(1), epoch=1)
    b, _ = lrn.meta_loss(batch, build_mixer("none"), generator=torch.Generator().manual_seed(2), epoch=1)
    assert not torch.allclose(a, b)  # meta-training draws the noise from the iteration's generator
    g = _grads(lrn, a)
    assert g["params.metadropout_weight2"].abs().sum() > 0 and g["params.metadropout_bias1"].abs().sum() > 0


def test_mr_maml_kl_term_is_present_and_differentiable():
    lrn, batch, mix = _learner("anil", "mr_maml"), _batch("regression"), build_mixer("none")
    reg = lrn.regularizer
    meta = dict(lrn.params.items())
    assert set(reg._names) == {"block1_weight", "block1_bias", "block2_weight", "block2_bias"}  # scope "body"
    kl = reg.kl(meta)
    ls = meta["mrmaml_logsigma_block1_weight"]
    g_ls, g_mu = torch.autograd.grad(kl, [ls, meta["block1_weight"]])
    assert torch.allclose(g_ls, (2 * ls).exp() - 1) and torch.allclose(g_mu, meta["block1_weight"])  # analytic
    loss, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(3), epoch=1)
    reg.beta *= 2  # same draws, twice the weight: the loss grows by beta * KL exactly
    loss2, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(3), epoch=1)
    assert torch.allclose(loss2 - loss, 0.01 * kl, rtol=1e-9)
    other, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(4), epoch=1)
    assert not torch.allclose(other, loss2)  # the meta-weights are drawn
    two = [lrn.predict(lrn.adapt(batch.xs, batch.ys, batch.ms), batch.xq) for _ in range(2)]
    assert torch.equal(*two)  # prediction starts from the means


def test_taml_penalty_falls_as_task_losses_equalise():
    spread = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    values = [float(theil_index(spread.mean() + f * (spread - spread.mean()))) for f in (1.0, 0.5, 0.1, 0.0)]
    assert values[0] > values[1] > values[2] > values[3] == 0.0
    assert float(theil_index(torch.tensor([0.0, 2.0]))) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    lrn, batch, mix = _learner("anil", "taml"), _batch("regression"), build_mixer("metamix", layers=(0, 1, 2))
    plain = _learner("anil", None)
    loss, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(5), epoch=10)
    base, _ = plain.meta_loss(batch, mix, generator=torch.Generator().manual_seed(5), epoch=10)
    assert float((loss - base).detach()) > 0  # unequal task losses: a positive penalty on top of the mean


@pytest.mark.parametrize("mixer", ["none", "cob", "metamix", "mixup_ss", "mixup_qq"])
def test_mixer_task_losses_average_to_its_loss(mixer):
    lrn, batch = _learner("maml", None), _batch("regression")
    mix = build_mixer(mixer, **({} if mixer in ("none", "cob") else {"layers": (0, 1, 2)}))
    plan = mix.sample(batch, lrn.model.n_layers, torch.Generator().manual_seed(9), lrn.kind)
    params, _ = lrn.inner_loop(dict(lrn.params.items()), batch.xs, batch.ys, batch.ms, 1, create_graph=False,
                               body=None)
    view = _View(lrn, params, 0, batch, None)
    per_task = mix.task_losses(view, plan)
    assert per_task.shape == (batch.n_tasks,) and torch.allclose(per_task.mean(), mix.loss(view, plan))
    assert len(set(plan.layers)) > 1 or mixer in ("none", "cob")  # several layer groups are scattered back
