"""Conv-4 batched over tasks: equal to the per-task reference (losses and meta-gradients) for every learner
the image benchmark runs × every mixer, and the three task batchings agree."""

import pytest
import torch

from assayfew.meta import MIXERS, Classification, Conv4, TaskBatch, build_learner, build_mixer
from assayfew.meta.reference import reference_meta_loss

pytestmark = pytest.mark.usefixtures("one_thread")

WAY, SIZE = 3, 8


def tiny_batch(t: int = 3, shot: int = 2, query: int = 2, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(WAY).repeat_interleave(shot).repeat(t, 1).double()
    yq = torch.randint(0, WAY, (t, WAY * query), generator=g).double()
    xs = torch.rand(t, WAY * shot, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    xq = torch.rand(t, WAY * query, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    return TaskBatch(xs, ys, torch.ones(ys.shape, dtype=torch.float64), xq, yq, torch.ones(yq.shape, dtype=torch.float64))


def learner(name: str, batching: str = "loop"):
    model = Conv4(out_dim=WAY, image_size=SIZE, filters=3, n_blocks=2, n_steps=2, batching=batching)
    return build_learner(name, model, Classification(n_classes=WAY), inner_steps=2, inner_lr=0.3, seed=1).double()


def grads(module, loss):
    named = list(module.named_parameters())
    return dict(zip([n for n, _ in named], torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)))


def mixer(name: str):
    return build_mixer(name) if name in ("none", "cob") else build_mixer(name, layers=(0, 1, 2))


def test_every_mixer_is_covered():
    assert set(MIXERS.keys()) == {"none", "metamix", "mixup_ss", "mixup_qq", "cob"}


@pytest.mark.parametrize("mix", sorted(MIXERS.keys()))
@pytest.mark.parametrize("algo", ["maml", "anil", "metasgd"])
def test_batched_equals_per_task_reference(algo, mix):
    lrn, m, batch = learner(algo), mixer(mix), tiny_batch()
    loss, _ = lrn.meta_loss(batch, m, generator=torch.Generator().manual_seed(3))
    ref = reference_meta_loss(lrn, batch, m, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loss, ref, rtol=1e-9, atol=1e-9)
    gb, gr = grads(lrn, loss), grads(lrn, ref)
    assert sum(float(g.abs().sum()) for g in gb.values() if g is not None) > 0
    for name, g in gr.items():
        if g is None:
            assert gb[name] is None or float(gb[name].abs().max()) == 0.0, name
        else:
            assert torch.allclose(gb[name], g, rtol=1e-7, atol=1e-9), name


def test_reference_comparison_can_fail():
    """A different mixing plan gives a different loss: the comparison above is not vacuous."""
    lrn, m, batch = learner("maml"), mixer("metamix"), tiny_batch()
    loss, _ = lrn.meta_loss(batch, m, generator=torch.Generator().manual_seed(3))
    ref = reference_meta_loss(lrn, batch, m, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(loss, ref)


@pytest.mark.parametrize("batching", ["grouped", "vmap"])
def test_task_batchings_agree(batching):
    batch = tiny_batch()
    base, other = learner("maml", "loop"), learner("maml", batching)
    m = mixer("metamix")
    la, _ = base.meta_loss(batch, m, generator=torch.Generator().manual_seed(0))
    lb, _ = other.meta_loss(batch, m, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(la, lb, rtol=1e-10)
    ga, gb = grads(base, la), grads(other, lb)
    assert all(torch.allclose(ga[n], gb[n], rtol=1e-8, atol=1e-10) for n in ga)


def test_flat_and_image_inputs_agree_and_rows_are_independent():
    """Batched adaptation of flat (T, N, C*H*W) images equals adapting one task given as (N, C, H, W) images;
    a query image's logits do not depend on the other query images."""
    lrn, batch = learner("maml"), tiny_batch(t=2)
    flat = lrn.adapt(batch.xs.flatten(2), batch.ys)
    a = lrn.predict(flat, batch.xq.flatten(2))
    assert a.shape == (2, WAY * 2, WAY)
    one = lrn.adapt(batch.xs[1], batch.ys[1])
    assert torch.allclose(lrn.predict(one, batch.xq[1]), a[1])
    assert torch.allclose(lrn.predict(flat, batch.xq[:, :1].flatten(2)), a[:, :1])


def test_conv4_shapes_and_bad_sizes():
    model = Conv4(out_dim=5, image_size=84, in_channels=3)
    assert model.features == 64 * 5 * 5 and model.n_layers == 5
    params = model.init_params(torch.Generator().manual_seed(0))
    hs, stats = model.trace(params, torch.rand(2, 4, 3, 84, 84), 0)
    assert [tuple(h.shape[2:]) for h in hs] == [(3, 84, 84), (64, 42, 42), (64, 21, 21), (64, 10, 10), (64, 5, 5), (5,)]
    assert sorted(stats) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="too small"):
        Conv4(image_size=8, n_blocks=4)
    with pytest.raises(ValueError, match="batching"):
        Conv4(batching="magic")
