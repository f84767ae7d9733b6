"""`assayfew train`: regulariser and fidelity options reach the run's config and the model's."""

import json
import tomllib

import pytest
from typer.testing import CliRunner

from assayfew.cli import typer_app
from tests.cli.test_train_eval_predict_cli import corpus  # noqa: F401  (the same tiny corpus)

runner = CliRunner()
TINY = ["--epochs", "2", "--iters", "3", "--meta-batch", "4", "--hidden", "16,16", "--device", "cpu"]


@pytest.fixture
def data(corpus):
    return ["--corpus", str(corpus / "cache"), "--split", str(corpus / "split.json")]


def test_regularizer_and_fidelity_flags_are_recorded(data, tmp_path):
    conf = tmp_path / "opts.toml"
    conf.write_text('regularizer = "weight_decay"\n[regularizer_options]\ndecay = 0.5\n')
    run = tmp_path / "run"
    res = runner.invoke(typer_app, ["train", *data, "--out", str(run), *TINY, "--config", str(conf),
                                    "--reg-opt", "decay=2e-3", "--first-order-epochs", "1", "--msl-epochs", "1",
                                    "--per-step-blocks", "all"])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((run / "config.toml").read_text())
    assert cfg["regularizer"] == "weight_decay" and cfg["regularizer_options"] == {"decay": 2e-3}
    assert (cfg["first_order_epochs"], cfg["msl_epochs"], cfg["per_step_blocks"]) == (1, 1, "all")
    core = json.loads((run / "model" / "config.json").read_text())["core"]
    assert core["regularizer"] == {"name": "weight_decay", "options": {"decay": 2e-3}}
    assert core["learner"]["options"]["first_order_epochs"] == 1 and core["model"]["options"]["per_step_blocks"] == "all"

    run2 = tmp_path / "run2"  # another regularizer drops the file's options; metasgd head-only
    res = runner.invoke(typer_app, ["train", *data, "--out", str(run2), *TINY, "--config", str(conf),
                                    "--regularizer", "cavia", "--reg-opt", "context_dim=3", "--algo", "metasgd",
                                    "--adapt", "head"])
    assert res.exit_code == 0, res.output
    core = json.loads((run2 / "model" / "config.json").read_text())["core"]
    assert core["regularizer"] == {"name": "cavia", "options": {"context_dim": 3}}
    assert core["learner"]["name"] == "metasgd" and core["learner"]["options"]["adapt"] == "head"


@pytest.mark.parametrize(("args", "message"), [
    (["--regularizer", "dropconnect"], "unknown regularizer"),
    (["--regularizer", "cavia", "--reg-opt", "width=3"], "no option(s) width"),
    (["--regularizer", "taml", "--reg-opt", "weight"], "expected KEY=VALUE"),
    (["--regularizer", "meta_dropout", "--algo", "r2d2"], "closed form"),
    (["--adapt", "head"], "adapt"),
    (["--algo", "metasgd", "--adapt", "body"], "adapt must be 'all' or 'head'"),
])
def test_bad_regularizer_options_are_one_line_errors(data, tmp_path, args, message):
    res = runner.invoke(typer_app, ["train", *data, "--out", str(tmp_path / "r"), *TINY, *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_unknown_corpus_in_source_weights_fails_before_anything_is_written(data, tmp_path):
    """Checked once the data have loaded, before the run directory gets its split (it stays empty)."""
    conf = tmp_path / "weights.toml"
    conf.write_text("[source_weights]\nno_such_corpus = 2.0\n")
    res = runner.invoke(typer_app, ["train", *data, "--out", str(tmp_path / "r"), *TINY, "--config", str(conf)])
    assert res.exit_code == 2 and "no_such_corpus" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_a_split_without_validation_trains_with_keep_epoch_only(corpus, tmp_path):
    """Training on every non-test assay (the validation ones too) keeps a fixed epoch; without --keep-epoch the
    empty validation side is a one-line error before anything is written."""
    split = json.loads((corpus / "split.json").read_text())
    split["train"] = [*split["train"], *split["val"]]
    split["val"] = []
    (tmp_path / "all.json").write_text(json.dumps(split))
    data = ["--corpus", str(corpus / "cache"), "--split", str(tmp_path / "all.json")]
    res = runner.invoke(typer_app, ["train", *data, "--out", str(tmp_path / "r"), *TINY])
    assert res.exit_code == 2 and "keep_epoch" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    res = runner.invoke(typer_app, ["train", *data, "--out", str(tmp_path / "k"), *TINY, "--keep-epoch", "0"])
    assert res.exit_code == 0 and "no validation assays" in res.output, res.output
    assert "kept epoch 0: no validation assays" in res.output
    training = json.loads((tmp_path / "k" / "model" / "config.json").read_text())["training"]
    assert training["epoch"] == 0 and training["kept"] == "keep_epoch"
    assert training["n_train_assays"] == len(split["train"])
    assert tomllib.loads((tmp_path / "k" / "config.toml").read_text())["keep_epoch"] == 0
    res = runner.invoke(typer_app, ["train", *data, "--out", str(tmp_path / "x"), *TINY, "--keep-epoch", "2"])
    assert res.exit_code == 2 and "keep_epoch must be an epoch of the run" in res.output
