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
    values, problems = parse_activities(pd.Series(["6,5", "1,500", "1,5", "1,2,3"]), "nM")
    np.testing.assert_allclose(values[[0, 2]], [9 - np.log10(6.5), 9 - np.log10(1.5)])
    assert "ambiguous" in problems[1] and "not a number" in problems[3]
    values, problems = parse_activities(pd.Series(["6,125"]), "p")
    assert values[0] == pytest.approx(6.125) and problems == [""]


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


def _per_compound(result, key="compound_id"):
    cols = ["prediction", "uncertainty", "cv_prediction", "similarity_to_support", "status"]
    return result.table.set_index(key)[cols].sort_index()


def test_outputs_do_not_depend_on_the_order_of_the_measured_rows(model, assay):
    base = adapt_and_predict(assay, model, options=OPTS)
    for order in (assay.index[::-1], np.random.default_rng(7).permutation(len(assay))):
        other = adapt_and_predict(assay.iloc[order].reset_index(drop=True), model, options=OPTS)
        assert other.cv_r2 == base.cv_r2
        pd.testing.assert_frame_equal(_per_compound(other), _per_compound(base), rtol=0, atol=1e-6)
    # the seed still matters
    reseeded = adapt_and_predict(assay, model, options=PredictOptions(cv_folds=3, seed=1))
    assert not np.allclose(reseeded.table["uncertainty"], base.table["uncertainty"], equal_nan=True)


def test_replicates_are_averaged_into_one_point(model, assay):
    measured = assay.index[assay["pIC50"].notna()]
    first = measured[0]
    twice = pd.concat([assay, assay.loc[[first]].assign(pIC50=assay.loc[first, "pIC50"] + 0.4)], ignore_index=True)
    averaged = assay.copy()
    averaged.loc[first, "pIC50"] += 0.2
    result = adapt_and_predict(twice, model, options=OPTS)
    expected = adapt_and_predict(averaged, model, options=OPTS)
    np.testing.assert_allclose(result.table["prediction"][:len(assay)], expected.table["prediction"], atol=1e-5)
    assert result.cv_r2 == pytest.approx(expected.cv_r2)
    assert result.n_measured == expected.n_measured + 1 and result.n_compounds_measured == expected.n_measured
    assert result.table.loc[first, "status"].startswith(f"ok; same compound as row(s) {len(assay) + 1}")
    assert any("appear more than once" in w for w in result.warnings)
    assert not any("disagree" in w for w in result.warnings)
    # written differently (same canonical structure) and far apart: a stronger warning
    other = assay.loc[[first]].assign(pIC50=assay.loc[first, "pIC50"] + 3)
    far = pd.concat([assay, other], ignore_index=True)
    result = adapt_and_predict(far, model, options=OPTS)
    assert any("disagree by more than 1 log unit for 1 compound" in w for w in result.warnings)
    assert "disagree by 3.0 log units" in result.table.loc[first, "status"]


@pytest.mark.parametrize("values, units, message", [
    (["3162", "10000", "250", "12"], "p", "look like concentrations: give --units nM or --units uM"),
    (["-3", "5", "6", "7"], "p", "p-units are −log10 molar"),
    (["1e-12", "5", "6", "7"], "nM", "as nM these are implausible"),
    (["1e-7", "3e-6", "2e-9", "5e-8"], "p", "look like molar concentrations; convert them to nM"),
])
def test_implausible_activities_are_errors(model, values, units, message):
    table = pd.DataFrame({"smiles": ["CCO", "CCN", "CCC", "CCCl", "c1ccccc1"], "pIC50": values + [None]})
    with pytest.raises(InputError, match=message):
        adapt_and_predict(table, model, units=units, options=OPTS)


def test_rejected_activity_values_are_counted_and_flagged(model, assay):
    table = assay.copy()
    measured = table.index[table["pIC50"].notna()]
    table["pIC50"] = table["pIC50"].astype(object)
    table.loc[measured[:2], "pIC50"] = ["n.d.", "inf"]
    result = adapt_and_predict(table, model, options=OPTS)
    assert result.n_rejected_activity == 2 and result.n_measured == len(measured) - 2
    assert result.n_predicted == len(table) - result.n_measured and result.n_invalid == 0
    assert "rejected activity values: 2" in result.summary()
    assert result.table.loc[measured[0], "status"].startswith("invalid activity value 'n.d.'")
    assert np.isfinite(result.table.loc[measured[0], "prediction"])
    assert any("2 activity value(s) could not be used" in w for w in result.warnings)


def test_salts_are_stripped_by_default_and_the_users_smiles_kept(model, assay):
    table = assay.copy()
    unmeasured = table.index[table["pIC50"].isna()][:2]
    table.loc[unmeasured[0], "smiles"] = "CC(=O)O"
    table.loc[unmeasured[1], "smiles"] = "CC(=O)[O-].[Na+]"
    result = adapt_and_predict(table, model, options=OPTS)
    assert result.standardized and model.standardize
    assert result.table.loc[unmeasured[1], "smiles"] == "CC(=O)[O-].[Na+]"
    assert result.table.loc[unmeasured[1], "status"] == "ok; standardised to CC(=O)O"
    assert result.table.loc[unmeasured[0], "status"] == "ok"
    pred = result.table.loc[unmeasured, "prediction"].to_numpy()
    assert pred[0] == pytest.approx(pred[1], abs=1e-6)
    raw = adapt_and_predict(table, model, options=PredictOptions(cv_folds=3, standardize=False))
    assert not raw.standardized
    assert raw.table.loc[unmeasured[1], "prediction"] != pytest.approx(pred[0], abs=1e-6)
    # clean structures: identical with or without standardisation
    clean = table.index.difference(unmeasured[1:])
    np.testing.assert_array_equal(raw.table.loc[clean, "prediction"], result.table.loc[clean, "prediction"])


def test_model_records_decide_standardisation(model):
    from assayfew.checkpoint import MetaModel

    assert model.standardize  # no record: standardise
    config = model.config | {"fingerprint": model.config["fingerprint"] | {"standardize": False}}
    assert not MetaModel(learners=model.learners, config=config).standardize


def test_steps_beyond_the_learned_per_step_rates_are_refused(assay):
    """The shipped ANIL++ model learned one inner rate per step for its trained steps; more steps would reuse the
    last rate (it diverged at 20), so they are refused with a clear message, and fewer steps are allowed."""
    from assayfew.predict import load_default_model

    shipped = load_default_model(None)
    trained = shipped.inner_steps
    with pytest.raises(InputError, match=f"at most {trained}, not {trained + 1}"):
        adapt_and_predict(assay, shipped, options=PredictOptions(steps=trained + 1, cv_folds=3))
    fewer = adapt_and_predict(assay, shipped, options=PredictOptions(steps=trained - 1, cv_folds=3))
    assert np.isfinite(fewer.table.loc[fewer.table["status"] == "ok", "prediction"]).all()
