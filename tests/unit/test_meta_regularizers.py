"""Regularisers (`assayfew.meta.regularizers`): each one's meta-gradient against the per-task reference with
every learner, and the mechanism that makes it what it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from assayfew.meta import LEARNERS, MLP, REGULARIZERS, build_kind, build_learner, build_mixer, build_regularizer
from assayfew.meta.reference import reference_meta_loss
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
