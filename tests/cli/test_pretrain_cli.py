"""`assayfew pretrain` → `assayfew train` with init_body, end to end on tiny data; bad inputs are one line."""

import json
import tomllib

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from assayfew.cli import typer_app
from tests.cli.test_train_eval_predict_cli import TINY, corpus  # noqa: F401  (the same tiny corpus)
from tests.cli.test_train_options_cli import data  # noqa: F401  (its --corpus/--split arguments)

runner = CliRunner()


def test_pretrain_then_train_from_its_body(data, tmp_path):
    conf = tmp_path / "pre.toml"
    conf.write_text('assays_per_batch = 4\nsupport_max = 16\nquery_max = 16\nsupport_min = 8\nquery_min = 8\n')
    pre = tmp_path / "pre"
    res = runner.invoke(typer_app, ["pretrain", *data, "--config", str(conf), "--epochs", "2", "--iters", "5",
                                    "--hidden", "32,32", "--seed", "3", "--device", "cpu", "--out", str(pre)])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((pre / "config.toml").read_text())
    assert (cfg["seed"], cfg["hidden"], cfg["assays_per_batch"]) == (3, [32, 32], 4)
    assert set(load_file(str(pre / "model" / "weights.safetensors"))) >= {"params.block1_weight", "params.head_weight"}
    assert json.loads((pre / "model" / "config.json").read_text())["pretraining"]["heads"] == "heads.safetensors"
    assert (pre / "heads.safetensors").is_file() and (pre / "metrics.csv").is_file()

    res = runner.invoke(typer_app, ["pretrain", *data, "--out", str(pre), "--hidden", "32,32"])
    assert res.exit_code == 2 and "already holds" in res.output  # never overwritten by accident

    meta_conf = tmp_path / "meta.toml"
    meta_conf.write_text(f'init_body = "{pre}"\ninit_head = "fresh"\n')
    run = tmp_path / "run"
    res = runner.invoke(typer_app, ["train", *data, "--config", str(meta_conf), "--out", str(run), *TINY])
    assert res.exit_code == 0, res.output
    recorded = tomllib.loads((run / "config.toml").read_text())
    assert (recorded["init_body"], recorded["init_head"]) == (str(pre), "fresh")

    res = runner.invoke(typer_app, ["train", *data, "--config", str(meta_conf), "--out", str(tmp_path / "r2"),
                                    *TINY[:-4], "--hidden", "16,16", "--device", "cpu"])
    assert res.exit_code == 2 and "differ from this run's (16, 16)" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize(("args", "toml", "message"), [
    ([], 'select = "best"\n', "select must be one of ridge, gd"),
    ([], "algo = 'maml'\n", "unknown pre-training option(s): algo"),
    (["--hidden", "a,b"], "", "invalid literal"),
    (["--epochs", "0"], "", "greater than or equal to 1"),
    ([], "patience = 0\n", "patience must be ≥ 1"),
    ([], "hidden = [32]\nlabel_scaling = 'log'\n", "unknown label scaling"),
])
def test_bad_pretrain_inputs_are_one_line_errors(data, tmp_path, args, toml, message):
    conf = tmp_path / "c.toml"
    conf.write_text(toml)
    res = runner.invoke(typer_app, ["pretrain", *data, "--config", str(conf), "--out", str(tmp_path / "r"), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_missing_init_body_is_one_line_error(data, tmp_path):
    conf = tmp_path / "meta.toml"
    conf.write_text(f'init_body = "{tmp_path / "nowhere"}"\n')
    res = runner.invoke(typer_app, ["train", *data, "--config", str(conf), "--out", str(tmp_path / "r"), *TINY])
    assert res.exit_code == 2 and "init_body" in res.output and "no such directory" in res.output
    assert not (tmp_path / "r").exists()
