"""Mixers: limiting cases of MetaMix, partner sampling, and the paper's toy regression (appendix A.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assayfew.meta import MIXERS, MLP, build_learner, build_mixer, masked_mse, pad_tasks
from assayfew.meta.mixing import partners
from assayfew.meta.synthetic import random_fingerprint_tasks


pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 24


def _learner(name: str = "anil++"):
    return build_learner(name, MLP(DIM, (16, 12), n_steps=3, per_step_blocks="all"), inner_steps=3, inner_lr=0.05, seed=2).double()


def _batch(sizes):
    return pad_tasks(random_fingerprint_tasks(sizes, DIM, seed=4)).to(dtype=torch.float64)


@pytest.mark.parametrize("name", ["anil++", "maml"])
def test_metamix_lambda_one_at_input_is_the_support_loss(name):
    lrn = _learner(name)
    batch = _batch([(8, 8), (5, 5), (7, 7)])  # equal support/query sizes: the pairing is a permutation
    mix = build_mixer("metamix", layers=(0,), fixed_lambda=1.0)
    loss, _ = lrn.meta_loss(batch, mix, generator=torch.Generator().manual_seed(0), epoch=50)
    adapted = lrn.adapt(batch.xs, batch.ys, batch.ms)
    support_loss = masked_mse(lrn.predict(adapted, batch.xs), batch.ys, batch.ms).mean()
    query_loss = masked_mse(lrn.predict(adapted, batch.xq), batch.yq, batch.mq).mean()
    assert torch.allclose(loss, support_loss, atol=1e-10)
    assert not torch.allclose(loss, query_loss, atol=1e-3)


@pytest.mark.parametrize("layers", [(0,), (1,), (2,)])
def test_metamix_lambda_zero_is_the_query_loss(layers):
    lrn = _learner()
    batch = _batch([(9, 6), (4, 11), (7, 7)])
    gen = torch.Generator
    mixed, _ = lrn.meta_loss(batch, build_mixer("metamix", layers=layers, fixed_lambda=0.0),
                             generator=gen().manual_seed(0), epoch=50)
    plain, _ = lrn.meta_loss(batch, build_mixer("none"), generator=gen().manual_seed(0), epoch=50)
    random_lam, _ = lrn.meta_loss(batch, build_mixer("metamix", layers=layers),
                                  generator=gen().manual_seed(0), epoch=50)
    assert torch.allclose(mixed, plain, atol=1e-10)
    assert not torch.allclose(random_lam, plain, atol=1e-4)


def test_cob_loss_is_over_support_and_query_rows():
    lrn = _learner("anil")
    batch = _batch([(9, 6), (4, 11)])
    loss, _ = lrn.meta_loss(batch, build_mixer("cob"), generator=torch.Generator().manual_seed(0))
    adapted = lrn.adapt(batch.xs, batch.ys, batch.ms)
    ps, pq = lrn.predict(adapted, batch.xs), lrn.predict(adapted, batch.xq)
    per_task = (((ps - batch.ys) ** 2 * batch.ms).sum(1) + ((pq - batch.yq) ** 2 * batch.mq).sum(1)) / (
        batch.ms.sum(1) + batch.mq.sum(1))
    assert torch.allclose(loss, per_task.mean(), atol=1e-10)


def test_partners_permutation_or_replacement():
    rng = np.random.default_rng(0)
    m_from = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]], dtype=float)
    m_to = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=float)
    idx = partners(rng, m_from, m_to)
    assert len(set(idx[0, :4].tolist())) == 4 and set(idx[0].tolist()) <= {0, 1, 2, 3, 4}  # no repeats
    assert set(idx[1].tolist()) <= {0, 1}  # only valid rows, drawn with replacement


def test_mixer_registry_and_errors():
    assert set(MIXERS) == {"none", "metamix", "mixup_ss", "mixup_qq", "cob"}
    with pytest.raises(ValueError, match="unknown mixer"):
        build_mixer("nope")
    with pytest.raises(ValueError, match="fixed_lambda"):
        build_mixer("metamix", fixed_lambda=1.5)
    lrn = _learner()
    with pytest.raises(ValueError, match="out of range"):
        lrn.meta_loss(_batch([(4, 4)]), build_mixer("metamix", layers=(3,)), generator=torch.Generator())


def _toy_tasks(rng: torch.Generator, n_tasks: int, n: int = 10):
    tasks = []
    for _ in range(n_tasks):
        xs, xq = torch.rand(n, 1, generator=rng) * 4 - 2, torch.rand(n, 1, generator=rng) * 4 - 2
        ys = 5.3 * xs[:, 0] + 0.1 * torch.randn(n, generator=rng)
        yq = 4.7 * xq[:, 0] + 0.1 * torch.randn(n, generator=rng)
        tasks.append((xs, ys, xq, yq))
    return tasks


def _toy_slope(mixer_name: str) -> float:
    torch.manual_seed(0)
    lrn = build_learner("maml", MLP(1, (), n_steps=1, per_step_blocks="all"), inner_steps=1, inner_lr=0.05, seed=0)
    mixer = build_mixer(mixer_name, **({"layers": (0,)} if mixer_name != "none" else {}))
    opt = torch.optim.Adam(lrn.parameters(), lr=0.05)
    data, gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    for _ in range(300):
        loss, _ = lrn.meta_loss(pad_tasks(_toy_tasks(data, 8)), mixer, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    xs, ys, _, _ = _toy_tasks(torch.Generator().manual_seed(3), 1)[0]
    adapted = lrn.adapt(xs, ys)
    grid = torch.tensor([[-1.0], [1.0]])
    pred = lrn.predict(adapted, grid)
    return float(pred[1] - pred[0]) / 2


def test_toy_metamix_ends_closer_to_true_slope_than_maml():
    """y = 5x; support drawn with slope 5.3, query with 4.7: MAML fits the query slope, MetaMix ~5."""
    maml, metamix = _toy_slope("none"), _toy_slope("metamix")
    assert abs(maml - 4.7) < 0.15
    assert abs(metamix - 5.0) < 0.15
    assert abs(metamix - 5.0) < abs(maml - 5.0) - 0.1
