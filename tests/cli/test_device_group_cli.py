"""CLI: --device on every face, `train --group` defaults, evaluate's account of skipped and absent assays."""

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from assayfew.cli import typer_app
from assayfew.splits import Split
from tests.conftest import make_synthetic_taskset

runner = CliRunner()
TINY = ["--epochs", "1", "--iters", "3", "--meta-batch", "4", "--hidden", "32,32", "--device", "cpu"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """14 assays with TRN/TST; A13 keeps only 3 TST compounds (too few to score); split test names an absent id."""
    root = tmp_path_factory.mktemp("corpus")
    ts = make_synthetic_taskset(n_assays=14, with_split=True)
    lo, hi = ts.offsets[13], ts.offsets[14]
    ts.split[lo:hi - 3] = 1
    ts.save(root / "cache")
    Split(train=ts.assay_ids[:8], val=ts.assay_ids[8:11], test=[*ts.assay_ids[11:], "NOT_IN_CORPUS"]).save(
        root / "split.json")
    return root


@pytest.mark.parametrize("command", [["train", "--group", "5"], ["evaluate", "--group", "0"]])
def test_an_invalid_group_is_rejected_before_anything_else(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(typer_app, command)
    assert res.exit_code == 2 and "--group" in res.output
    assert list(tmp_path.iterdir()) == []


def test_group_looks_in_the_env_folder_then_pqsar_and_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSAYFEW_PQSAR_DIR", raising=False)
    res = runner.invoke(typer_app, ["train", "--group", "1"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2
    assert str(tmp_path / "pqsar") in text and "ASSAYFEW_PQSAR_DIR" in text
    for name in ("ci9b00375_si_001.txt", "ci9b00375_si_002.txt", "ci9b00375_si_003.txt", "10.1021/acs.jcim.9b00375"):
        assert name in text
    assert not (tmp_path / "runs").exists()  # nothing written for a run that could not start
    monkeypatch.setenv("ASSAYFEW_PQSAR_DIR", str(tmp_path / "elsewhere"))
    res = runner.invoke(typer_app, ["evaluate", "--group", "2"])
    assert res.exit_code == 2 and str(tmp_path / "elsewhere") in " ".join(res.output.split())


def test_train_without_out_makes_a_new_timestamped_run(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--corpus", str(corpus / "cache"), "--split", str(corpus / "split.json"), *TINY]
    assert runner.invoke(typer_app, args).exit_code == 0
    assert runner.invoke(typer_app, args).exit_code == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"train-\d{8}-\d{6}(-\d+)?", r) for r in runs)
    assert all((tmp_path / "runs" / r / "model" / "weights.safetensors").exists() for r in runs)
    res = runner.invoke(typer_app, ["train", "--resume", "--corpus", str(corpus / "cache")])
    assert res.exit_code == 2 and "--resume needs --out" in res.output


def test_evaluate_reports_evaluated_skipped_and_absent_assays(corpus, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(typer_app, ["train", "--corpus", str(corpus / "cache"), "--split",
                                     str(corpus / "split.json"), "--out", str(run), *TINY]).exit_code == 0
    res = runner.invoke(typer_app, ["evaluate", "--model", str(run / "model"), "--corpus", str(corpus / "cache"),
                                    "--split", str(corpus / "split.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n"] == 2 and summary["skipped"] == ["A13"] and summary["absent"] == ["NOT_IN_CORPUS"]
    assert "evaluated 2 of 4 meta-test assays" in res.output
    assert "A13" in res.output and "NOT_IN_CORPUS" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("command", [["predict", "--example"], ["evaluate", "--group", "1"], ["train", "--group", "1"],
                                     ["app"]])
def test_every_face_takes_device_and_refuses_cuda_without_a_gpu(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(typer_app, [*command, "--device", "cuda:0"])
    assert res.exit_code == 2 and "no CUDA device" in res.output


def test_predict_runs_on_the_device_it_is_given(tmp_path):
    res = runner.invoke(typer_app, ["predict", "--example", "--device", "cpu", "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.csv").exists()


def test_the_app_binds_localhost_unless_the_flag_or_the_image_variable_says_otherwise():
    from assayfew.cli.app import HOST_ENV, bind_host

    assert bind_host(None, {}) == "127.0.0.1"
    assert bind_host(None, {HOST_ENV: "0.0.0.0"}) == "0.0.0.0"
    assert bind_host("10.0.0.5", {HOST_ENV: "0.0.0.0"}) == "10.0.0.5"
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()  # CPU and CUDA (build arg)
    assert f"ENV {HOST_ENV}=0.0.0.0" in dockerfile and "ARG TORCH_VARIANT=cpu" in dockerfile
