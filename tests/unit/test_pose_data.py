"""Pose data: the npz format and its checks, the restricted-unpickler converter (valid and malicious pickles),
the K-shot sampler, and the procedural renders (byte-identical for a seed; skipped without the shared data)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from assayfew.data import DataFormatError
from assayfew.pose.data import check_pose_arrays, convert_pickle, load_pose, save_pose_npz
from assayfew.pose.episodes import LABEL_SCALE, PoseSampler
from assayfew.pose.render import RenderConfig, make_pose_data, render_view


def _arrays(objects: int = 3, views: int = 6, side: int = 8, k: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (objects, views, side * side)).astype(np.uint8),
            rng.random((objects, views, k)))


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("as_dict", [False, True])
def test_convert_reads_mr_maml_pickles(tmp_path, protocol, as_dict):
    x, y = _arrays()
    (tmp_path / "d.pkl").write_bytes(pickle.dumps({"x": x, "y": y} if as_dict else (x, y), protocol=protocol))
    data = convert_pickle(tmp_path / "d.pkl", tmp_path / "d.npz")
    assert data.images.shape == (3, 6, 64) and data.size == 8 and np.array_equal(data.images, x)
    assert np.allclose(data.angles, y[..., -1])  # the last column is the azimuth
    assert np.array_equal(load_pose(tmp_path / "d.npz").images, x)


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_convert_refuses_any_other_global_without_running_it(tmp_path, payload):
    marker = tmp_path / "pwned"
    x, _ = _arrays()
    if payload == "system":
        obj = (x, _Exploit(str(marker)))
    else:
        class Eval:
            def __reduce__(self):
                return eval, (f"open({str(marker)!r}, 'w')",)
        obj = (Eval(), x)
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match="refused.*only numpy arrays"):
        convert_pickle(tmp_path / "bad.pkl", tmp_path / "bad.npz")
    assert not marker.exists() and not (tmp_path / "bad.npz").exists()


@pytest.mark.parametrize(("x", "y", "message"), [
    (np.zeros((3, 64), np.uint8), np.zeros((3,)), "x has shape"),
    (np.zeros((2, 3, 60), np.uint8), np.zeros((2, 3)), "square images"),
    (np.zeros((2, 3, 64), np.uint8), np.zeros((2, 4)), "y has shape"),
    (np.full((2, 3, 64), 300), np.zeros((2, 3)), "8-bit"),
    (np.zeros((2, 3, 64), np.uint8), np.array([[0.1, np.nan, 0.2], [0.0, 0.0, 0.0]]), "object 0, view 1"),
])
def test_bad_arrays_are_named_errors(x, y, message):
    with pytest.raises(DataFormatError, match=message):
        check_pose_arrays(x, y, "f.npz")


def test_npz_is_byte_identical_and_foreign_npz_is_refused(tmp_path):
    x, y = _arrays()
    save_pose_npz(tmp_path / "a.npz", x, y, ["m0", "m1", "m2"])
    save_pose_npz(tmp_path / "b.npz", x, y, ["m0", "m1", "m2"])
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert load_pose(tmp_path / "a.npz").names == ["m0", "m1", "m2"]
    np.savez(tmp_path / "other.npz", images=x)
    with pytest.raises(DataFormatError, match="no x or y"):
        load_pose(tmp_path / "other.npz")


def test_sampler_draws_one_object_per_task_and_scales_labels(tmp_path):
    x, y = _arrays(objects=4, views=8)
    save_pose_npz(tmp_path / "d.npz", x, y)
    data = load_pose(tmp_path / "d.npz")
    b = PoseSampler(data, 3, 4, seed=1).batch(5)
    assert b.xs.shape == (5, 3, 64) and b.xq.shape == (5, 4, 64) and float(b.xs.max()) <= 1.0
    for t in range(5):  # every row of a task is a view of the same object, label = its angle × 10
        rows = np.concatenate([b.xs[t].numpy(), b.xq[t].numpy()]) * 255
        labels = np.concatenate([b.ys[t].numpy(), b.yq[t].numpy()]) / LABEL_SCALE
        obj = int(np.argmin([np.abs(x[o].astype(float)[:, None] - rows[None]).sum(-1).min(0).sum() for o in range(4)]))
        hits = [int(np.argmin(np.abs(x[obj].astype(float) - r).sum(-1))) for r in rows]
        assert len(set(hits)) == 7 and np.allclose(labels, y[obj, hits, -1], atol=1e-6)
    with pytest.raises(DataFormatError, match="8 views per object, fewer than 5-shot \\+ 4 query"):
        PoseSampler(data, 5, 4)


def test_views_differ_with_the_angle_and_repeat_exactly():
    cfg = RenderConfig(size=32)
    xyz = np.array([[2.0, 0.0, 0.0], [-1.0, 1.0, 0.2], [-1.0, -1.0, -0.3], [0.5, 0.3, 1.0]])
    radii, grey = np.full(4, 1.0), np.array([0.5, 0.9, 0.3, 0.7])
    a, b = render_view(xyz, radii, grey, 0.3, cfg, 4.0), render_view(xyz, radii, grey, 0.3 + np.pi, cfg, 4.0)
    assert a.dtype == np.uint8 and a.shape == (32, 32) and a.max() > 0
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 1000  # the half-turn is visible
    assert np.array_equal(a, render_view(xyz, radii, grey, 0.3, cfg, 4.0))


def test_make_data_is_byte_identical_for_a_seed(shared_data, tmp_path):
    cfg = RenderConfig(train_objects=3, test_objects=2, views=4, size=32, seed=5)
    info = make_pose_data(tmp_path / "a", cfg)
    make_pose_data(tmp_path / "b", cfg)
    for name in ("train.npz", "test.npz", "data.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train = load_pose(tmp_path / "a" / "train.npz")
    assert train.images.shape == (3, 4, 32 * 32) and train.names == info["objects"]["train"]
    assert not set(info["objects"]["train"]) & set(info["objects"]["test"])
    make_pose_data(tmp_path / "c", RenderConfig(train_objects=3, test_objects=2, views=4, size=32, seed=6))
    assert (tmp_path / "c" / "train.npz").read_bytes() != (tmp_path / "a" / "train.npz").read_bytes()


def test_make_data_without_shared_data_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAYFEW_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="shared molecules.*ASSAYFEW_SHARED_DATA"):
        make_pose_data(tmp_path / "out", RenderConfig(train_objects=1, test_objects=1, views=2, size=16))


def test_trained_objects_are_the_complement_of_the_validation_objects(tmp_path):
    from assayfew.pose.train import held_out_objects, split_objects, trained_objects

    x, y = _arrays(objects=10, views=3)
    save_pose_npz(tmp_path / "d.npz", x, y, [f"m{i}" for i in range(10)])
    data = load_pose(tmp_path / "d.npz")
    train, val = split_objects(data, 0.2, seed=4)
    assert len(held_out_objects(10, 0.2, 4)) == 2 and not set(train.names) & set(val.names)
    config = {"training": {"n_train_objects": 8, "n_val_objects": 2, "val_fraction": 0.2, "seed": 4}}
    assert trained_objects(data, config).names == train.names
    with pytest.raises(ValueError, match="trained on data of 9"):
        trained_objects(data, {"training": {**config["training"], "n_train_objects": 7}})
