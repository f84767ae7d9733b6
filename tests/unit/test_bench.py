"""The grid runner (`assayfew.bench`): a tiny grid end to end, resumption, partial reports, grid errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assayfew.bench.grid import load_grid, parse_grid
from assayfew.bench.report import load_results, write_report
from assayfew.bench.run import RESULTS_FILE, BenchReporter, run_grid
from assayfew.experiment import split_taskset
from assayfew.loop import Reporter
from assayfew.splits import Split
from tests.conftest import make_synthetic_taskset

TRAIN = dict(epochs=2, iters=3, meta_batch=4, hidden=[32, 32], support_min=8, support_max=16, query_min=8,
             query_max=16, val_max_assays=3, device="cpu")
GRID = {"seeds": [0, 1], "k": [4, 8], "baselines": ["ridge", "gp", "pqsar"], "train": TRAIN,
        "study": [{"name": "mixing", "mix": ["none", "metamix"]},
                  {"name": "lambda", "mix": ["metamix"], "fixed_lambda": [0.3, 0.7]}]}


@pytest.fixture(scope="module")
def data():
    ts = make_synthetic_taskset(n_assays=10, n_per_assay=40, with_split=True)
    ts.reference = ts.values + np.random.default_rng(0).normal(0, 0.3, ts.n_measurements)
    split = Split(train=ts.assay_ids[:6], val=ts.assay_ids[6:8], test=ts.assay_ids[8:])
    return split_taskset(ts, split)


def _run(grid, data, out, reporter=None):
    return run_grid(parse_grid(grid), data, out, source={"corpus": ["synthetic"]}, reporter=reporter)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    return out, _run(GRID, data, out)


def test_tiny_grid_end_to_end(finished):
    out, done = finished
    grid = parse_grid(GRID)
    assert len(done.ran) == len(grid.cells) == 3 * 2 + 4 * 2  # 3 baselines, 4 meta configs, 2 seeds
    results = load_results(out / RESULTS_FILE)
    assert set(results["method"]) == {"ridge", "gp", "pqsar", "anil++-none", "anil++-metamix",
                                      "anil++-metamix fixed_lambda=0.3", "anil++-metamix fixed_lambda=0.7"}
    # every cell scored every test assay at every K
    assert len(results) == len(grid.cells) * 2 * 2
    assert (results.groupby("cell")["assay_id"].size() == 2 * 2).all()  # 2 test assays × 2 K
    assert set(results.loc[results["k"] == 4, "n_support"]) == {4}
    # the same episodes for every method: n_query per (seed, assay) is one value
    assert (results.groupby(["seed", "k", "assay_id"])["n_query"].nunique() == 1).all()
    assert results["r2"].between(0, 1).all() and (results["wall_s"] > 0).all()
    assert results.loc[results["method"] == "pqsar", "r2"].mean() > 0.5  # the reference is a noisy truth
    assert (out / "grid.toml").is_file() and (out / "bench.json").is_file()
    meta_cell = next(c for c in grid.cells if c.kind == "meta")
    assert (out / "cells" / meta_cell.id / "run" / "config.toml").is_file()
    report = write_report(out).read_text()
    assert "## Methods (Table 2 style)" in report and "Wilcoxon" in report
    assert "![lambda: mean R² vs fixed_lambda](plots/lambda_fixed_lambda.png)" in report
    assert (out / "plots" / "lambda_fixed_lambda.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_finished_cells(finished, data):
    out, first = finished
    before = pd.read_csv(out / RESULTS_FILE)
    again = _run(GRID, data, out)
    assert again.ran == [] and sorted(again.skipped) == sorted(first.ran)
    pd.testing.assert_frame_equal(pd.read_csv(out / RESULTS_FILE), before)


class _Kill(BenchReporter, Reporter):
    """Interrupts the run inside the training loop of the `target`-th meta-learning cell."""

    def __init__(self, target: int) -> None:
        self.target, self.seen = target, 0

    def cell_start(self, cell, index, total, work):
        self.seen += cell.kind == "meta"

    def training(self):
        return self

    def iteration(self, epoch, loss, n=1):
        if self.seen == self.target:
            raise KeyboardInterrupt


def test_a_killed_cell_restarts_cleanly(finished, data, tmp_path):
    reference = load_results(finished[0] / RESULTS_FILE)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(GRID, data, out, reporter=_Kill(target=2))
    partial = load_results(out / RESULTS_FILE)
    killed = parse_grid(GRID).cells[6 + 1]  # baselines first, then the second meta-learning cell
    assert killed.id not in set(partial["cell"]) and (out / "cells" / killed.id / "run").exists()
    (out / "cells" / killed.id / "run" / "stray.txt").write_text("left by the killed run")
    resumed = _run(GRID, data, out)
    assert resumed.ran[0] == killed.id and len(resumed.skipped) == 7
    assert not (out / "cells" / killed.id / "run" / "stray.txt").exists()
    got = load_results(out / RESULTS_FILE)
    key = ["cell", "k", "assay_id"]
    merged = got.merge(reference, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(reference)
    np.testing.assert_allclose(merged["r2"], merged["r2_ref"], atol=1e-6)  # seeded: same numbers


def test_report_from_a_partial_csv(finished, tmp_path):
    results = load_results(finished[0] / RESULTS_FILE)
    partial = results[(results["seed"] == 0) & results["method"].isin(["ridge", "anil++-metamix"])]
    partial.to_csv(tmp_path / RESULTS_FILE, index=False)
    report = write_report(tmp_path, reference="anil++-metamix").read_text()
    assert "2 finished cell(s), 2 method(s), seeds [0]" in report
    assert "| ridge | 1 | 2 |" in report and "fixed_lambda=0.3" not in report
    assert "each method − anil++-metamix" in report
    assert not (tmp_path / "plots").exists()  # one λ value (none) run: no sensitivity plot yet


def test_other_data_in_the_same_directory_is_refused(finished, data):
    other = split_taskset(make_synthetic_taskset(n_assays=10, n_per_assay=40, seed=5, with_split=True),
                          Split(train=[f"A{i}" for i in range(6)], val=["A6", "A7"], test=["A8", "A9"]))
    with pytest.raises(ValueError, match="other data"):
        _run(GRID, other, finished[0])


@pytest.mark.parametrize("change, message", [
    ({"train": TRAIN | {"colour": 1}}, "unknown training option"),
    ({"study": [{"name": "x", "inner_rate": [1]}]}, "not a training option"),
    ({"study": [{"name": "x", "mix": ["none"], "alpha": [0.2]}]}, "not used by mixer"),
    ({"baselines": ["svm"]}, "unknown baseline"),
    ({"baseline_options": {"gp": {"noise": -1}}}, "noise must be positive"),
    ({"seeds": []}, "'seeds' must be a non-empty list"),
    ({"reference": "maml"}, "not a method of this grid"),
    ({"study": [{"name": "x", "mix": ["metamix"], "alpha,beta": [[0.2]]}]}, "must list 2 values"),
])
def test_grid_errors_name_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(GRID | change)


def test_the_same_config_in_two_studies_is_one_cell():
    grid = parse_grid(GRID | {"study": [{"name": "a", "mix": ["metamix"]},
                                        {"name": "b", "alpha,beta": [[0.5, 0.5], [2.0, 2.0]]}]})
    metas = [c for c in grid.cells if c.kind == "meta" and c.seed == 0]
    assert [c.method for c in metas] == ["anil++-metamix", "anil++-metamix alpha=2 beta=2"]
    assert metas[0].studies == ("a", "b") and metas[1].studies == ("b",)
    assert len({c.id for c in grid.cells}) == len(grid.cells)


def test_the_committed_grid_parses():
    grid_file = Path(__file__).resolve().parents[2] / "reports" / "heldout_bench" / "GRID.toml"
    if not grid_file.exists():
        pytest.skip("no committed grid yet")
    assert load_grid(grid_file).cells


def _write_pqsar_si(d: Path) -> dict:
    """Two assays of SI files (activities with pIC50_pred); returns assay → (TST measured, TST predicted) and
    "CHEMBL0" → (its first measured value, its first prediction) in assay 1 (it has a replicate)."""
    from assayfew.data import PQSAR_FILES

    smiles = ["CCO", "CCCO", "CCCCO", "c1ccccc1", "c1ccccc1O", "c1ccccc1N", "CC(=O)O", "CCN", "CCCN", "CCCCN",
              "CCOC", "CCCl", "CCBr", "c1ccncc1"]
    (d / PQSAR_FILES["assays"]).write_text("assay_id\tdescription\tsubfamily\tfamily\n1\tx\tTK\tKinase\n2\ty\tA\tGPCR\n")
    (d / PQSAR_FILES["structures"]).write_text("".join(f"CHEMBL{i},{s}\n" for i, s in enumerate(smiles)))
    rng = np.random.default_rng(0)
    lines, tst = [], {}
    for assay in ("1", "2"):
        for i in range(len(smiles)):
            value, pred = 5 + rng.random() * 3, 5 + rng.random() * 3
            split = "TRN" if i < 8 else "TST"
            pred_text = "n/a" if (assay, i) == ("2", 12) else f"{pred:.3f}"  # one query compound lacks it
            lines.append(f"CHEMBL{i} {assay} {value:.3f} {pred_text} {split}\n")
            if (assay, i) == ("1", 0):
                tst["CHEMBL0"] = (round(value, 3), round(pred, 3))
            if split == "TST":
                tst.setdefault(assay, ([], []))
                tst[assay][0].append(round(value, 3))
                tst[assay][1].append(round(pred, 3))
    lines.append(f"CHEMBL0 1 {5.5:.3f} 9.000 TRN\n")  # a replicate: values and predictions averaged
    (d / PQSAR_FILES["activities"]).write_text("".join(lines))
    return tst


def test_pqsar_reference_is_kept_and_scored_on_the_query(tmp_path):
    from assayfew.evaluate import evaluate_tasks, evaluation_episodes, reference_prediction, with_reference
    from assayfew.metrics import r2_pearson
    from assayfew.tasks import TaskSet, build_taskset

    truth = _write_pqsar_si(tmp_path)
    built, _ = build_taskset(tmp_path, "pqsar", cache=False)
    built.save(tmp_path / "cache")
    ts = TaskSet.load(tmp_path / "cache")
    np.testing.assert_array_equal(ts.reference, built.reference)
    _, y, _ = ts.assay(ts.index("1"))  # CHEMBL0 is assay 1's first compound, measured twice
    assert y[0] == pytest.approx((truth["CHEMBL0"][0] + 5.5) / 2, abs=1e-4)
    assert ts.assay_reference(ts.index("1"))[0] == pytest.approx((truth["CHEMBL0"][1] + 9.0) / 2, abs=1e-4)
    episodes = evaluation_episodes(ts, support_k=4, seed=0)
    scored = with_reference(episodes)
    assert [t.assay_id for t in scored] == ["1"]  # assay 2 has a query compound without a prediction
    result = evaluate_tasks(scored, reference_prediction, n_boot=0)
    measured, predicted = truth["1"]
    np.testing.assert_allclose(scored[0].query_y, measured, atol=1e-3)
    assert result.per_assay["r2"].iloc[0] == pytest.approx(r2_pearson(np.array(measured), np.array(predicted)),
                                                           abs=1e-4)


def test_paired_comparison_uses_the_seeds_both_methods_ran():
    from assayfew.bench.report import paired_table

    rows = []
    for seed, (a, b) in enumerate([(0.5, 0.4), (0.9, 0.1)]):  # method b ran seed 0 only
        for i in range(6):
            rows.append({"method": "a", "seed": seed, "k": 16, "assay_id": f"X{i}", "r2": a + 0.01 * i})
            if seed == 0:
                rows.append({"method": "b", "seed": seed, "k": 16, "assay_id": f"X{i}", "r2": b})
    table = paired_table(pd.DataFrame(rows), 16, reference="a")
    assert table["seeds"].tolist() == [1] and table["better / worse"].tolist() == ["0 / 6"]
    assert table["Δ mean"].iloc[0] == pytest.approx(0.4 - np.mean([0.5 + 0.01 * i for i in range(6)]))
    assert table["Wilcoxon p"].iloc[0] == pytest.approx(0.03125)  # all six differences negative, exact test


def test_a_regularizer_is_an_axis_like_any_option():
    grid = parse_grid(GRID | {"study": [{"name": "reg", "regularizer": ["none", "taml"]}]})
    metas = [c for c in grid.cells if c.kind == "meta" and c.seed == 0]
    assert [c.method for c in metas] == ["anil++-metamix", "anil++-metamix+taml"]
    # defaults are not part of a cell's definition: the plain cell is the one a grid without the axis makes
    assert "regularizer" not in metas[0].config and metas[1].config["regularizer"] == "taml"
    plain = parse_grid(GRID | {"study": [{"name": "mixing", "mix": ["metamix"]}]})
    assert metas[0].id == next(c for c in plain.cells if c.kind == "meta" and c.seed == 0).id


def test_a_cell_another_worker_holds_is_left_to_it(data, tmp_path):
    from assayfew.bench.run import claim

    grid = parse_grid(GRID | {"baselines": ["ridge", "knn"], "study": []})
    held = grid.cells[1]
    with claim(tmp_path, held) as mine:  # as a second worker would, from another process
        assert mine
        first = _run(GRID | {"baselines": ["ridge", "knn"], "study": []}, data, tmp_path)
    assert first.busy == [held.id] and held.id not in first.ran and len(first.ran) == len(grid.cells) - 1
    then = _run(GRID | {"baselines": ["ridge", "knn"], "study": []}, data, tmp_path)
    assert then.ran == [held.id] and then.busy == []


def test_only_numeric_axes_are_plotted():
    from assayfew.bench.report import study_axis

    rows = pd.DataFrame({"layers": ["1,2", "1", "2"], "alpha": [0.5, 0.5, 0.5]})
    assert study_axis(rows, ["layers", "alpha"]) is None
    lam = pd.DataFrame({"fixed_lambda": ["", "0.2", "0.8"], "alpha": [0.5, 0.5, 0.5]})
    assert study_axis(lam, ["fixed_lambda", "alpha"]) == "fixed_lambda"
