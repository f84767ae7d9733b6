"""Calibrated uncertainty: shape, config round trip, cross-validation, and coverage on a synthetic problem."""

import json
import shutil

import numpy as np
import pytest

from assayfew.checkpoint import MetaModel, ModelError, load_model
from assayfew.chem import featurize_smiles, max_tanimoto
from assayfew.predict import InputError, PredictOptions, adapt_and_predict, example_assay
from assayfew.tasks import Task
from assayfew.uncertainty import (Evidence, UncertaintyCalibration, calibration_quality, cross_validated, cv_folds,
                                  episode_evidence, fit_calibration, nearest_measured, save_calibration,
                                  support_error, support_residuals)


def test_uncertainty_grows_with_distance_and_with_the_support_error():
    cal = UncertaintyCalibration(intercept=-0.5, cv_slope=0.7, distance_slope=1.0)
    sim = np.linspace(0, 1, 11)
    sd = cal.sd(sim, 0.8)
    assert np.all(np.diff(sd) < 0)  # more similar → smaller
    assert np.all(cal.sd(sim, 1.2) > sd)
    assert cal.sd(sim, 0.0)[0] == pytest.approx(cal.sd(sim, cal.cv_rmse_floor)[0])  # floored
    np.testing.assert_array_equal(cal.sd(sim, 0.8, np.full(11, 5.0)), sd)  # no local term: ignored
    local = UncertaintyCalibration(intercept=-0.5, cv_slope=0.7, distance_slope=1.0, local_slope=0.3)
    assert np.all(local.sd(sim, 0.8, np.full(11, 1.0)) < local.sd(sim, 0.8, np.full(11, 2.0)))
    assert local.sd(sim, 0.8, np.zeros(11))[0] == pytest.approx(local.sd(sim, 0.8, np.full(11, local.local_floor))[0])
    with pytest.raises(ValueError, match="local error"):
        local.sd(sim, 0.8)


def test_local_error_weighs_the_nearest_measured_residuals():
    support = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=np.uint8)
    residuals = np.array([0.1, 0.5, 2.0, 4.0])
    query = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.uint8)
    similarity, local = nearest_measured(query, support, residuals)
    np.testing.assert_allclose(similarity, [[1.0, 1 / 3, 0.0], [1.0, 0.5, 1 / 3]])  # the 3 nearest, descending
    top, no_local = nearest_measured(query, support[:1], residuals[:1])  # one measured compound: NaN padding
    np.testing.assert_allclose(top, [[1.0, np.nan, np.nan], [0.0, np.nan, np.nan]])
    # query 0: nearest are rows 0 (1.0), 1 (1/3), then rows 2 and 3 at 0 (the lower row wins the tie)
    w0 = np.array([1.0, 1 / 3, 0.0]) + 1e-6
    np.testing.assert_allclose(local[0], (w0 * residuals[[0, 1, 2]]).sum() / w0.sum())
    w1 = np.array([1.0, 0.5, 1 / 3]) + 1e-6  # rows 2, 3, 1
    np.testing.assert_allclose(local[1], (w1 * residuals[[2, 3, 1]]).sum() / w1.sum())
    np.testing.assert_allclose(support_residuals(np.array([1.0, 2.0, 3.0]), np.array([1.5, np.nan, 2.0])),
                               [0.5, np.sqrt((0.25 + 1.0) / 2), 1.0])


def test_cross_validation_never_sees_the_held_out_label():
    y = np.arange(10, dtype=float)
    x = np.eye(10, dtype=np.float32)
    seen: list[set] = []

    def predictor(xs, ys, xq):
        seen.append(set(ys.tolist()))
        return np.full(len(xq), ys.mean())

    folds = cv_folds(10, 3, np.random.default_rng(0))
    pred = cross_validated(predictor, x, y, folds)
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    for fold, labels in zip(folds, seen):
        assert not labels & set(y[fold].tolist())
        np.testing.assert_allclose(pred[fold], np.delete(y, fold).mean())
    assert support_error(y, pred) == pytest.approx(np.sqrt(np.mean((y - pred) ** 2)))
    assert support_error(y, np.full(10, np.nan)) == pytest.approx(np.std(y))


def _synthetic_evidence(truth: UncertaintyCalibration, n_episodes: int, seed: int) -> Evidence:
    rng = np.random.default_rng(seed)
    n = 40
    cv_rmse = np.repeat(rng.uniform(0.3, 1.5, n_episodes), n)
    top = -np.sort(-rng.uniform(0.1, 1.0, (n_episodes * n, 3)), axis=1)  # 3 nearest similarities, descending
    local = np.exp(rng.normal(np.log(cv_rmse), 0.5))
    error = rng.normal(0, 1, len(top)) * truth.sd(top, cv_rmse, local)
    return Evidence(assay=np.repeat(np.arange(n_episodes), n).astype(object),
                    episode=np.repeat(np.arange(n_episodes), n), support_k=np.full(len(top), 32),
                    top_similarity=top, cv_rmse=cv_rmse, local_error=local, error=error)


def test_distance_reads_the_mean_similarity_of_the_nearest_measured_compounds():
    top = np.array([[0.9, 0.5, 0.1], [0.8, np.nan, np.nan], [0.0, np.nan, np.nan]])
    kw = dict(intercept=-0.5, cv_slope=0.7, distance_slope=1.0)
    one, two = UncertaintyCalibration(**kw), UncertaintyCalibration(**kw, distance_neighbours=2)
    np.testing.assert_allclose(one.distance_similarity(top), [0.9, 0.8, 0.0])
    np.testing.assert_allclose(two.distance_similarity(top), [0.7, 0.8, 0.0])  # fewer measured: what there is
    np.testing.assert_allclose(two.sd(top, 0.8), one.sd(np.array([0.7, 0.8, 0.0]), 0.8))
    np.testing.assert_allclose(one.sd(top, 0.8), one.sd(top[:, 0], 0.8))  # the max alone, as before
    with pytest.raises(ValueError, match="2 nearest"):
        two.sd(top[:, 0], 0.8)
    assert UncertaintyCalibration.from_config({}).distance_neighbours == 1  # models calibrated before it
    assert UncertaintyCalibration.from_config({"uncertainty": {"distance_neighbours": 2}}).distance_neighbours == 2
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match="distance_neighbours"):
            UncertaintyCalibration.from_config({"uncertainty": {"distance_neighbours": bad}})


@pytest.mark.parametrize("local_slope,neighbours", [(0.0, 1), (0.4, 1), (0.4, 2)])
def test_fit_recovers_the_generating_model_and_covers_95_percent(local_slope, neighbours):
    truth = UncertaintyCalibration(intercept=-0.3, cv_slope=0.8, distance_slope=1.4, local_slope=local_slope,
                                   distance_neighbours=neighbours)
    fitted = fit_calibration(_synthetic_evidence(truth, 150, seed=0), distance_neighbours=neighbours)
    assert fitted.distance_neighbours == neighbours
    assert fitted.intercept == pytest.approx(truth.intercept, abs=0.1)
    assert fitted.cv_slope == pytest.approx(truth.cv_slope, abs=0.12)
    assert fitted.distance_slope == pytest.approx(truth.distance_slope, abs=0.15)
    assert fitted.local_slope == pytest.approx(truth.local_slope, abs=0.08)
    without = fit_calibration(_synthetic_evidence(truth, 150, seed=0), local=False, distance_neighbours=neighbours)
    assert without.local_slope == 0.0 and not without.uses_local_error
    fresh = _synthetic_evidence(truth, 150, seed=1)
    quality = calibration_quality(fitted.sd_of(fresh), fresh)
    assert 0.93 <= quality["coverage95"] <= 0.97
    assert quality["median_spearman"] > 0.1
    flat = calibration_quality(np.full(len(fresh.error), np.std(fresh.error)), fresh)
    assert np.isnan(flat["median_spearman"])  # a constant uncertainty ranks nothing


def test_episode_evidence_records_errors_and_similarity():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 64)) < 0.2).astype(np.float32)
    y = x @ rng.normal(0, 1, 64)
    task = Task(assay_id="T", support_x=x[:20], support_y=y[:20], query_x=x[20:], query_y=y[20:])
    mean_model = lambda xs, ys, xq: np.full(len(xq), ys.mean())  # noqa: E731
    ev = episode_evidence(mean_model, [task, task])
    assert len(ev.error) == 20 and set(ev.episode) == {0, 1}
    np.testing.assert_allclose(ev.error[:10], y[20:] - y[:20].mean())
    assert np.all((ev.similarity >= 0) & (ev.similarity <= 1))
    assert np.all(ev.cv_rmse > 0)
    first = episode_evidence(mean_model, [task], structure_bits=16)  # similarity on the leading columns only
    np.testing.assert_allclose(first.similarity, max_tanimoto(x[20:, :16], x[:20, :16]))
    assert not np.allclose(first.similarity, ev.similarity[:10])


@pytest.fixture(scope="module")
def assay():
    table, _ = example_assay(n_measured=12, seed=1)
    return table[table["pIC50"].notna() | (table.index < 40)].reset_index(drop=True)


def test_predict_uses_the_calibration_in_the_model_json(tiny_model_dir, tmp_path, assay):
    opts = PredictOptions(cv_folds=3)
    a = tmp_path / "a"
    b = tmp_path / "b"
    shutil.copytree(tiny_model_dir, a)
    shutil.copytree(tiny_model_dir, b)
    save_calibration(a, UncertaintyCalibration(intercept=0.0, cv_slope=1.0, distance_slope=2.0))
    save_calibration(b, UncertaintyCalibration(intercept=0.5, cv_slope=1.0, distance_slope=2.0))
    out_a = adapt_and_predict(assay, load_model(a), options=opts).table
    out_b = adapt_and_predict(assay, load_model(b), options=opts).table
    np.testing.assert_allclose(out_a["prediction"], out_b["prediction"])
    np.testing.assert_allclose(out_b["uncertainty"] / out_a["uncertainty"], np.exp(0.5))
    # uncertainty falls as similarity to the measured compounds rises (one assay, one support CV error)
    order = np.argsort(out_a["similarity_to_support"].to_numpy())
    assert np.all(np.diff(out_a["uncertainty"].to_numpy()[order]) <= 1e-3)  # similarity is rounded to 4 places


def test_local_error_of_every_row_comes_from_the_measured_compounds_cv_errors(tiny_model_dir, tmp_path, assay):
    """With a local term, an unmeasured row's uncertainty reads the CV errors of its nearest measured compounds, a
    measured row's those of the *other* measured compounds."""
    model_dir = tmp_path / "local"
    shutil.copytree(tiny_model_dir, model_dir)
    calibration = UncertaintyCalibration(intercept=-0.4, cv_slope=0.7, distance_slope=0.9, local_slope=0.3,
                                         distance_neighbours=2)
    save_calibration(model_dir, calibration)
    model = load_model(model_dir)
    out = adapt_and_predict(assay, model, options=PredictOptions(cv_folds=3)).table
    x = featurize_smiles(out["smiles"].tolist(), model.spec, standardize=model.standardize).fingerprints
    measured = np.flatnonzero(out["pIC50"].notna().to_numpy())
    ys, cv = out["pIC50"].to_numpy()[measured], out["cv_prediction"].to_numpy()[measured]
    assert len(set(out["smiles"].iloc[measured])) == len(measured)  # no replicates: one row per compound
    residuals, cv_rmse = support_residuals(ys, cv), support_error(ys, cv)
    want = np.empty(len(out))
    unmeasured = np.setdiff1d(np.arange(len(out)), measured)
    similarity, local = nearest_measured(x[unmeasured], x[measured], residuals)
    want[unmeasured] = calibration.sd(similarity, cv_rmse, local)
    for j, row in enumerate(measured):
        others = np.delete(measured, j)
        similarity, local = nearest_measured(x[row:row + 1], x[others], np.delete(residuals, j))
        want[row] = calibration.sd(similarity, cv_rmse, local)[0]
    np.testing.assert_allclose(out["uncertainty"].to_numpy(), want, rtol=1e-9)
    plain = adapt_and_predict(assay, load_model(tiny_model_dir), options=PredictOptions(cv_folds=3)).table
    assert not np.allclose(np.log(out["uncertainty"]) - np.log(plain["uncertainty"]),
                           np.log(out["uncertainty"].iloc[0]) - np.log(plain["uncertainty"].iloc[0]))


def test_bad_calibration_in_the_model_json_is_a_clear_error(tiny_model_dir, tmp_path, assay):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(config | {"uncertainty": {"cv_slope": "steep"}}))
    with pytest.raises(ModelError, match="not a valid assayfew model: config.json: uncertainty.cv_slope"):
        load_model(bad)  # refused on loading, by the model schema
    good = load_model(tiny_model_dir)  # a config changed in memory is still checked where it is used
    steep = MetaModel(learners=good.learners, config=good.config | {"uncertainty": {"cv_slope": "steep"}})
    with pytest.raises(InputError, match="uncertainty.cv_slope must be a finite number"):
        adapt_and_predict(assay, steep, options=PredictOptions(cv_folds=3))
