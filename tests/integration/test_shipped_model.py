"""The shipped model loads offline and runs on the shipped examples."""

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from assayfew.checkpoint import load_model
from assayfew.cli import typer_app
from assayfew.metrics import r2_pearson
from assayfew.paths import assays_dir, default_model_dir
from assayfew.predict import adapt_and_predict, example_assay

runner = CliRunner()


def test_shipped_model_is_an_ensemble_with_a_recipe():
    model = load_model(default_model_dir())
    assert len(model.learners) >= 1 and model.spec.bits in (1024, 2048, 4096)
    assert (default_model_dir() / "RECIPE.md").exists()


def test_shipped_model_beats_the_mean_on_the_example():
    table, truth = example_assay(n_measured=32, seed=0)
    result = adapt_and_predict(table, load_model(default_model_dir()))
    unmeasured = table["pIC50"].isna().to_numpy()
    assert r2_pearson(truth[unmeasured], result.table["prediction"].to_numpy()[unmeasured]) > 0.2


def test_nanomolar_example_file(tmp_path):
    out = tmp_path / "out.csv"
    res = runner.invoke(typer_app, ["predict", str(assays_dir() / "examples" / "cmet_ic50_nM.csv"),
                                    "--activity-col", "IC50_nM", "--units", "nM", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert len(table) == 60 and (table["status"] == "ok").all()
    assert np.all(table["prediction"] > 0)  # potencies in nM
