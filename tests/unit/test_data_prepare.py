"""prepare_corpus: invalid SMILES, replicates, splits, censoring; Report helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assayfew.chem import FingerprintSpec, featurize_smiles
from assayfew.data import Report, read_long_csv
from assayfew.data.prepare import prepare_corpus


def test_prepare_aggregates_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "target,compound_id,smiles,value,split\n"
        "A,c1,OCC,5.0,train\n"  # row 2
        "A,c1b,CCO,7.0,test\n"  # row 3: same canonical compound → replicate, mixed split
        "A,c2,bad(,6.0,train\n"  # row 4: invalid SMILES
        "B,c1,CCO,4.0,test\n"  # row 5: other assay, not a replicate
        "B,c3,c1ccccc1,3.0,test\n"
    )
    table, report = read_long_csv(path, value_col="value", split_col="split")
    table.loc[table["row"] == 6, "relation"] = "<"
    spec = FingerprintSpec(radius=2, bits=256)
    prepared = prepare_corpus(table, report, spec)
    out = prepared.table
    assert out["assay_id"].tolist() == ["A", "B", "B"]
    assert out["value"].tolist() == [6.0, 4.0, 3.0]
    assert out["n_replicates"].tolist() == [2, 1, 1]
    assert out["split"].tolist() == ["TRN", "TST", "TST"]
    assert out["censored"].tolist() == [False, False, True]
    assert out["smiles"].tolist() == ["CCO", "CCO", "c1ccccc1"]
    assert out["fp_row"].iloc[0] == out["fp_row"].iloc[1]
    assert prepared.fingerprints.shape == (2, 256)
    expected = featurize_smiles(["CCO", "c1ccccc1"], spec).fingerprints
    assert np.array_equal(prepared.fingerprints[out["fp_row"].to_numpy()], expected[[0, 0, 1]])
    assert [(r["row"], r["reason"]) for r in prepared.report.rejected] == [(4, "invalid SMILES: unparsable SMILES")]
    notes = [(n["row"], n["reason"]) for n in prepared.report.notes]
    assert (3, "replicate of row 2, aggregated by mean") in notes
    assert (2, "replicates have different splits; kept TRN") in notes
    assert prepared.report.counts["censored rows kept"] == 1


def test_report_roundtrip() -> None:
    a, b = Report(), Report()
    a.reject("f.csv", 3, "non-numeric value 'x' in column v")
    b.reject("g.csv", 4, "non-numeric value 'y' in column v")
    b.flag("g.csv", 5, "censored value (relation '<')")
    a.extend(b)
    d = a.to_dict()
    assert len(d["rejected"]) == 2 and len(d["notes"]) == 1
    assert d["counts"] == {"non-numeric value '…' in column v": 2, "censored value (relation '…')": 1}
