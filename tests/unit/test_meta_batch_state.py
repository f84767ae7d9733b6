"""pad_tasks validation, dtype moves, safetensors/JSON round trips of learners."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from assayfew.meta import (LEARNERS, MLP, build_learner, learner_config, learner_from_config, learner_state,
                           load_learner_state, pad_tasks)
from assayfew.meta.registry import option_names
from assayfew.meta.synthetic import random_fingerprint_tasks


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pad_tasks_shapes_and_masks():
    tasks = random_fingerprint_tasks([(3, 5), (6, 2)], dim=8)
    tasks[0] = tuple(t.numpy() for t in tasks[0])  # numpy accepted too
    b = pad_tasks(tasks)
    assert b.xs.shape == (2, 6, 8) and b.xq.shape == (2, 5, 8) and b.xs.dtype == torch.float32
    assert b.ms.sum(1).tolist() == [3, 6] and b.mq.sum(1).tolist() == [5, 2]
    assert torch.equal(b.ys[1, :6], tasks[1][1]) and float(b.ys[0, 3:].abs().sum()) == 0
    assert b.to(dtype=torch.float64).xs.dtype == torch.float64


@pytest.mark.parametrize(
    ("task", "match"),
    [
        ((np.zeros((3, 4)), np.zeros(2), np.zeros((1, 4)), np.zeros(1)), "task 0: support"),
        ((np.zeros((0, 4)), np.zeros(0), np.zeros((1, 4)), np.zeros(1)), "empty support"),
        ((np.zeros((2, 4)), np.array([1.0, np.nan]), np.zeros((1, 4)), np.zeros(1)), "non-finite"),
        ((np.zeros((2, 4)), np.zeros(2), np.zeros((1, 5)), np.zeros(1)), "feature shapes"),
    ],
)
def test_pad_tasks_rejects_bad_tasks(task, match):
    with pytest.raises(ValueError, match=match):
        pad_tasks([task])


def _own(name: str, **options) -> dict:
    """The options a learner has (the closed-form head has no inner steps or rates)."""
    return {k: v for k, v in options.items() if k in option_names(LEARNERS[name])}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_state_round_trip_through_safetensors(tmp_path, name):
    model = MLP(16, (8, 8), n_steps=2, per_step_blocks="all")
    a = build_learner(name, model, **_own(name, inner_steps=2), seed=0)
    b = build_learner(name, model, **_own(name, inner_steps=2), seed=1)
    xs, ys, xq, _ = random_fingerprint_tasks([(6, 4)], dim=16)[0]
    assert not torch.allclose(a.adapt_and_predict(xs, ys, xq), b.adapt_and_predict(xs, ys, xq))
    save_file(learner_state(a), str(tmp_path / "m.safetensors"))
    load_learner_state(b, load_file(str(tmp_path / "m.safetensors")))
    assert torch.equal(a.adapt_and_predict(xs, ys, xq), b.adapt_and_predict(xs, ys, xq))


def test_load_rejects_mismatched_state():
    a = build_learner("anil", MLP(16, (8,), per_step_blocks="all"))
    b = build_learner("anil", MLP(16, (9,), per_step_blocks="all"))
    with pytest.raises(ValueError, match="shape"):
        load_learner_state(b, learner_state(a))
    with pytest.raises(ValueError, match="missing"):
        load_learner_state(build_learner("anil++", MLP(16, (8,), per_step_blocks="all")), learner_state(a))


def test_unknown_learner():
    with pytest.raises(ValueError, match="unknown learner"):
        build_learner("nope", MLP(4, (2,), per_step_blocks="all"))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_config_round_trip_rebuilds_the_same_learner(tmp_path, name):
    model = MLP(16, (8, 8), n_steps=3, out_bias=6.5, per_step_blocks="all")
    a = build_learner(name, model, **_own(name, inner_steps=3, inner_lr=0.02), seed=3)
    cfg = json.loads(json.dumps(learner_config(a)))
    b = learner_from_config(cfg)
    load_learner_state(b, learner_state(a))
    xs, ys, xq, _ = random_fingerprint_tasks([(6, 4)], dim=16)[0]
    assert torch.equal(a.adapt_and_predict(xs, ys, xq), b.adapt_and_predict(xs, ys, xq))
    assert b.inner_steps == (1 if name == "r2d2" else 3) and b.name == name
    with pytest.raises(ValueError, match="missing"):
        learner_from_config({"learner": name})


def test_sparse_rows_memoised_and_refreshed_after_in_place_change():
    batch = pad_tasks([(np.eye(3, 5), np.ones(3), np.eye(2, 5), np.ones(2))])
    rows = batch.sparse_rows("s")
    assert batch.sparse_rows("s") is rows
    assert rows.n_rows == 3 and rows.n_cols == 5 and rows.by_row.indices.tolist() == [0, 1, 2]
    batch.xs[0, 0, 4] = 1.0
    assert batch.sparse_rows("s").by_row.indices.tolist() == [0, 4, 1, 2]
    assert batch.sparse_rows("q").n_rows == 2
    assert batch.input_nnz("s") == 4 and batch.input_nnz("q") == 2


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_pad_tasks_names_the_task_with_a_non_finite_input(bad):
    good = (np.zeros((2, 4)), np.zeros(2), np.zeros((1, 4)), np.zeros(1))
    xq = np.zeros((1, 4))
    xq[0, 2] = bad
    with pytest.raises(ValueError, match="task 1: xq contains non-finite"):
        pad_tasks([good, (np.zeros((2, 4)), np.zeros(2), xq, np.zeros(1))])
    huge = np.full((2, 4), 3e38)  # finite values whose sum overflows are accepted
    assert pad_tasks([(huge, np.zeros(2), np.zeros((1, 4)), np.zeros(1))]).xs.shape == (1, 2, 4)
