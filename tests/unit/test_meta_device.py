"""The learners follow the device of the batch tensors (CUDA check skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from assayfew.meta import MLP, build_learner, build_mixer, pad_tasks
from assayfew.meta.synthetic import random_fingerprint_tasks


pytestmark = pytest.mark.usefixtures("one_thread")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _run(device: str, name: str) -> tuple[float, dict[str, torch.Tensor], torch.Tensor]:
    lrn = build_learner(name, MLP(64, (32, 16), n_steps=3, per_step_blocks="all"), inner_steps=3, inner_lr=0.05, seed=0)
    lrn = lrn.to(device=device, dtype=torch.float64)
    tasks = random_fingerprint_tasks([(9, 6), (4, 11), (7, 7)], 64, seed=1, density=0.1)
    batch = pad_tasks(tasks).to(device, torch.float64)
    gen = torch.Generator().manual_seed(3)  # plans are drawn on the CPU: same draws on every device
    loss, _ = lrn.meta_loss(batch, build_mixer("metamix", layers=(0, 1, 2)), generator=gen, epoch=2)
    loss.backward()
    grads = {n: p.grad.detach().cpu() for n, p in lrn.named_parameters() if p.grad is not None}
    pred = lrn.adapt_and_predict(batch.xs[0][:9], batch.ys[0][:9], batch.xq[0][:6])
    assert pred.device.type == torch.device(device).type
    return float(loss.detach()), grads, pred.cpu()


@pytest.mark.parametrize("name", ["anil++", "maml"])
def test_cpu_run_is_self_consistent(name):
    a, b = _run("cpu", name), _run("cpu", name)
    assert a[0] == b[0] and torch.equal(a[2], b[2])


@cuda
@pytest.mark.parametrize("name", ["anil++", "maml"])
def test_cuda_matches_cpu(name):
    cpu, gpu = _run("cpu", name), _run("cuda", name)
    assert abs(cpu[0] - gpu[0]) < 1e-9 * max(1.0, abs(cpu[0]))
    for n in cpu[1]:
        assert torch.allclose(cpu[1][n], gpu[1][n], atol=1e-8), n
    assert torch.allclose(cpu[2], gpu[2], atol=1e-8)


@cuda
def test_cuda_generator_accepted():
    lrn = build_learner("anil", MLP(16, (8,), per_step_blocks="all"), inner_steps=2).cuda()
    batch = pad_tasks(random_fingerprint_tasks([(5, 4), (3, 6)], 16)).to("cuda")
    loss, _ = lrn.meta_loss(batch, build_mixer("metamix", layers=(0, 1)),
                            generator=torch.Generator(device="cuda").manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
