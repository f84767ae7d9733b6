"""`assayfew tasks` on a tiny directory corpus written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from assayfew.chem import FingerprintSpec
from assayfew.cli.tasks import main
from assayfew.tasks import TaskSet

SMILES = ["CCO", "CCN", "CCC", "c1ccccc1", "CC(=O)O", "CCCl", "CCBr", "CCOC", "CNC", "OCCO"]

app = typer.Typer()
app.command()(main)


@pytest.fixture(autouse=True)
def _private_fp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSAYFEW_CACHE", str(tmp_path / "user_cache"))


def _corpus(root: Path) -> Path:
    corpus = root / "corpus"
    corpus.mkdir()
    lines = ["smiles,value,split"] + [f"{s},{5 + i * 0.1:.1f},{'train' if i < 7 else 'test'}" for i, s in enumerate(SMILES)]
    lines[3] = "not_a_smiles,6.0,train"  # line 4 of a.csv: rejected
    (corpus / "a.csv").write_text("\n".join(lines) + "\n")
    b = ["smiles,value"] + [f"{s},{7 - i * 0.2:.1f}" for i, s in enumerate(SMILES[:6])]
    b[2] = "CCN,"  # line 3 of b.csv: missing value
    (corpus / "b.csv").write_text("\n".join(b) + "\n")
    (corpus / "notes.txt").write_text("ignored\n")
    return corpus


def test_tasks_writes_cache_and_summary(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": ["b", "zzz"], "val": [], "made_by": "test"}))
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, [str(corpus), "--format", "dir", "--out", str(out), "--bits", "256",
                                      "--split", str(split), "--seed", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_assays"] == 2
    assert summary["n_measurements"] == 9 + 5
    assert summary["n_compounds"] == len(set(SMILES) - {"CCN"}) + 1  # CCN only valid in a.csv
    assert (summary["n_trn"], summary["n_tst"]) == (6, 3)
    rejected = {(Path(r["file"]).name, r["row"]) for r in summary["rejected"]}
    assert rejected == {("a.csv", 4), ("b.csv", 3)}
    assert all(r["reason"] for r in summary["rejected"])
    assert summary["config"]["seed"] == 3 and summary["config"]["spec"] == {"radius": 2, "bits": 256}
    assert summary["split"]["unknown"] == ["zzz"] and summary["split"]["n_test"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["sources"] == [str(corpus)]
    resolved = json.loads((out / "split.json").read_text())
    assert resolved["test"] == ["b"] and resolved["train"] == ["a"]
    taskset = TaskSet.load(out)
    assert sorted(taskset.assay_ids) == ["a", "b"] and taskset.spec.bits == 256
    assert "2 rejected rows" in result.output


def test_tasks_concatenates_sources_and_prefixes_collisions(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, [str(corpus), str(corpus / "a.csv"), "-f", "dir", "-o", str(out), "--bits", "64"])
    assert result.exit_code == 0, result.output
    taskset = TaskSet.load(out)
    assert taskset.assay_ids == ["a", "b", "a/a"]
    x1, y1, _ = taskset.assay(taskset.index("a"))
    x2, y2, _ = taskset.assay(taskset.index("a/a"))
    assert (y1 == y2).all() and (x1 == x2).all()


def test_tasks_feature_bits_recorded_and_featurized(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, [str(corpus), "-f", "dir", "-o", str(out), "--bits", "128", "--feature-bits", "64"])
    assert result.exit_code == 0, result.output
    taskset = TaskSet.load(out)
    assert taskset.spec == FingerprintSpec(radius=2, bits=128, feature_bits=64)
    assert json.loads((out / "summary.json").read_text())["config"]["spec"] == {"radius": 2, "bits": 128,
                                                                              "feature_bits": 64}
    plain = tmp_path / "plain"
    assert CliRunner().invoke(app, [str(corpus), "-f", "dir", "-o", str(plain), "--bits", "64"]).exit_code == 0
    ecfp = TaskSet.load(plain)
    assert ecfp.assay_ids == taskset.assay_ids
    for i in range(len(taskset)):
        assert (taskset.assay(i)[0][:, :64] == ecfp.assay(i)[0]).all()  # the ECFP columns come first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["CORPUS", "--bits", "64", "--feature-bits", "64"], "feature_bits"),
        (["missing_dir"], "no such file"),
        (["CORPUS", "--format", "nope"], "unknown --format"),
        (["CORPUS", "--split", "missing.json"], "not found"),
        (["BAD"], "bad.csv"),
    ],
)
def test_tasks_clear_errors(tmp_path: Path, args: list[str], message: str) -> None:
    corpus = _corpus(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bad.csv").write_text("foo,bar\n1,2\n")
    args = [{"CORPUS": str(corpus), "BAD": str(bad)}.get(a, a) for a in args]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", "")
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "summary.json").exists()


def test_tasks_pqsar_with_group_style_split(tmp_path: Path) -> None:
    """pQSAR SI files + a partial split (test listed, val drawn by n_val/val_seed) -> split.json."""
    data = tmp_path / "pqsar"
    data.mkdir()
    assays = [str(100 + a) for a in range(8)]
    (data / "ci9b00375_si_001.txt").write_text(
        "assay_id\tname\tsubfamily\tfamily\n" + "".join(f"{a}\tx\tsub\tKinase\n" for a in assays)
    )
    (data / "ci9b00375_si_003.txt").write_text(
        "Table S3 SMILES\n" + "".join(f"CHEMBL{i},{s}\n" for i, s in enumerate(SMILES))
    )
    lines = ["compound_id assay_id pIC50_exp pIC50_pred split"]
    for a in assays:
        for i in range(len(SMILES)):
            lines.append(f"CHEMBL{i} {a} {5 + i / 10:.2f} 6.0 {'TRN' if i < 6 else 'TST'}")
    (data / "ci9b00375_si_002.txt").write_text("\n".join(lines) + "\n")
    split = tmp_path / "group.json"
    split.write_text(json.dumps({"train": [], "val": [], "test": ["100", "101"], "n_val": 2, "val_seed": 0}))
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, [str(data), "-f", "pqsar", "-o", str(out), "--bits", "64", "--split", str(split)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_assays"], summary["n_trn"], summary["n_tst"]) == (8, 48, 32)
    resolved = json.loads((out / "split.json").read_text())
    assert resolved["test"] == ["100", "101"] and len(resolved["val"]) == 2 and len(resolved["train"]) == 4
    assert not set(resolved["val"]) & {"100", "101"}
    taskset = TaskSet.load(out)
    assert taskset.families == ["Kinase"] * 8
