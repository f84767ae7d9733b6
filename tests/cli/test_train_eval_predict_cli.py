"""CLI faces: train → evaluate → predict, end to end on tiny data."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from assayfew.cli import typer_app
from assayfew.predict import example_assay
from assayfew.splits import Split
from tests.conftest import make_synthetic_taskset

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    ts = make_synthetic_taskset(n_assays=14, with_split=True)
    ts.save(root / "cache")
    Split(train=ts.assay_ids[:8], val=ts.assay_ids[8:11], test=ts.assay_ids[11:]).save(root / "split.json")
    return root


TINY = ["--epochs", "2", "--iters", "5", "--meta-batch", "4", "--hidden", "32,32", "--device", "cpu"]


def test_train_then_evaluate(corpus, tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(typer_app, ["train", "--corpus", str(corpus / "cache"), "--split", str(corpus / "split.json"),
                                    "--out", str(run), *TINY])
    assert res.exit_code == 0, res.output
    assert (run / "model" / "weights.safetensors").exists() and (run / "config.toml").exists()
    assert json.loads((run / "split.json").read_text())["test"] == ["A11", "A12", "A13"]
    out_csv = tmp_path / "per_assay.csv"
    res = runner.invoke(typer_app, ["evaluate", "--model", str(run / "model"), "--corpus", str(corpus / "cache"),
                                    "--split", str(corpus / "split.json"), "--out", str(out_csv)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n"] == 3 and {"mean", "median", "gt03", "mean_ci"} <= summary.keys()
    per_assay = pd.read_csv(out_csv)
    assert list(per_assay["assay_id"]) == ["A11", "A12", "A13"]
    assert per_assay["r2"].mean() == pytest.approx(summary["mean"])


def test_split_ids_missing_from_the_corpus_are_reported_and_ignored(corpus, tmp_path):
    """A split written for a larger corpus (e.g. with KIBA) trains on the assays the corpus has, and says so."""
    ids = make_synthetic_taskset(n_assays=14, with_split=True).assay_ids
    split = tmp_path / "wider.json"
    Split(train=[*ids[:8], "KIBA1", "KIBA2"], val=ids[8:11], test=ids[11:]).save(split)
    run = tmp_path / "run"
    res = runner.invoke(typer_app, ["train", "--corpus", str(corpus / "cache"), "--split", str(split),
                                    "--out", str(run), *TINY])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "train 8 assays" in said and "2 split assay ids are not in the corpus and are ignored" in said
    saved = json.loads((run / "split.json").read_text())
    assert saved["unknown"] == ["KIBA1", "KIBA2"] and saved["train"] == list(ids[:8])


def test_resume_finishes_a_run(corpus, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--corpus", str(corpus / "cache"), "--split", str(corpus / "split.json"), "--out", str(run)]
    assert runner.invoke(typer_app, args + TINY).exit_code == 0
    res = runner.invoke(typer_app, args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(run / "metrics.csv")) == 2


def test_group_without_files_names_them(tmp_path):
    res = runner.invoke(typer_app, ["train", "--group", "1", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "ci9b00375_si_002.txt" in res.output and "10.1021/acs.jcim.9b00375" in res.output


def test_predict_csv_round_trip(tiny_model_dir, tmp_path):
    table, _ = example_assay(n_measured=10, seed=0)
    table = table[table["pIC50"].notna() | (table.index < 40)].reset_index(drop=True)
    table.loc[3, "smiles"] = "C1CC"  # unclosed ring
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    table.to_csv(src, index=False)
    res = runner.invoke(typer_app, ["predict", str(src), "--model", str(tiny_model_dir), "--out", str(dst)])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(dst)
    assert len(out) == len(table) and list(out["compound_id"].astype(str)) == list(table["compound_id"])
    assert out.loc[3, "status"].startswith("invalid SMILES")
    assert "cross-validated R²" in res.output


def test_predict_errors_are_clear(tiny_model_dir, tmp_path):
    res = runner.invoke(typer_app, ["predict", str(tmp_path / "missing.csv"), "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "file not found" in " ".join(res.output.split())  # rich wraps long paths
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\nx,1\n")
    res = runner.invoke(typer_app, ["predict", str(bad), "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "no smiles column" in " ".join(res.output.split())


def test_predict_example_prints_r2(tiny_model_dir):
    res = runner.invoke(typer_app, ["predict", "--example", "--model", str(tiny_model_dir), "--n-measured", "16"])
    assert res.exit_code == 0, res.output
    assert "example CHEMBL2321810" in res.output


def test_ensemble_command_joins_trained_models(corpus, tmp_path):
    from assayfew.checkpoint import load_model

    runs = []
    for seed in ("0", "1"):
        run = tmp_path / f"run{seed}"
        args = ["train", "--corpus", str(corpus / "cache"), "--split", str(corpus / "split.json"), "--out", str(run)]
        assert runner.invoke(typer_app, args + TINY + ["--seed", seed]).exit_code == 0
        runs.append(str(run / "model"))
    res = runner.invoke(typer_app, ["ensemble", *runs, "--out", str(tmp_path / "ens"), "--fp-ridge-weight", "0.5"])
    assert res.exit_code == 0, res.output
    model = load_model(tmp_path / "ens")
    assert len(model.learners) == 2 and model.prediction["fp_ridge_weight"] == 0.5
    res = runner.invoke(typer_app, ["ensemble", runs[0], "--out", str(tmp_path / "e2"), "--head", "bogus"])
    assert res.exit_code == 2 and "--head" in res.output
