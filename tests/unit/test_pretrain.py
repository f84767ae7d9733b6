"""Multitask pre-training of the body, and meta-training that starts from it (`init_body`)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from assayfew.checkpoint import load_model
from assayfew.pretrain import HEADS_FILE, PretrainConfig, multitask_loss, pretrain
from assayfew.tasks import EpisodeSampler
from assayfew.train import TrainConfig, train
from assayfew.trainstep import episode_batch
from tests.conftest import TINY_CONFIG, make_synthetic_taskset

TINY_PRE = dict(hidden=(32, 32), epochs=3, iters=20, assays_per_batch=4, support_min=8, support_max=16, query_min=8,
                query_max=16, val_max_assays=4, device="cpu")


@pytest.fixture(scope="module")
def data():
    ts = make_synthetic_taskset()
    return ts.subset(ts.assay_ids[:9]), ts.subset(ts.assay_ids[9:])


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrain")
    result = pretrain(PretrainConfig(**TINY_PRE), *data, run)
    return run, result


def _loss(run, train_set, batches):
    learner = load_model(run / "model").learners[0]
    heads = load_file(str(run / HEADS_FILE))
    with torch.no_grad():
        return float(np.mean([float(multitask_loss(learner, heads["weight"], heads["bias"], torch.tensor(a), b))
                              for a, b in batches]))


def test_pretraining_lowers_the_multitask_loss(data, pretrained, tmp_path):
    run, result = pretrained
    untrained = tmp_path / "untrained"
    pretrain(PretrainConfig(**TINY_PRE | {"epochs": 1, "iters": 1, "lr": 0.0}), *data, untrained)
    sampler = EpisodeSampler(data[0], support_range=(8, 16), query_range=(8, 16), seed=123)
    batches = []
    for _ in range(5):
        episodes = sampler.sample_rows(4)
        batches.append(([ep[0] for ep in episodes], episode_batch(data[0], episodes, "center", 0.5)))
    before, after = _loss(untrained, data[0], batches), _loss(run, data[0], batches)
    assert after < 0.7 * before, (before, after)
    assert 0 <= result.best_epoch < 3 and len(result.history) == 3


def test_run_directory_holds_a_model_heads_and_config(data, pretrained):
    run, result = pretrained
    model = load_model(run / "model")
    assert model.learners[0].model.hidden == (32, 32) and model.config["training"]["epoch"] == result.best_epoch
    assert model.config["pretraining"]["assay_ids"] == data[0].assay_ids
    heads = load_file(str(run / HEADS_FILE))
    assert heads["weight"].shape == (9, 32) and heads["bias"].shape == (9,)
    head = model.learners[0].params["head_weight"].detach()
    torch.testing.assert_close(head.squeeze(-1), heads["weight"].mean(0))  # the mean per-assay head
    bn = model.learners[0].params["block2_bn_weight"].detach()  # per-step rows all equal the trained one
    assert bn.shape[0] == 5 and torch.equal(bn, bn[:1].expand_as(bn))


@pytest.mark.parametrize("head", ["mean", "fresh"])
def test_meta_training_starts_from_the_pretrained_body(data, pretrained, tmp_path, head):
    run, _ = pretrained
    cfg = TrainConfig(**TINY_CONFIG | {"epochs": 1, "iters": 2, "outer_lr": 0.0, "init_body": str(run),
                                       "init_head": head})
    train(cfg, *data, tmp_path / "meta")  # outer rate 0: the saved model is the first state
    scratch = tmp_path / "scratch"
    train(TrainConfig(**TINY_CONFIG | {"epochs": 1, "iters": 2, "outer_lr": 0.0}), *data, scratch)
    first = load_model(tmp_path / "meta" / "model").learners[0].params
    body = load_model(run / "model").learners[0].params
    fresh = load_model(scratch / "model").learners[0].params
    for name in first:
        expected = fresh if (head == "fresh" and name.startswith("head_")) else body
        torch.testing.assert_close(first[name], expected[name], msg=name)
    assert not torch.equal(body["block1_weight"], fresh["block1_weight"])


def test_init_body_mismatch_and_missing_are_clear_errors(data, pretrained, tmp_path):
    run, _ = pretrained
    with pytest.raises(ValueError, match=r"hidden widths \(32, 32\) differ from this run's \(16, 16\)"):
        train(TrainConfig(**TINY_CONFIG | {"hidden": (16, 16), "init_body": str(run)}), *data, tmp_path / "a")
    with pytest.raises(ValueError, match="init_body: .*no such directory"):
        train(TrainConfig(**TINY_CONFIG | {"init_body": str(tmp_path / "nowhere")}), *data, tmp_path / "b")
    with pytest.raises(ValueError, match="parameter block2_bn_weight has shape"):
        train(TrainConfig(**TINY_CONFIG | {"inner_steps": 3, "init_body": str(run)}), *data, tmp_path / "c")
    with pytest.raises(ValueError, match="init_head is used only with init_body"):
        TrainConfig(init_head="fresh")
    with pytest.raises(ValueError, match="unknown pre-training option"):
        PretrainConfig.from_dict({"algo": "maml"})
