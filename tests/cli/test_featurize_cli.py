"""`assayfew featurize` via typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from assayfew.chem import FingerprintSpec, featurize_smiles
from assayfew.cli import typer_app as app

runner = CliRunner()


def test_featurize_keeps_order_and_invalid_rows(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    smiles = ["c1ccccc1O", "bad(", "CCO", "", "CCN"]
    src.write_text("id,canonical_smiles\n" + "".join(f"{i},{s}\n" for i, s in enumerate(smiles)))
    out = tmp_path / "out.npz"
    result = runner.invoke(app, ["featurize", str(src), "--out", str(out), "--bits", "512", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "2 invalid rows" in result.output and "unparsable SMILES" in result.output
    with np.load(out, allow_pickle=False) as data:
        assert data["smiles"].tolist() == smiles
        assert data["valid"].tolist() == [True, False, True, False, True]
        assert data["fingerprints"].shape == (5, 512) and data["fingerprints"].dtype == np.uint8
        ref = featurize_smiles(smiles, FingerprintSpec(bits=512)).fingerprints
        assert np.array_equal(data["fingerprints"], ref)


def test_featurize_missing_column_and_file(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,structure\n1,CCO\n")
    result = runner.invoke(app, ["featurize", str(src), "--out", str(tmp_path / "o.npz")])
    assert result.exit_code == 2
    assert "in.csv" in result.output and "smiles" in result.output.lower()
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["featurize", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.npz")])
    assert result.exit_code == 2 and "none.csv" in result.output
    result = runner.invoke(app, ["featurize", str(src), "--out", str(tmp_path / "o.npz"), "--smiles-col", "structure", "--no-cache"])
    assert result.exit_code == 0, result.output


def test_featurize_feature_bits(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    smiles = ["c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "bad("]
    src.write_text("smiles\n" + "".join(f"{s}\n" for s in smiles))
    out = tmp_path / "out.npz"
    args = ["featurize", str(src), "--out", str(out), "--bits", "512", "--no-cache"]
    result = runner.invoke(app, args + ["--feature-bits", "256"])
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as data:
        ref = featurize_smiles(smiles, FingerprintSpec(bits=512, feature_bits=256)).fingerprints
        assert np.array_equal(data["fingerprints"], ref)
        ecfp_only = featurize_smiles(smiles, FingerprintSpec(bits=256)).fingerprints
        assert np.array_equal(data["fingerprints"][:, :256], ecfp_only)
    result = runner.invoke(app, args + ["--feature-bits", "512"])
    assert result.exit_code == 2 and "feature_bits" in result.output and "Traceback" not in result.output
