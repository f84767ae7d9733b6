"""`assayfew pose convert|make-data|train|evaluate` end to end on tiny data, and their bad-input errors (one
line, exit 2, no traceback)."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from assayfew.cli import typer_app
from assayfew.pose.data import save_pose_npz

runner = CliRunner()

TINY = ["--shot", "3", "--query", "3", "--epochs", "2", "--iters", "2", "--meta-batch", "2", "--inner-steps", "1",
        "--eval-steps", "2", "--encoder", "4,4", "--filters", "4", "--blocks", "1", "--val-episodes", "3",
        "--device", "cpu", "--seed", "3"]


def _pose_npz(path, objects: int = 5, views: int = 8, side: int = 16, seed: int = 0, y=None):
    """Objects whose images shift with the angle (a bright column at a position set by the angle)."""
    rng = np.random.default_rng(seed)
    angles = rng.random((objects, views)) if y is None else y
    x = rng.integers(0, 40, (objects, views, side, side))
    cols = (np.nan_to_num(angles) * side).astype(int) % side
    for o in range(objects):
        for v in range(views):
            x[o, v, :, cols[o, v]] = 255
    save_pose_npz(path, x.reshape(objects, views, -1).astype(np.uint8), angles[..., None])
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAYFEW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _error_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    return res.output


def test_train_resume_evaluate(tmp_path):
    train, test, run = _pose_npz(tmp_path / "train.npz"), _pose_npz(tmp_path / "test.npz", seed=1), tmp_path / "run"
    res = runner.invoke(typer_app, ["pose", "train", "--data", str(train), "--test-data", str(test), "--out", str(run),
                                    "--episodes", "12", "--algo", "maml", "--mix", "metamix", *TINY])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 12 and result["k_shot"] == 3 and result["mse"] > 0 and result["ci95"] > 0
    for name in ("config.toml", "metrics.csv", "evaluation.json", "model/weights.safetensors", "model/config.json",
                 "state/state.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["core"]["model"]["name"] == "pose" and config["core"]["kind"]["name"] == "regression"
    assert config["core"]["model"]["options"]["encoder"] == [4, 4] and config["pose"]["label_scale"] == 10.0
    weights = (run / "model" / "weights.safetensors").read_bytes()
    res = runner.invoke(typer_app, ["pose", "train", "--data", str(train), "--out", str(run), "--resume", *TINY])
    assert res.exit_code == 0, res.output
    assert (run / "model" / "weights.safetensors").read_bytes() == weights
    res = runner.invoke(typer_app, ["pose", "train", "--data", str(train), "--out", str(run), "--resume", *TINY,
                                    "--inner-lr", "0.5"])
    assert "cannot resume" in _error_line(res)
    # the saved model, the same seed and tasks -> the same MSE as after training
    res = runner.invoke(typer_app, ["pose", "evaluate", "--model", str(run / "model"), "--data", str(test),
                                    "--episodes", "12", "--query", "3", "--seed", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["mse"] == pytest.approx(result["mse"], rel=1e-6)
    # training-set MSE on the objects it was trained on; other data is refused for that
    res = runner.invoke(typer_app, ["pose", "evaluate", "--model", str(run / "model"), "--data", str(train),
                                    "--episodes", "6", "--query", "3", "--trained-objects", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["trained_objects"] is True
    res = runner.invoke(typer_app, ["pose", "evaluate", "--model", str(run / "model"), "--data",
                                    str(_pose_npz(tmp_path / "other.npz", objects=7)), "--trained-objects"])
    assert "the model was trained on data of 5" in _error_line(res)


def test_mr_maml_regularizer_trains_and_is_saved(tmp_path):
    train, run = _pose_npz(tmp_path / "train.npz"), tmp_path / "run"
    res = runner.invoke(typer_app, ["pose", "train", "--data", str(train), "--out", str(run), "--mix", "none",
                                    "--regularizer", "mr_maml", "--reg-opt", "beta=1e-4", *TINY])
    assert res.exit_code == 0, res.output
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["core"]["regularizer"] == {"name": "mr_maml", "options": {"beta": 1e-4}}
    res = runner.invoke(typer_app, ["pose", "train", "--data", str(train), "--out", str(tmp_path / "r2"),
                                    "--regularizer", "mr_maml", "--reg-opt", "beta=-1", *TINY])
    assert "beta" in _error_line(res)


def test_bad_inputs_are_one_line_errors(tmp_path):
    run = tmp_path / "run"
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, x=np.zeros((4, 10), np.uint8), y=np.zeros((4,)))
    nan = _pose_npz(tmp_path / "nan.npz", y=np.where(np.eye(5, 8) > 0, np.nan, 0.5))
    few = _pose_npz(tmp_path / "few.npz", views=4)
    cases = [(bad_shape, "x has shape"), (nan, "NaN or infinite, first at object 0, view 0"),
             (few, "4 views per object, fewer than 3-shot \\+ 3 query")]
    for path, message in cases:
        res = runner.invoke(typer_app, ["pose", "train", "--data", str(path), "--out", str(run), *TINY])
        assert message.replace("\\", "") in " ".join(_error_line(res).split()), path
    assert not run.exists()  # refused before the run directory was made
    res = runner.invoke(typer_app, ["pose", "evaluate", "--model", str(tmp_path / "nomodel"), "--data", str(few)])
    assert "not a model directory" in _error_line(res)


def test_convert_valid_and_malicious(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 128 * 128)).astype(np.uint8)  # MR-MAML's shape
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps((x, np.random.default_rng(1).random((2, 5, 3))), protocol=2))
    res = runner.invoke(typer_app, ["pose", "convert", str(tmp_path / "ok.pkl"), "--out", str(tmp_path / "ok.npz")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "ok.npz", allow_pickle=False) as z:
        assert np.array_equal(z["x"], x)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps([Exploit(), x]))
    res = runner.invoke(typer_app, ["pose", "convert", str(tmp_path / "evil.pkl"), "--out", str(tmp_path / "e.npz")])
    assert "refused" in _error_line(res) and not marker.exists() and not (tmp_path / "e.npz").exists()


def test_make_data_small(shared_data, tmp_path):
    out = tmp_path / "data"
    res = runner.invoke(typer_app, ["pose", "make-data", "--out", str(out), "--small", "--views", "6",
                                    "--train-objects", "3", "--test-objects", "2"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "data.json").read_text())
    assert info["settings"]["size"] == 32 and len(info["objects"]["train"]) == 3
    with np.load(out / "test.npz", allow_pickle=False) as z:
        assert z["x"].shape == (2, 6, 32 * 32) and z["y"].shape == (2, 6, 1)


def test_make_data_without_shared_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAYFEW_SHARED_DATA", str(tmp_path / "absent"))
    res = runner.invoke(typer_app, ["pose", "make-data", "--out", str(tmp_path / "d"), "--small"])
    assert "shared molecules" in _error_line(res)
