"""The prediction library: columns, units, row bookkeeping, invariance, determinism, errors."""

import numpy as np
import pandas as pd
import pytest

from assayfew.checkpoint import load_model
from assayfew.predict import (InputError, PredictOptions, adapt_and_predict, detect_column, example_assay,
                              parse_activities)

OPTS = PredictOptions(cv_folds=3)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def assay():
    table, _ = example_assay(n_measured=12, seed=1)
    keep = table["pIC50"].notna() | (table.index < 60)
    return table[keep].reset_index(drop=True)


def test_detects_common_columns_and_reports_ambiguity():
    assert detect_column(["id", "SMILES", "pIC50"], ("smiles", "SMILES"), None, "smiles") == "SMILES"
    with pytest.raises(InputError, match="several possible activity"):
        detect_column(["smiles", "pIC50", "pKi"], ("pIC50", "pKi"), None, "activity")
    with pytest.raises(InputError, match="no smiles column"):
        detect_column(["id"], ("smiles",), None, "smiles")
    with pytest.raises(InputError, match="'x' not found"):
        detect_column(["id"], ("smiles",), "x", "smiles")


def test_units_convert_to_p_values():
    values, problems = parse_activities(pd.Series(["1000", "1", "", "-3", "abc"]), "nM")
    np.testing.assert_allclose(values[:2], [6.0, 9.0])
    assert np.isnan(values[2]) and problems[2] == ""
    assert "must be > 0" in problems[3] and "not a number" in problems[4]
    values, _ = parse_activities(pd.Series(["10"]), "uM")
    assert values[0] == pytest.approx(5.0)


def test_rows_kept_in_order_with_invalid_smiles_flagged(model, assay):
    table = assay.copy()
    table.loc[5, "smiles"] = "not_a_smiles"
    table.loc[7, "smiles"] = ""
    result = adapt_and_predict(table, model, options=OPTS)
    out = result.table
    assert len(out) == len(table)
    assert list(out["compound_id"]) == list(table["compound_id"])
    assert out.loc[5, "status"].startswith("invalid SMILES") and np.isnan(out.loc[5, "prediction"])
    assert out.loc[7, "status"].startswith("invalid SMILES")
    ok = out["status"] == "ok"
    assert np.isfinite(out.loc[ok, "prediction"]).all() and np.isfinite(out.loc[ok, "uncertainty"]).all()
    measured = table["pIC50"].notna() & ok
    assert np.isfinite(out.loc[measured, "cv_prediction"]).all()
    assert out.loc[~measured, "cv_prediction"].isna().all()
    assert ((out["similarity_to_support"].dropna() >= 0) & (out["similarity_to_support"].dropna() <= 1)).all()


def test_prediction_does_not_depend_on_other_unmeasured_rows(model, assay):
    full = adapt_and_predict(assay, model, options=OPTS).table
    unmeasured = assay.index[assay["pIC50"].isna()]
    keep = assay.drop(index=unmeasured[::2])  # drop half of the unmeasured rows
    part = adapt_and_predict(keep.reset_index(drop=True), model, options=OPTS).table
    merged = keep.assign(pred=part["prediction"].to_numpy(), unc=part["uncertainty"].to_numpy())
    np.testing.assert_allclose(merged["pred"], full.loc[keep.index, "prediction"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(merged["unc"], full.loc[keep.index, "uncertainty"], rtol=0, atol=1e-5)


def test_same_input_and_seed_same_output(model, assay):
    a = adapt_and_predict(assay, model, options=OPTS).table
    b = adapt_and_predict(assay, model, options=OPTS).table
    pd.testing.assert_frame_equal(a, b)


def test_too_few_or_constant_measurements_are_errors(model, assay):
    few = assay.copy()
    few["pIC50"] = np.nan
    few.loc[:1, "pIC50"] = [5.0, 6.0]
    with pytest.raises(InputError, match="at least 3 measured"):
        adapt_and_predict(few, model, options=OPTS)
    flat = assay.copy()
    flat.loc[flat["pIC50"].notna(), "pIC50"] = 6.5
    with pytest.raises(InputError, match="all .* measured activities are equal"):
        adapt_and_predict(flat, model, options=OPTS)


def test_nanomolar_input_predictions_come_back_in_nanomolar(model, assay):
    p_result = adapt_and_predict(assay, model, options=OPTS).table
    nm = assay.copy()
    nm["pIC50"] = 10 ** (9 - nm["pIC50"])
    nm_result = adapt_and_predict(nm, model, units="nM", options=OPTS).table
    np.testing.assert_allclose(9 - np.log10(nm_result["prediction"]), p_result["prediction"], atol=1e-4)


def test_example_assay_masks_exactly_n_measured():
    table, truth = example_assay(n_measured=32, seed=0)
    assert table["pIC50"].notna().sum() == 32 and len(truth) == len(table) > 900


def test_csv_reader_keeps_text_and_rejects_ragged_rows(tmp_path):
    from assayfew.predict import read_input_csv

    good = tmp_path / "good.csv"
    good.write_text("smiles,pIC50,note\nCCO,5.10,a\nCCN,,\n\nc1ccccc1,007,x\n")
    table = read_input_csv(good)
    assert len(table) == 3 and table.loc[2, "pIC50"] == "007" and pd.isna(table.loc[1, "pIC50"])
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("smiles,pIC50\nCCO,5.1,extra\n")
    with pytest.raises(InputError, match="line 2: 3 fields but the header has 2"):
        read_input_csv(ragged)
    with pytest.raises(InputError, match="limit of 1 rows"):
        read_input_csv(good, max_rows=1)
    dup = tmp_path / "dup.csv"
    dup.write_text("smiles,smiles\nC,C\n")
    with pytest.raises(InputError, match="duplicate column"):
        read_input_csv(dup)
