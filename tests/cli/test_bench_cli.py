"""`assayfew bench drug|report` on a tiny corpus."""

from __future__ import annotations

from typer.testing import CliRunner

from assayfew.cli import typer_app
from assayfew.splits import Split
from tests.conftest import make_synthetic_taskset

runner = CliRunner()

GRID = """
seeds = [3]
k = [4]
baselines = ["ridge", "knn"]

[train]
epochs = 1
iters = 2
meta_batch = 4
hidden = [16, 16]
device = "cpu"

[[study]]
name = "mixing"
mix = ["metamix"]
"""


def test_bench_drug_then_report(tmp_path):
    ts = make_synthetic_taskset(n_assays=8, n_per_assay=30, with_split=True)
    ts.save(tmp_path / "cache")
    Split(train=ts.assay_ids[:5], val=ts.assay_ids[5:6], test=ts.assay_ids[6:]).save(tmp_path / "split.json")
    (tmp_path / "grid.toml").write_text(GRID)
    args = ["bench", "drug", "--grid", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "out"),
            "--corpus", str(tmp_path / "cache"), "--split", str(tmp_path / "split.json")]
    res = runner.invoke(typer_app, args)
    assert res.exit_code == 0, res.output
    assert "ran 3 cell(s), skipped 0" in res.output
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| anil++-metamix | 1 | 2 |" in report and "| knn | 1 | 2 |" in report
    res = runner.invoke(typer_app, args)
    assert res.exit_code == 0 and "ran 0 cell(s), skipped 3" in res.output
    (tmp_path / "out" / "report.md").unlink()
    res = runner.invoke(typer_app, ["bench", "report", str(tmp_path / "out"), "--reference", "knn"])
    assert res.exit_code == 0, res.output
    assert "each method − knn" in (tmp_path / "out" / "report.md").read_text()


def test_bench_errors_are_one_line(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID.replace('mix = ["metamix"]', 'mixer = ["metamix"]'))
    res = runner.invoke(typer_app, ["bench", "drug", "--grid", str(tmp_path / "grid.toml"), "--out",
                                    str(tmp_path / "out"), "--corpus", "nowhere", "--split", "none.json"])
    assert res.exit_code == 2
    assert "'mixer' is not a training option" in res.output and "Traceback" not in res.output
    res = runner.invoke(typer_app, ["bench", "report", str(tmp_path)])
    assert res.exit_code == 2 and "no results file" in res.output
