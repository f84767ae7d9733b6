"""Readers on small files written in tmp_path."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from assayfew.data import PQSAR_FILES, TABLE_COLUMNS, DataFormatError, read_corpus, read_dir, read_fsmol, read_long_csv, read_pqsar

H = "\u2010"


def _write_pqsar(d: Path) -> Path:
    (d / PQSAR_FILES["assays"]).write_text(
        "Supplementary table 1\nassay_id\tdescription\tsubfamily\tfamily\n"
        "688643\tx\tTK\tKinase\n737826\ty\tGPCR A\tGPCR\n"
    )
    (d / PQSAR_FILES["structures"]).write_text(
        "Table S3 compounds\nCHEMBL ID,SMILE\nCHEMBL1,CC(=O)Oc1ccccc1C(=O)O\n"
        "CHEMBL2,CCN(CC)CCNC(=O)c1cc(Cl)c(N)cc1\nOC\n"
        "Page 2 of 300\n"
        "CHEMBL3,CC(C)Cc1ccc(\ncc1)C(C)\nC(=O)O\n"
    )
    (d / PQSAR_FILES["activities"]).write_text(
        "compound assay pIC50 pred split\n"
        "CHEMBL1 688643 6.52 6.10 TRN\n"
        f"CHEMBL2 688643 {H}1.5 {H}0.2 TST\n"
        "\n"
        "CHEMBL3 737826 7.0 6.9 TRN\n"
        "CHEMBL9 737826 5.0 5.1 TST\n"
        "CHEMBL1 737826 abc 5.1 TST\n"
    )
    return d


def test_read_pqsar_quirks(tmp_path: Path) -> None:
    table, report = read_pqsar(_write_pqsar(tmp_path))
    assert list(table.columns)[: len(TABLE_COLUMNS)] == TABLE_COLUMNS
    assert table["compound_id"].tolist() == ["CHEMBL1", "CHEMBL2", "CHEMBL3"]
    assert table["value"].tolist() == [6.52, -1.5, 7.0]
    assert table["pqsar_pred"].tolist() == [6.10, -0.2, 6.9]
    assert table["split"].tolist() == ["TRN", "TST", "TRN"]
    assert table["family"].tolist() == ["Kinase", "Kinase", "GPCR"]
    assert table["smiles"].tolist()[1:] == ["CCN(CC)CCNC(=O)c1cc(Cl)c(N)cc1OC", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"]
    assert table["row"].tolist() == [2, 3, 5]
    reasons = {(r["row"], r["reason"]) for r in report.rejected}
    assert (6, f"no structure for CHEMBL9 in {PQSAR_FILES['structures']}") in reasons
    assert any(row == 7 and "non-numeric value 'abc'" in reason for row, reason in reasons)
    assert all(r["file"].endswith(PQSAR_FILES["activities"]) for r in report.rejected)
    assert read_corpus(tmp_path)[0].equals(table)


def test_read_pqsar_missing_files(tmp_path: Path) -> None:
    (tmp_path / PQSAR_FILES["activities"]).write_text("")
    with pytest.raises(FileNotFoundError) as err:
        read_pqsar(tmp_path)
    msg = str(err.value)
    assert PQSAR_FILES["structures"] in msg and PQSAR_FILES["assays"] in msg and "10.1021/acs.jcim.9b00375" in msg
    assert PQSAR_FILES["activities"] not in msg


def test_read_long_csv_rejects_and_censors(tmp_path: Path) -> None:
    path = tmp_path / "davis_long.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("target,compound_id,smiles,pKd\nAAK1,1,CCO,7.3\nAAK1,2,CCN,5.0\nABL1,3,,6\nABL1,4,CCC,abc\nABL1,5,CC,inf\n")
    table, report = read_corpus(path)
    assert table["compound_id"].tolist() == ["1", "2"]
    assert table["relation"].tolist() == ["=", "<"]
    assert {(r["row"], r["reason"]) for r in report.rejected} == {
        (4, "empty SMILES"), (5, "non-numeric value 'abc' in column pKd"), (6, "non-numeric value 'inf' in column pKd")
    }
    assert [(n["row"], n["reason"]) for n in report.notes] == [(3, "censored value (relation '<')")]
    plain, plain_report = read_long_csv(path)  # censoring is opt-in
    assert set(plain["relation"]) == {"="} and not plain_report.notes
    with pytest.raises(DataFormatError, match=r"row 1, column 'tgt'"):
        read_long_csv(path, assay_col="tgt")


def test_long_csv_assay_column_of_a_chembl_export(tmp_path: Path) -> None:
    """A ChEMBL export (assay_chembl_id, pchembl_value, extra columns) is read as a long corpus: detected,
    one assay per assay_chembl_id; a header with no assay column names what it looked for."""
    path = tmp_path / "organism_long.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("assay_chembl_id,assay_type,smiles,pchembl_value,source_split\n"
                 "CHEMBL1,F,CCO,4.6,test\nCHEMBL1,F,CCN,5.1,train\nCHEMBL2,F,CCC,6.0,train\n")
    table, report = read_corpus(path)
    assert table["assay_id"].tolist() == ["CHEMBL1", "CHEMBL1", "CHEMBL2"]
    assert table["value"].tolist() == [4.6, 5.1, 6.0] and not report.rejected
    (tmp_path / "x.csv").write_text("assay,smiles,pchembl_value\nA,CCO,5\n")
    with pytest.raises(DataFormatError, match=r"column 'target'"):
        read_long_csv(tmp_path / "x.csv")


def test_read_dir_duplicates_family_split(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text("canonical_smiles,compound_chembl_id,pchembl_value,split\nCCO,CHEMBL1,6.1,train\nCCN,CHEMBL2,5.2,test\n")
    (tmp_path / "B.csv").write_bytes((tmp_path / "A.csv").read_bytes())
    (tmp_path / "C.csv").write_text("smiles,value\nCCC,1.5\n,2\n")
    (tmp_path / "targets.tsv").write_text("dataset\tdescription\nA\tTarget A: kinase\n")
    (tmp_path / "README.md").write_text("not data")
    table, report = read_dir(tmp_path)
    assert table["assay_id"].tolist() == ["A", "A", "C"]
    assert table["split"].tolist() == ["TRN", "TST", ""]
    assert table["family"].tolist() == ["Target A: kinase", "Target A: kinase", ""]
    assert table["compound_id"].tolist() == ["CHEMBL1", "CHEMBL2", ""]
    assert any(n["file"].endswith("B.csv") and "byte-identical duplicate of A.csv" in n["reason"] for n in report.notes)
    assert [(Path(r["file"]).name, r["row"], r["reason"]) for r in report.rejected] == [("C.csv", 3, "empty SMILES")]
    (tmp_path / "D.csv").write_text("smiles,foo\nCC,1\n")
    with pytest.raises(DataFormatError, match="D.csv"):
        read_dir(tmp_path)


def test_read_fsmol_units_relations_variants(tmp_path: Path) -> None:
    header = "smiles,pchembl,standard_value,standard_units,standard_relation,chembl_id\n"
    (tmp_path / "raw_CHEMBL7.csv").write_text(header + "CCO,,1000,nM,=,CHEMBL7\n")
    (tmp_path / "cleaned_CHEMBL7.csv").write_text(
        header + "CCO,6.5,,nM,=,CHEMBL7\nCCN,,10,uM,<,CHEMBL7\nCCC,,100000,nM,>,CHEMBL7\nCCCC,,0.5,ug.mL-1,=,CHEMBL7\n"
    )
    table, report = read_fsmol(tmp_path)
    assert set(table["file"].map(lambda f: Path(f).name)) == {"cleaned_CHEMBL7.csv"}
    assert table["assay_id"].tolist() == ["CHEMBL7"] * 3
    assert table["value"].round(6).tolist() == [6.5, 5.0, 4.0]
    assert table["relation"].tolist() == ["=", ">", "<"]  # relation of the -log10 value
    assert [r["row"] for r in report.rejected] == [5] and "unsupported units 'ug.mL-1'" in report.rejected[0]["reason"]
    reasons = [n["reason"] for n in report.notes]
    assert sum("censored" in r for r in reasons) == 2
    assert any("less processed variant" in r for r in reasons)
