"""Calibrated uncertainty: shape, config round trip, cross-validation, and coverage on a synthetic problem."""

import json
import shutil

import numpy as np
import pytest

from assayfew.checkpoint import MetaModel, ModelError, load_model
from assayfew.chem import max_tanimoto
from assayfew.predict import InputError, PredictOptions, adapt_and_predict, example_assay
from assayfew.tasks import Task
from assayfew.uncertainty import (Evidence, UncertaintyCalibration, calibration_quality, cross_validated, cv_folds,
                                  episode_evidence, fit_calibration, save_calibration, support_error)


def test_uncertainty_grows_with_distance_and_with_the_support_error():
    cal = UncertaintyCalibration(intercept=-0.5, cv_slope=0.7, distance_slope=1.0)
    sim = np.linspace(0, 1, 11)
    sd = cal.sd(sim, 0.8)
    assert np.all(np.diff(sd) < 0)  # more similar → smaller
    assert np.all(cal.sd(sim, 1.2) > sd)
    assert cal.sd(sim, 0.0)[0] == pytest.approx(cal.sd(sim, cal.cv_rmse_floor)[0])  # floored


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
    sim = rng.uniform(0.1, 1.0, n_episodes * n)
    error = rng.normal(0, 1, len(sim)) * truth.sd(sim, cv_rmse)
    return Evidence(assay=np.repeat(np.arange(n_episodes), n).astype(object),
                    episode=np.repeat(np.arange(n_episodes), n), support_k=np.full(len(sim), 32),
                    similarity=sim, cv_rmse=cv_rmse, error=error)


def test_fit_recovers_the_generating_model_and_covers_95_percent():
    truth = UncertaintyCalibration(intercept=-0.3, cv_slope=0.8, distance_slope=1.4)
    fitted = fit_calibration(_synthetic_evidence(truth, 150, seed=0))
    assert fitted.intercept == pytest.approx(truth.intercept, abs=0.1)
    assert fitted.cv_slope == pytest.approx(truth.cv_slope, abs=0.1)
    assert fitted.distance_slope == pytest.approx(truth.distance_slope, abs=0.15)
    fresh = _synthetic_evidence(truth, 150, seed=1)
    quality = calibration_quality(fitted.sd(fresh.similarity, fresh.cv_rmse), fresh)
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
