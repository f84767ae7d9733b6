"""The generic core: every learner × mixer × task kind against the per-task reference, fast paths against
the generic path, classification mixing (one-hot targets, channel shuffle), per-task mixing layers, and the
config schema (round trips, rejected keys, legacy checkpoints)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from assayfew.meta import (LEARNERS, MIXERS, MLP, PoseNet, build_kind, build_learner, build_mixer, build_regularizer,
                           pad_tasks)
from assayfew.meta.config import CoreConfig, Part
from assayfew.meta.mixing import _shuffle_channels
from assayfew.meta.reference import reference_meta_loss
from assayfew.meta.registry import option_names
from assayfew.paths import default_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, N_CLASSES = 12, 3
SIZES = ((7, 6), (4, 9), (6, 6))


def _tasks(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(DIM, generator=g, dtype=torch.float64)
    out = []
    for ns, nq in SIZES:
        xs, xq = (torch.rand(ns, DIM, generator=g) < 0.4).double(), (torch.rand(nq, DIM, generator=g) < 0.4).double()
        if kind == "classification":  # every class present in both sets
            ys = torch.arange(ns) % N_CLASSES
            yq = torch.randperm(nq, generator=g) % N_CLASSES
        else:
            ys, yq = xs @ w + 0.1 * torch.randn(ns, generator=g), xq @ w + 0.1 * torch.randn(nq, generator=g)
        out.append((xs, ys.double(), xq, yq.double()))
    return out


def _batch(kind: str, seed: int = 0):
    return pad_tasks(_tasks(kind, seed)).to(dtype=torch.float64)


def _own(registry, name: str, **options) -> dict:
    return {k: v for k, v in options.items() if k in option_names(registry[name])}


def _learner(name: str, kind: str, per_step_blocks: str = "all", **options):
    k = build_kind(kind, **({"n_classes": N_CLASSES} if kind == "classification" else {}))
    model = MLP(DIM, (10, 8), n_steps=3, out_dim=k.out_dim, per_step_blocks=per_step_blocks)
    opts = _own(LEARNERS, name, inner_steps=3, inner_lr=0.1, msl_epochs=4) | options
    lrn = build_learner(name, model, k, seed=1, **opts).double()
    with torch.no_grad():  # off the symmetric init so every parameter matters
        for p in lrn.params.values():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=p.dtype))
    return lrn


def _grads(module: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    named = list(module.named_parameters())
    gs = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, gs)}


def _assert_matches_reference(lrn, batch, mixer, epoch: int, seed: int = 5) -> None:
    loss, info = lrn.meta_loss(batch, mixer, generator=torch.Generator().manual_seed(seed), epoch=epoch)
    ref = reference_meta_loss(lrn, batch, mixer, generator=torch.Generator().manual_seed(seed), epoch=epoch)
    assert torch.isfinite(loss) and torch.allclose(loss, ref, rtol=1e-9, atol=1e-10)
    got, want = _grads(lrn, loss), _grads(lrn, ref)
    assert sum(float(g.abs().sum()) for g in got.values()) > 0
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-7, rtol=1e-6), name


LEARNER_CASES = ["maml", "anil", "anil++", "metasgd", "metasgd-head", "tnet", "r2d2"]
MIXER_CASES = ["none", "metamix", "mixup_ss", "mixup_qq", "cob"]


def _learner_case(case: str, kind: str):
    if case == "metasgd-head":
        return _learner("metasgd", kind, adapt="head")
    return _learner(case, kind)


@pytest.mark.parametrize("kind", ["regression", "classification"])
@pytest.mark.parametrize("mixer", MIXER_CASES)
@pytest.mark.parametrize("learner", LEARNER_CASES)
def test_every_learner_mixer_and_kind_matches_the_per_task_reference(learner, mixer, kind):
    lrn = _learner_case(learner, kind)
    mix = build_mixer(mixer, **_own(MIXERS, mixer, layers=(0, 1, 2)))
    _assert_matches_reference(lrn, _batch(kind), mix, epoch=1)  # msl: every step's loss counts


def _pose_learner(case: str, regularizer=None, **options):
    """A tiny pose net (16-pixel images, two stride-2 encoder blocks, one adapted block) off its init."""
    model = PoseNet(image_size=16, encoder=(3, 2), filters=3, n_blocks=1, n_steps=3, out_bias=1.0)
    name, extra = ("metasgd", {"adapt": "head"}) if case == "metasgd-head" else (case, {})
    opts = _own(LEARNERS, name, inner_steps=3, inner_lr=0.1, msl_epochs=4) | extra | options
    lrn = build_learner(name, model, None, seed=1, regularizer=regularizer, **opts).double()
    with torch.no_grad():
        for p in lrn.params.values():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=p.dtype))
    return lrn


def _pose_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tasks = [(torch.rand(ns, 256, generator=g, dtype=torch.float64), 10 * torch.rand(ns, generator=g, dtype=torch.float64),
              torch.rand(nq, 256, generator=g, dtype=torch.float64), 10 * torch.rand(nq, generator=g, dtype=torch.float64))
             for ns, nq in SIZES]
    return pad_tasks(tasks).to(dtype=torch.float64)


@pytest.mark.parametrize("mixer", MIXER_CASES)
@pytest.mark.parametrize("learner", [c for c in LEARNER_CASES if c != "tnet"])  # the pose net has no transforms
def test_every_learner_and_mixer_on_the_pose_model_matches_the_per_task_reference(learner, mixer):
    """Padded tasks (masked support statistics), the encoder run once (`fixed_prefix`) for learners that
    adapt more than the head, mixing at every position incl. inside the encoder."""
    lrn = _pose_learner(learner)
    mix = build_mixer(mixer, **_own(MIXERS, mixer, layers=(0, 1, 2, 3)))
    _assert_matches_reference(lrn, _pose_batch(), mix, epoch=1)


@pytest.mark.parametrize("reg", ["mr_maml", "taml", "weight_decay"])
@pytest.mark.parametrize("learner", ["maml", "anil"])
def test_pose_model_with_a_regularizer_matches_the_per_task_reference(learner, reg):
    """The fixed encoder prefix is computed from the meta-iteration's (MR-MAML: sampled) weights."""
    lrn = _pose_learner(learner, regularizer=build_regularizer(reg))
    assert lrn.regularizer is not None
    _assert_matches_reference(lrn, _pose_batch(), build_mixer("metamix", layers=(0, 2, 3)), epoch=1)


def test_pose_encoder_is_never_adapted_and_runs_once_per_meta_batch(monkeypatch):
    lrn = _pose_learner("maml")
    assert not any(n.startswith("enc") for n in lrn.adapt_names) and "block1_weight" in lrn.adapt_names
    assert lrn.model.fixed_prefix(lrn.adapt_names) == 2 and lrn.model.fixed_prefix(["enc2_bias"]) == 1
    assert _pose_learner("metasgd").adapt_names == lrn.adapt_names  # adapt="all" = the model's adaptable set
    calls = []
    block = PoseNet.block
    monkeypatch.setattr(PoseNet, "block", lambda self, params, h, k, *a: calls.append(k) or block(self, params, h, k, *a))
    lrn.meta_loss(_pose_batch(), build_mixer("none"), generator=torch.Generator().manual_seed(0))
    assert calls.count(1) == 2  # support and query once each; the adapted block runs every step
    assert calls.count(3) == lrn.inner_steps + 2  # a support pass per step, the adapted support and query


@pytest.mark.parametrize("learner", ["maml", "anil", "anil++", "r2d2"])
def test_channel_shuffle_matches_the_per_task_reference(learner):
    lrn = _learner(learner, "classification")
    _assert_matches_reference(lrn, _batch("classification"), build_mixer("metamix", layers=(1, 2), shuffle=True,
                                                                         shuffle_groups=2), epoch=10)


def test_per_step_fused_anil_plus_plus_classification_falls_back_and_matches():
    """The fused head loop declares squared error: for classification the model offers no fast path."""
    lrn = _learner("anil++", "classification", per_step_blocks="last")
    assert lrn.fast_path is None
    _assert_matches_reference(lrn, _batch("classification"), build_mixer("metamix", layers=(1, 2)), epoch=1)


@pytest.mark.parametrize(("name", "blocks", "options", "fused"), [
    ("anil++", "last", {}, True),
    ("anil", "last", {}, True),
    ("anil++", "all", {}, False),  # per-step BN in every block: closed-form steps, not fused
    ("metasgd", "last", {"adapt": "head"}, False),  # per-parameter rates: closed-form steps, not fused
])
@pytest.mark.parametrize("second_order", [True, False])
def test_each_fast_path_equals_the_generic_path(name, blocks, options, fused, second_order):
    fast = _learner(name, "regression", per_step_blocks=blocks, **options)
    generic = _learner(name, "regression", per_step_blocks=blocks, fast_path=False, **options)
    assert fast.fast_path is not None and fast.fast_path.closed_form and fast.fast_path.fused == fused
    assert generic.fast_path is None
    generic.load_state_dict(fast.state_dict())
    batch = _batch("regression")
    mix = build_mixer("metamix", layers=(0, 1, 2))
    for epoch in (1, 10):
        a, _ = fast.meta_loss(batch, mix, generator=torch.Generator().manual_seed(epoch), epoch=epoch,
                              second_order=second_order)
        b, _ = generic.meta_loss(batch, mix, generator=torch.Generator().manual_seed(epoch), epoch=epoch,
                                 second_order=second_order)
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
        ga, gb = _grads(fast, a), _grads(generic, b)
        for n in ga:
            assert torch.allclose(ga[n], gb[n], atol=1e-9, rtol=1e-7), (epoch, n)
    pa = fast.predict(fast.adapt(batch.xs, batch.ys, batch.ms), batch.xq)
    pb = generic.predict(generic.adapt(batch.xs, batch.ys, batch.ms), batch.xq)
    assert torch.allclose(pa, pb, atol=1e-10)


def test_fast_path_preconditions_are_the_models():
    model = MLP(DIM, (8,), n_steps=3)
    reg, cls = build_kind("regression"), build_kind("classification", n_classes=3)
    heads = ("head_weight", "head_bias")
    assert model.head_fast_path(reg, heads, lr_mode="per_step", per_step_bn=True).fused
    assert model.head_fast_path(cls, heads, lr_mode="fixed", per_step_bn=False) is None  # not squared error
    assert MLP(DIM, (8,), out_dim=2).head_fast_path(reg, heads, lr_mode="fixed", per_step_bn=False) is None
    assert MLP(DIM, (8,), transforms=True).head_fast_path(reg, heads, lr_mode="fixed", per_step_bn=False) is None
    assert not model.head_fast_path(reg, heads, lr_mode="per_param", per_step_bn=False).fused
    assert model.head_fast_path(reg, ("head_weight",), lr_mode="fixed", per_step_bn=False) is None


def test_classification_metamix_mixes_one_hot_targets_with_soft_cross_entropy():
    """λ·y_s + (1−λ)·y_q on one-hot vectors, CE on the soft targets, computed by hand from the adapted net."""
    lrn = _learner("maml", "classification")
    batch = _batch("classification")
    mix = build_mixer("metamix", layers=(0,), fixed_lambda=0.3)
    loss, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(0), epoch=50)
    plan = mix.sample(batch, lrn.model.n_layers, torch.Generator().manual_seed(0), lrn.kind)
    adapted = lrn.adapt(batch.xs, batch.ys, batch.ms)
    per_task = []
    for t in range(batch.n_tasks):
        q = batch.mq[t] > 0
        idx = plan.idx[t][q]
        x = 0.3 * batch.xs[t][idx] + 0.7 * batch.xq[t][q]
        y = 0.3 * F.one_hot(batch.ys[t][idx].long(), N_CLASSES) + 0.7 * F.one_hot(batch.yq[t][q].long(), N_CLASSES)
        one = type(adapted)({k: v[t : t + 1] if k in lrn.adapt_names else v for k, v in adapted.params.items()},
                            {k: (m[t : t + 1], v[t : t + 1]) for k, (m, v) in adapted.stats.items()},
                            adapted.bn_step, True)
        logits = lrn.predict(one, x[None])[0]
        per_task.append(-(y * F.log_softmax(logits, -1)).sum(-1).mean())
    assert torch.allclose(loss, torch.stack(per_task).mean(), atol=1e-10)
    assert float(loss.detach()) > 0


def test_soft_target_loss_is_cross_entropy_on_hard_labels():
    kind = build_kind("classification", n_classes=4)
    logits, labels = torch.randn(2, 5, 4, dtype=torch.float64), torch.randint(0, 4, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.float64)
    mask[1, 3:] = 0
    want = torch.stack([F.cross_entropy(logits[0], labels[0]), F.cross_entropy(logits[1, :3], labels[1, :3])])
    assert torch.allclose(kind.loss(logits, labels.double(), mask), want)


def test_the_mixing_layer_is_drawn_per_task():
    mix = build_mixer("metamix", layers=(0, 1, 2))
    batch = pad_tasks(_tasks("regression") * 4)
    drawn = [mix.sample(batch, 3, torch.Generator().manual_seed(s)).layers for s in range(5)]
    assert all(len(layers) == batch.n_tasks for layers in drawn)
    assert any(len(set(layers)) > 1 for layers in drawn)
    plan = mix.sample(batch, 3, torch.Generator().manual_seed(0))
    for layer, tasks in plan.groups:  # the task groups partition the batch by drawn layer
        members = range(batch.n_tasks) if tasks is None else tasks.tolist()
        assert all(plan.layers[t] == layer for t in members)
    assert sum(batch.n_tasks if t is None else len(t) for _, t in plan.groups) == batch.n_tasks


@pytest.mark.parametrize(("name", "blocks"), [("anil++", "last"), ("anil++", "all"), ("maml", "all")])
@pytest.mark.parametrize("layers", [(0, 1, 2), (1, 2), (0, 2)])
def test_one_pass_mixing_equals_the_grouped_path(monkeypatch, layers, name, blocks):
    """Learners mix every task in one pass (λ = 0 at the layers a task did not draw; memoised affine outputs
    with a head-only learner's fixed body, hiddens otherwise); the generic path runs each layer's group of
    tasks from its layer. Same loss and meta-gradients."""
    from assayfew.meta import learners
    from assayfew.meta.mixing import ViewBase

    lrn = _learner(name, "regression", per_step_blocks=blocks)
    batch = pad_tasks(_tasks("regression") * 3).to(dtype=torch.float64)
    mix = build_mixer("metamix", layers=layers)
    plan = mix.sample(batch, 3, torch.Generator().manual_seed(0))
    assert [layer for layer, _ in plan.groups] == list(layers)  # every layer drawn by some task
    generic_calls, grouped_path = [], ViewBase.run_mixed

    def generic(view, a, b, plan):
        generic_calls.append(1)
        return grouped_path(view, a, b, plan)

    monkeypatch.setattr(ViewBase, "run_mixed", generic)
    one_pass, _ = lrn.meta_loss(batch, mix, generator=torch.Generator(), epoch=1, plan=plan)
    assert not generic_calls
    got = _grads(lrn, one_pass)
    monkeypatch.setattr(learners._View, "run_mixed", generic)
    grouped, _ = lrn.meta_loss(batch, mix, generator=torch.Generator(), epoch=1, plan=plan)
    assert generic_calls
    assert torch.allclose(one_pass, grouped, rtol=1e-12, atol=1e-14)
    want = _grads(lrn, grouped)
    assert sum(float(g.abs().sum()) for g in got.values()) > 0
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-10, atol=1e-13), name


def test_channel_shuffle_replaces_one_group_from_a_row_of_the_paired_class():
    mix = build_mixer("metamix", layers=(1,), shuffle=True, shuffle_groups=2)
    batch = _batch("classification")
    plan = mix.sample(batch, 3, torch.Generator().manual_seed(3), build_kind("classification", n_classes=3))
    for t in range(batch.n_tasks):
        q = (batch.mq[t] > 0).nonzero().squeeze(1)
        own, src = batch.yq[t][q].long(), batch.yq[t][plan.shuffle_src[t][q]].long()
        pairing = {}
        for a, b in zip(own.tolist(), src.tolist()):  # one paired class per class, a permutation
            assert pairing.setdefault(a, b) == b
        assert sorted(pairing.values()) == sorted(pairing)
    h = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(2, 3, 4)
    out = _shuffle_channels(h, torch.tensor([[1, 2, 0], [0, 0, 0]]), torch.tensor([1, 0]), 2)
    assert torch.equal(out[0, :, :2], h[0, :, :2]) and torch.equal(out[0, :, 2:], h[0, [1, 2, 0], 2:])
    assert torch.equal(out[1, :, :2], h[1, [0, 0, 0], :2]) and torch.equal(out[1, :, 2:], h[1, :, 2:])
    with pytest.raises(ValueError, match="classification"):
        mix.sample(batch, 3, torch.Generator().manual_seed(3), build_kind("regression"))


def test_r2d2_head_is_the_ridge_fit_of_the_support_features():
    lrn = _learner("r2d2", "regression", ridge_alpha=2.0)
    xs, ys, xq, _ = _tasks("regression")[0]
    pred = lrn.adapt_and_predict(xs, ys, xq)
    ridge = lrn.adapt_and_predict(xs, ys, xq, ridge_alpha=2.0)
    assert torch.allclose(pred, ridge) and not torch.allclose(pred, lrn.adapt_and_predict(xs, ys, xq, steps=0))
    support = lrn.adapt_and_predict(xs, ys, xs)
    assert float((support - ys).square().mean()) < float((ys - ys.mean()).square().mean())


# ---- the config schema -----------------------------------------------------------------------------
@pytest.mark.parametrize("learner", sorted(LEARNERS))
@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_config_round_trips_through_json_and_toml_and_rebuilds(learner, mixer):
    cfg = CoreConfig(kind=Part("classification", {"n_classes": 4}),
                     model=Part("mlp", {"in_dim": DIM, "hidden": [6], "n_steps": 2, "sparse_input": None}),
                     learner=Part(learner, _own(LEARNERS, learner, inner_steps=2, inner_lr=0.2)),
                     mixer=Part(mixer, _own(MIXERS, mixer, alpha=0.4, layers=[0, 1])))
    assert CoreConfig.from_json(cfg.to_json()) == cfg
    assert CoreConfig.from_toml(cfg.to_toml()) == cfg
    lrn, mix = cfg.build()
    assert lrn.name == learner and mix.name == mixer and lrn.model.out_dim == 4
    again = CoreConfig.of_learner(lrn, mix)
    assert again.build_learner().state_dict().keys() == lrn.state_dict().keys()
    assert CoreConfig.from_dict(json.loads(json.dumps(again.to_dict()))) == again


@pytest.mark.parametrize(("change", "message"), [
    ({"extra": 1}, "unknown key"),
    ({"mixer": {"name": "none", "options": {"alpha": 0.5}}}, "has no option"),
    ({"learner": {"name": "maml", "options": {"msl_epochs": 3}}}, "has no option"),
    ({"learner": {"name": "r2d2", "options": {"inner_steps": 3}}}, "has no option"),
    ({"learner": {"name": "reptile"}}, "unknown learner"),
    ({"model": {"name": "mlp", "options": {"in_dim": 4, "per_step_blocks": "last", "n_layer": 2}}}, "has no option"),
    ({"model": {"name": "mlp", "options": {"in_dim": 4, "out_dim": 2}}}, "does not match"),
    ({"learner": {"name": "maml", "opts": {}}}, "unknown key"),
    ({"format": "assayfew-core/9"}, "unsupported format"),
])
def test_config_rejects_unknown_or_unsupported_keys(change, message):
    base = {"model": {"name": "mlp", "options": {"in_dim": 4}}, "learner": {"name": "anil++"},
            "mixer": {"name": "metamix"}}
    CoreConfig.from_dict(base)  # valid as it is
    with pytest.raises(ValueError, match=message):
        CoreConfig.from_dict(base | change)
    with pytest.raises(ValueError, match="missing"):
        CoreConfig.from_dict({"learner": {"name": "anil"}})


def test_legacy_model_configs_convert_to_the_same_learner():
    legacy = json.loads((default_model_dir() / "m0" / "config.json").read_text())
    cfg = CoreConfig.of_model(legacy)
    assert cfg.learner == Part("anil++", {"inner_steps": 5, "inner_lr": 0.01, "msl_epochs": 10,
                                          "first_order_epochs": 0})
    assert cfg.model.options["per_step_blocks"] == "last" and cfg.model.options["n_steps"] == 5
    old = {"architecture": {"type": "mlp", "in_dim": 8, "hidden": [4]},  # before per_step_blocks existed
           "algorithm": {"name": "maml", "inner_steps": 2, "inner_lr": 0.1},
           "mixing": {"name": "none", "alpha": 0.5, "beta": 0.5, "layers": [1], "fixed_lambda": None}}
    converted = CoreConfig.of_model(old)
    assert converted.model.options["per_step_blocks"] == "all" and converted.mixer == Part("none")
    assert converted.build_learner().inner_steps == 2


def test_training_options_a_part_does_not_have_are_rejected():
    from assayfew.train import TrainConfig

    assert TrainConfig.from_dict({"mix": "none"}).core(8).mixer == Part("none")
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig.from_dict({"mix": "none", "alpha": 0.2})
    with pytest.raises(ValueError, match="msl_epochs"):
        TrainConfig.from_dict({"algo": "maml", "msl_epochs": 3})
    assert TrainConfig.from_dict({"algo": "maml", "first_order_epochs": 2}).core(8).learner.options[
        "first_order_epochs"] == 2  # every learner honours it now
