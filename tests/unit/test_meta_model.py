"""Functional MLP and the sparse first-layer product."""

from __future__ import annotations

import pytest
import torch

from assayfew.meta import MLP, FunctionalModel
from assayfew.meta.model import masked_moments
from assayfew.meta.sparse import SparseRows, spmm


pytestmark = pytest.mark.usefixtures("one_thread")


def test_spmm_matches_dense_to_second_order():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(9, 30, generator=g) < 0.2).double()
    x[2] = 0.0  # an empty row
    x[4, 3] = 2.5  # a non-binary value
    w = torch.randn(30, 4, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(4, 1, dtype=torch.float64, generator=g, requires_grad=True)
    rows = SparseRows.from_dense(x)
    assert torch.allclose(spmm(rows, w), x @ w)

    def second(z):
        gw, = torch.autograd.grad(((z.tanh() @ v) ** 2).sum(), w, create_graph=True)
        return torch.autograd.grad((gw ** 2).sum(), (w, v))

    for a, b in zip(second(spmm(rows, w)), second(x @ w)):
        assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="columns"):
        spmm(rows, w[:5])


def test_sparse_and_dense_first_layer_agree():
    x = (torch.rand(3, 10, 64) < 0.05).double()
    mask = torch.ones(3, 10, dtype=torch.float64)
    sparse = MLP(64, (8, 8), sparse_input=True, per_step_blocks="all")
    dense = MLP(64, (8, 8), sparse_input=False, per_step_blocks="all")
    params = {k: v.double() for k, v in sparse.init_params(torch.Generator().manual_seed(0)).items()}
    a = sparse.trace(params, x, 0, mask=mask)[0][-1]
    b = dense.trace(params, x, 0, mask=mask)[0][-1]
    assert torch.allclose(a, b)


def test_mlp_layout_and_protocol():
    m = MLP(32, (16, 8), n_steps=4, per_step_blocks="last")
    assert isinstance(m, FunctionalModel)
    p = m.init_params()
    assert p["block1_weight"].shape == (32, 16) and p["head_weight"].shape == (8, 1)
    assert p["block1_bn_weight"].shape == (1, 16) and p["block2_bn_weight"].shape == (4, 8)
    assert m.n_layers == 3 and m.head_names == ("head_weight", "head_bias")
    hs, stats = m.trace(p, torch.rand(2, 5, 32), 3, mask=torch.ones(2, 5))
    assert [h.shape[-1] for h in hs] == [32, 16, 8, 1] and set(stats) == {1, 2}
    with pytest.raises(ValueError):
        MLP(32, (16,), per_step_blocks="first")


def test_masked_moments_ignore_padding():
    z = torch.randn(2, 6, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float64)
    mean, var = masked_moments(z, mask)
    assert torch.allclose(mean[0, 0], z[0, :3].mean(0)) and torch.allclose(var[0, 0], z[0, :3].var(0, unbiased=False))
    z4 = z.unsqueeze(-1)  # generic (T, N, C, 1) path agrees
    m4, v4 = masked_moments(z4, mask)
    assert torch.allclose(m4.squeeze(-1), mean) and torch.allclose(v4.squeeze(-1), var)


def test_block_diagonal_spmm_applies_per_task_weights():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(3, 5, 12, generator=g) < 0.3).double()
    w = torch.randn(3, 12, 4, dtype=torch.float64, generator=g, requires_grad=True)
    rows = SparseRows.from_batched(x)
    out = spmm(rows, w.reshape(-1, 4)).reshape(3, 5, 4)
    assert torch.allclose(out, torch.bmm(x, w))
    ga, = torch.autograd.grad((out.sin() ** 2).sum(), w, create_graph=True)
    gb, = torch.autograd.grad((torch.bmm(x, w).sin() ** 2).sum(), w, create_graph=True)
    assert torch.allclose(ga, gb)
    assert torch.allclose(torch.autograd.grad(ga.square().sum(), w)[0], torch.autograd.grad(gb.square().sum(), w)[0])


@pytest.mark.parametrize("binary", [True, False])
def test_vstack_equals_sparse_form_of_the_stacked_rows(binary):
    g = torch.Generator().manual_seed(4)
    top, bottom = (torch.rand(7, 20, generator=g) < 0.3).double(), (torch.rand(5, 20, generator=g) < 0.3).double()
    bottom[1] = 0.0  # an empty row
    if not binary:
        top[0, top[0].nonzero()[0, 0]] = 3.0
    got = SparseRows.vstack(SparseRows.from_dense(top), SparseRows.from_dense(bottom))
    want = SparseRows.from_dense(torch.cat([top, bottom]))
    assert (got.n_rows, got.n_cols) == (want.n_rows, want.n_cols)
    for form in ("by_row", "by_col"):
        a, b = getattr(got, form), getattr(want, form)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.offsets, b.offsets)
        assert (a.weights is None) == binary
        if not binary:
            assert torch.equal(a.weights.double(), b.weights.double())
    w = torch.randn(20, 3, dtype=torch.float64, generator=g)
    assert torch.allclose(spmm(got, w), torch.cat([top, bottom]) @ w)
    with pytest.raises(ValueError, match="columns"):
        SparseRows.vstack(SparseRows.from_dense(top), SparseRows.from_dense(torch.zeros(2, 5)))


def test_joint_first_linear_equals_separate_products():
    from assayfew.meta import pad_tasks
    from assayfew.meta.synthetic import random_fingerprint_tasks

    batch = pad_tasks(random_fingerprint_tasks([(5, 4), (3, 6)], 64, seed=2, density=0.1))
    model = MLP(64, (16, 8), transforms=True, per_step_blocks="all")
    params = model.init_params(torch.Generator().manual_seed(0))
    params["block1_transform"] = params["block1_transform"] + 0.1
    assert model.uses_sparse_input(batch.xs) and model.uses_sparse_input(batch.xq)
    zs, zq = model.joint_first_linear(params, [batch.xs, batch.xq], batch.sparse_rows("sq"))
    for z, x in ((zs, batch.xs), (zq, batch.xq)):
        assert torch.allclose(z, (x @ params["block1_weight"] + params["block1_bias"]) @ params["block1_transform"],
                              atol=1e-6)
