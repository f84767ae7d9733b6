"""`assayfew calibrate`: fits on the split's validation side and writes the model's config.json."""

import json
import shutil

from typer.testing import CliRunner

from assayfew.cli import typer_app
from assayfew.splits import Split
from assayfew.uncertainty import UncertaintyCalibration
from tests.conftest import make_synthetic_taskset

runner = CliRunner()


def test_calibrate_writes_the_fit_into_the_model(tiny_model_dir, tmp_path):
    ts = make_synthetic_taskset(n_assays=10, with_split=True, seed=3)
    ts.save(tmp_path / "cache")
    Split(train=ts.assay_ids[:4], val=ts.assay_ids[4:8], test=ts.assay_ids[8:]).save(tmp_path / "split.json")
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = (model / "weights.safetensors").read_bytes()
    res = runner.invoke(typer_app, ["calibrate", "--model", str(model), "--corpus", str(tmp_path / "cache"),
                                    "--split", str(tmp_path / "split.json"), "--support-k", "8", "--seeds", "2"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout.strip().splitlines()[-1])
    section = json.loads((model / "config.json").read_text())["uncertainty"]
    assert section["fitted_on"]["side"] == "val" and section["fitted_on"]["n_assays"] == 4
    assert section["fitted_on"]["n_episodes"] == 4 * 2 == printed["fit"]["n_episodes"]
    loaded = UncertaintyCalibration.from_config({"uncertainty": section})
    assert loaded.to_config() == printed["calibration"]
    assert (model / "weights.safetensors").read_bytes() == weights


def test_calibrate_without_validation_assays_is_a_clear_error(tiny_model_dir, tmp_path):
    ts = make_synthetic_taskset(n_assays=6, with_split=True)
    ts.save(tmp_path / "cache")
    Split(train=ts.assay_ids[:4], val=[], test=ts.assay_ids[4:]).save(tmp_path / "split.json")
    res = runner.invoke(typer_app, ["calibrate", "--model", str(tiny_model_dir), "--corpus", str(tmp_path / "cache"),
                                    "--split", str(tmp_path / "split.json")])
    assert res.exit_code == 2 and "validation side has no assays" in res.output


def test_fit_with_a_stand_in_stores_its_fit_in_the_model(tiny_model_dir, tmp_path):
    """--fit-with fits on the stand-in's predictions (the same fit as calibrating the stand-in itself, not the
    model's own) and writes it into --model; a stand-in that blends differently is refused."""
    import torch
    from safetensors.torch import load_file, save_file

    ts = make_synthetic_taskset(n_assays=10, with_split=True, seed=3)
    ts.save(tmp_path / "cache")
    Split(train=ts.assay_ids[:4], val=ts.assay_ids[4:8], test=ts.assay_ids[8:]).save(tmp_path / "split.json")
    stand_in, model = tmp_path / "stand_in", tmp_path / "model"
    shutil.copytree(tiny_model_dir, stand_in)
    shutil.copytree(tiny_model_dir, model)
    gen = torch.Generator().manual_seed(0)
    weights = {k: v + 0.3 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
               for k, v in load_file(str(model / "weights.safetensors")).items()}
    save_file(weights, str(model / "weights.safetensors"))
    data = ["--corpus", str(tmp_path / "cache"), "--split", str(tmp_path / "split.json"), "--support-k", "8",
            "--seeds", "2"]
    fits = {}
    for name, extra in {"stand_in": [], "own": [], "fit_with": ["--fit-with", str(stand_in)]}.items():
        target = stand_in if name == "stand_in" else model
        res = runner.invoke(typer_app, ["calibrate", "--model", str(target), *data, *extra])
        assert res.exit_code == 0, res.output
        fits[name] = json.loads(res.stdout.strip().splitlines()[-1])["calibration"]
    assert fits["fit_with"] == fits["stand_in"] != fits["own"]
    section = json.loads((model / "config.json").read_text())["uncertainty"]
    assert section["fitted_on"]["fitted_with"] == str(stand_in)
    config = json.loads((stand_in / "config.json").read_text())
    config["prediction"] = config.get("prediction", {}) | {"fp_ridge_weight": 0.5}
    (stand_in / "config.json").write_text(json.dumps(config))
    res = runner.invoke(typer_app, ["calibrate", "--model", str(model), *data, "--fit-with", str(stand_in)])
    assert res.exit_code == 2 and "prediction settings" in res.output and "Traceback" not in res.output
