"""`assayfew images train|evaluate` end to end on a tiny Omniglot-layout zip, and its bad-input errors."""

import json

import pytest
from typer.testing import CliRunner

from assayfew.cli import typer_app
from tests.conftest import make_omniglot_zip

runner = CliRunner()

TINY = ["--way", "3", "--shot", "1", "--query", "2", "--epochs", "2", "--iters", "2", "--meta-batch", "2",
        "--inner-steps", "1", "--eval-steps", "2", "--filters", "4", "--image-size", "16", "--val-episodes", "3", "--device", "cpu",
        "--seed", "3"]


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    return (make_omniglot_zip(root / "train.zip", n_classes=12, per_class=4),
            make_omniglot_zip(root / "test.zip", n_classes=5, per_class=4))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAYFEW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_train_resume_evaluate(zips, tmp_path):
    train, test = zips
    run = tmp_path / "run"
    args = ["images", "train", "--data", str(train), "--out", str(run), "--test-data", str(test),
            "--episodes", "6", "--test-query", "2", "--mix", "metamix", "--shuffle", *TINY]
    res = runner.invoke(typer_app, args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 6 and result["n_way"] == 3 and 0.0 <= result["accuracy"] <= 1.0
    assert result["ci95"] > 0
    for name in ("config.toml", "metrics.csv", "evaluation.json", "model/weights.safetensors", "model/config.json",
                 "state/state.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["core"]["model"]["name"] == "conv4" and config["core"]["kind"]["options"] == {"n_classes": 3}
    assert config["training"]["nme"] is True and config["core"]["mixer"]["options"]["shuffle"] is True
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    # resuming a finished run changes nothing; a different config is refused
    weights = (run / "model" / "weights.safetensors").read_bytes()
    res = runner.invoke(typer_app, ["images", "train", "--data", str(train), "--out", str(run), "--resume",
                                    "--shuffle", *TINY])
    assert res.exit_code == 0, res.output
    assert (run / "model" / "weights.safetensors").read_bytes() == weights
    res = runner.invoke(typer_app, ["images", "train", "--data", str(train), "--out", str(run), "--resume",
                                    "--shuffle", *TINY, "--inner-lr", "0.1"])
    assert res.exit_code == 2 and "cannot resume" in res.output
    # evaluate the saved model: same seed, same episodes -> the same accuracy as after training
    res = runner.invoke(typer_app, ["images", "evaluate", "--model", str(run / "model"), "--data", str(test),
                                    "--episodes", "6", "--query", "2", "--seed", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(result["accuracy"])
    # --steps 0 is refused (as on the drug CLI), not read as "the model's default"
    res = runner.invoke(typer_app, ["images", "evaluate", "--model", str(run / "model"), "--data", str(test),
                                    "--steps", "0", "--device", "cpu"])
    assert res.exit_code == 2 and "--steps" in res.output


@pytest.mark.parametrize("case", ["corrupt", "unreadable", "missing", "too_few"])
def test_bad_input_is_one_clear_line(case, zips, tmp_path):
    train, _ = zips
    if case == "corrupt":
        data = make_omniglot_zip(tmp_path / "c.zip", extra={"top/Alpha9/character01/x.png": b"\x89PNG broken"})
        expect = "top/Alpha9/character01/x.png: not a readable image"
    elif case == "unreadable":
        data = tmp_path / "u.zip"
        data.write_bytes(b"PK\x03\x04 truncated")
        expect = "u.zip: not a readable zip"
    elif case == "missing":
        data, expect = tmp_path / "absent.zip", "absent.zip"
    else:
        data = make_omniglot_zip(tmp_path / "few.zip", n_classes=10, per_class=2)
        expect = "few.zip: 10 class(es) have fewer than 3 images"
    res = runner.invoke(typer_app, ["images", "train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY])
    assert res.exit_code == 2, res.output
    assert "".join(expect.split()) in "".join(res.output.split()) and "Traceback" not in res.output


def test_evaluate_rejects_a_non_image_model(tmp_path, zips):
    res = runner.invoke(typer_app, ["images", "evaluate", "--model", str(tmp_path), "--data", str(zips[1])])
    assert res.exit_code == 2 and "notamodeldirectory" in "".join(res.output.split())


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_unexpected_errors_are_one_line_with_a_log(command, zips, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("assayfew.cli.images.load_images", broken)
    monkeypatch.setattr("assayfew.cli.images.load_image_model", broken)
    args = (["train", "--data", str(zips[0]), "--out", str(tmp_path / "run"), *TINY] if command == "train"
            else ["evaluate", "--model", str(tmp_path), "--data", str(zips[1])])
    res = runner.invoke(typer_app, ["images", *args])
    flat = " ".join(res.output.split())
    assert res.exit_code == 1 and "internal error: RuntimeError: simulated bug; details in" in flat
    assert "Traceback" not in res.output
