"""Training, validation, checkpointing and adaptation create every tensor where the learner lives.

Without a GPU the check runs the learner on the CPU with the *default* device set to 'meta' (a device that holds
no data): any tensor created without naming the learner's device lands there, and a dispatch mode fails on the
first operation that produces one, naming it. This is the class of bug that crashed CUDA training at the first
validation (tensors built on the default device while the learner was on the GPU). With a GPU the same run
happens on CUDA for real.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from assayfew.checkpoint import load_model
from assayfew.device import resolve_device
from assayfew.evaluate import evaluation_episodes
from assayfew.train import Reporter, TrainConfig, train
from tests.conftest import TINY_CONFIG, make_synthetic_taskset

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


class _NoDefaultDeviceTensors(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.is_meta for t in tree_leaves(out)):
            raise AssertionError(f"{func} created a tensor on the default device, not where the learner lives")
        return out


@contextmanager
def learner_device_only() -> Iterator[None]:
    """Fail on any tensor created on the default device (see the module docstring)."""
    with torch.device("meta"), _NoDefaultDeviceTensors():
        yield


def _data():
    ts = make_synthetic_taskset()
    return ts.subset(ts.assay_ids[:9]), ts.subset(ts.assay_ids[9:])


def test_the_check_catches_a_tensor_on_the_default_device():
    with learner_device_only():
        with pytest.raises(AssertionError, match="default device"):
            torch.zeros(3)
        with pytest.raises(AssertionError, match="default device"):
            torch.as_tensor(np.ones(3, dtype=np.float32))
        torch.zeros(3, device="cpu")  # named explicitly: fine


class _Stop(Exception):
    pass


class _StopAfterFirstEpoch(Reporter):
    def epoch(self, row: dict) -> None:
        raise _Stop


def test_training_validation_checkpoints_and_resume_create_tensors_on_the_learners_device(tmp_path, one_thread):
    tr, va = _data()
    cfg = TrainConfig(**TINY_CONFIG | {"iters": 4})
    with learner_device_only():
        with pytest.raises(_Stop):
            train(cfg, tr, va, tmp_path / "audited", reporter=_StopAfterFirstEpoch())
        audited = train(cfg, tr, va, tmp_path / "audited", resume=True)  # reads the state onto the device
    plain = train(cfg, tr, va, tmp_path / "plain")
    assert [r["val_mean_r2"] for r in audited.history] == [r["val_mean_r2"] for r in plain.history]
    a = load_file(str(tmp_path / "audited" / "state" / "learner.safetensors"))
    b = load_file(str(tmp_path / "plain" / "state" / "learner.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("head", ["gd", "ridge"])
def test_adapt_predict_creates_tensors_on_the_learners_device(tiny_model_dir, head, one_thread):
    model = load_model(tiny_model_dir).with_prediction(head=head, fp_ridge_weight=0.3)
    task = evaluation_episodes(_data()[1], seed=0)[0]
    with learner_device_only():
        audited = model.adapt_predict(task.support_x, task.support_y, task.query_x)
    np.testing.assert_array_equal(audited, model.adapt_predict(task.support_x, task.support_y, task.query_x))


def test_resolve_device_names_what_is_wrong():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device must be"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")


@cuda
def test_cuda_training_validates_checkpoints_and_matches_cpu(tmp_path):
    tr, va = _data()
    cfg = TINY_CONFIG | {"epochs": 1, "iters": 4}
    gpu = train(TrainConfig(**cfg | {"device": "cuda"}), tr, va, tmp_path / "gpu")
    cpu = train(TrainConfig(**cfg), tr, va, tmp_path / "cpu")
    assert abs(gpu.history[0]["val_mean_r2"] - cpu.history[0]["val_mean_r2"]) < 1e-3
    task = evaluation_episodes(va, seed=0)[0]
    on_gpu = load_model(tmp_path / "gpu" / "model").to("cuda")
    assert on_gpu.device.type == "cuda"
    np.testing.assert_allclose(on_gpu.adapt_predict(task.support_x, task.support_y, task.query_x),
                               load_model(tmp_path / "gpu" / "model").adapt_predict(task.support_x, task.support_y,
                                                                                    task.query_x), atol=1e-4)
    train(TrainConfig(**cfg | {"device": "cuda", "epochs": 2}), tr, va, tmp_path / "gpu", resume=True)


@cuda
def test_training_iterations_never_wait_for_the_gpu(one_thread):
    """Between progress reports the loop only queues work: a host sync inside a meta-iteration is an error."""
    from assayfew.checkpoint import build_learner_from_config
    from assayfew.distributed import SINGLE
    from assayfew.meta import build_mixer
    from assayfew.tasks import EpisodeSampler
    from assayfew.train import model_config
    from assayfew.trainstep import meta_step

    tr, _ = _data()
    cfg = TrainConfig(**TINY_CONFIG | {"device": "cuda"})
    device = resolve_device("cuda")
    learner = build_learner_from_config(model_config(cfg, tr.spec, tr)).to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.outer_lr, fused=True)
    sampler = EpisodeSampler(tr, support_range=(8, 16), query_range=(8, 16), max_support=16, max_query=16)
    gen = torch.Generator().manual_seed(0)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = meta_step(learner, build_mixer("metamix"), tr, sampler.sample_rows(4), label_scaling="center",
                         min_std=0.5, generator=gen, epoch=0, device=device, dist=SINGLE)
        torch.nn.utils.clip_grad_norm_(learner.parameters(), 10.0, foreach=True)
        opt.step()
        return loss

    step()  # warm-up: one-time allocations and constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(bool(torch.isfinite(x)) for x in losses)


@pytest.mark.parametrize("reg", ["weight_decay", "cavia", "meta_dropout", "mr_maml", "taml"])
def test_regularizers_create_tensors_on_the_learners_device(reg, tmp_path, one_thread):
    tr, va = _data()
    cfg = TrainConfig(**TINY_CONFIG | {"epochs": 1, "iters": 2, "regularizer": reg})
    with learner_device_only():
        train(cfg, tr, va, tmp_path)
        x, y, _ = va.assay(0)
        assert np.all(np.isfinite(load_model(tmp_path / "model").adapt_predict(x[:20], y[:20], x[20:])))
