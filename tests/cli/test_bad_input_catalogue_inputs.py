"""Catalogue of bad and unusual `assayfew predict` inputs: formats, encodings, activities, structures.

Each case writes a small file, runs the CLI in process and asserts the exit code, the message and whether
(and what) output was written. Cases that passed before the hardening are kept as regression guards.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from typer.testing import CliRunner

from assayfew.predict import example_assay
from tests.unit.test_userfiles import SDF_BAD

runner = CliRunner()


def assay() -> pd.DataFrame:
    """40 rows of the bundled ChEMBL assay, 10 of them measured (pIC50)."""
    table, _ = example_assay(n_measured=10, seed=0)
    return table[table["pIC50"].notna() | (table.index < 30)].reset_index(drop=True)


def measured_index(table: pd.DataFrame) -> pd.Index:
    return table.index[table["pIC50"].notna()]


def csv_bytes(table: pd.DataFrame, **kwargs) -> bytes:
    return table.to_csv(index=False, **kwargs).encode()


def sdf_bytes(table: pd.DataFrame, extra: str = "") -> bytes:
    lines = []
    for row in table.itertuples(index=False):
        mol = Chem.MolFromSmiles(row.smiles)
        mol.SetProp("_Name", str(row.compound_id))
        if pd.notna(row.pIC50):
            mol.SetProp("pIC50", f"{row.pIC50:.3f}")
        lines.append(Chem.MolToMolBlock(mol) + f">  <pIC50>\n{'' if pd.isna(row.pIC50) else f'{row.pIC50:.3f}'}\n\n$$$$\n")
    return ("".join(lines) + extra).encode()


def xlsx_bytes(table: pd.DataFrame, path: Path) -> bytes:
    table.to_excel(path, index=False, engine="openpyxl")
    return path.read_bytes()


def with_activity(values: dict[int, object]) -> pd.DataFrame:
    table = assay()
    table["pIC50"] = table["pIC50"].astype(object)
    for row, value in values.items():
        table.loc[row, "pIC50"] = value
    return table


def nanomolar_in_p_column() -> pd.DataFrame:
    table = assay()
    table["pIC50"] = 10 ** (9 - table["pIC50"])
    return table


def replicate_disagreeing() -> pd.DataFrame:
    table = assay()
    first = measured_index(table)[0]
    extra = table.loc[[first]].assign(pIC50=table.loc[first, "pIC50"] + 3.0, compound_id="again")
    return pd.concat([table, extra], ignore_index=True)


def salt_and_parent() -> pd.DataFrame:
    table = assay()
    extra = pd.DataFrame({"compound_id": ["parent", "salt"],
                          "smiles": ["OC(=O)c1ccccc1C(=O)N", "[Na+].[O-]C(=O)c1ccccc1C(=O)N"], "pIC50": [None, None]})
    return pd.concat([table, extra], ignore_index=True)


@dataclass
class Case:
    id: str
    name: str  # input file name
    content: Callable[[Path], bytes] | None  # None: the path is not created
    exit_code: int
    messages: tuple[str, ...]
    args: tuple[str, ...] = ()
    check: Callable[[pd.DataFrame], None] | None = None  # output expected (and checked) when set
    absent: tuple[str, ...] = ()  # messages that must not appear
    rows: int | None = None  # output rows expected
    extra: dict = field(default_factory=dict)


def _status(row: int, prefix: str) -> Callable[[pd.DataFrame], None]:
    def check(out: pd.DataFrame) -> None:
        assert str(out.loc[row, "status"]).startswith(prefix), out.loc[row, "status"]
    return check


def _salt_equals_parent(out: pd.DataFrame) -> None:
    assert list(out["smiles"].iloc[-2:]) == ["OC(=O)c1ccccc1C(=O)N", "[Na+].[O-]C(=O)c1ccccc1C(=O)N"]
    assert out["prediction"].iloc[-1] == pytest.approx(out["prediction"].iloc[-2], abs=1e-6)
    assert list(out["status"].iloc[-2:]) == ["ok", "ok; standardised to NC(=O)c1ccccc1C(=O)O"]


def _salt_differs(out: pd.DataFrame) -> None:
    assert out["prediction"].iloc[-1] != pytest.approx(out["prediction"].iloc[-2], abs=1e-6)


def _all_ok(out: pd.DataFrame) -> None:
    assert (out["status"] == "ok").all() and np.isfinite(out["prediction"]).all()


def _replicates(out: pd.DataFrame) -> None:
    first = measured_index(assay())[0]
    assert "disagree by 3.0 log units" in out.loc[first, "status"] and out.loc[first, "status"].startswith("ok; ")
    assert out.loc[first, "cv_prediction"] == out["cv_prediction"].iloc[-1]


def _rejected(out: pd.DataFrame) -> None:
    rows = measured_index(assay())[:2]
    assert out.loc[rows[0], "status"] == "invalid activity value 'n.d.' (not a number): not used as measured"
    assert out.loc[rows[1], "status"].startswith("invalid activity value '>10'")
    assert np.isfinite(out.loc[rows, "prediction"]).all()


def _sdf_rows(out: pd.DataFrame) -> None:
    assert out["status"].iloc[-1].startswith(f"invalid structure in SDF record {N + 1}: sanitization failed")
    assert np.isnan(out["prediction"].iloc[-1]) and out["name"].iloc[-1] == "bad"
    assert (out["status"].iloc[:-1] == "ok").all()


N = len(assay())
CASES = [
    # --- file formats
    Case("xlsx", "assay.xlsx", lambda p: xlsx_bytes(assay(), p.with_name("tmp.xlsx")), 0,
         ("measured: 10",), check=_all_ok, rows=N),
    Case("xlsx-damaged", "assay.xlsx", lambda p: b"PK\x03\x04" + b"\x00junk" * 50, 2,
         ("assay.xlsx: not a readable Excel .xlsx file",), absent=("UTF-8",)),
    Case("xls-legacy", "assay.xls", lambda p: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, 2,
         ("legacy Excel .xls file; save it as .xlsx or CSV",)),
    Case("sdf-with-bad-record", "mols.sdf", lambda p: sdf_bytes(assay(), SDF_BAD), 0,
         (f"rows: {N + 1}", "invalid structures: 1"), check=_sdf_rows, rows=N + 1, absent=("Columns:",)),
    Case("sdf-gz", "mols.sdf.gz", lambda p: gzip.compress(sdf_bytes(assay())), 0, ("measured: 10",),
         check=_all_ok, rows=N),
    Case("tsv", "assay.tsv", lambda p: csv_bytes(assay(), sep="\t"), 0, ("read as tab-separated",),
         check=_all_ok, rows=N),
    Case("semicolon", "assay.csv", lambda p: csv_bytes(assay(), sep=";"), 0, ("read as semicolon-separated",),
         check=_all_ok, rows=N),
    Case("semicolon-decimal-comma", "eu.csv", lambda p: csv_bytes(assay(), sep=";", decimal=","), 0,
         ("read as semicolon-separated", "measured: 10", "rejected activity values: 0"), check=_all_ok, rows=N),
    Case("sep-forced-wrong", "assay.csv", lambda p: csv_bytes(assay(), sep=";"), 2,
         ("no smiles column found",), args=("--sep", ",")),
    Case("sep-unknown", "assay.csv", lambda p: csv_bytes(assay()), 2, ("unknown separator '|'",),
         args=("--sep", "|")),
    Case("latin-1", "assay.csv", lambda p: csv_bytes(assay().assign(note="Müller µM")).decode().encode("latin-1"), 0,
         ("not UTF-8; read as Windows-1252 (Latin-1) text",), check=_all_ok, rows=N),
    Case("utf8-bom", "assay.csv", lambda p: b"\xef\xbb\xbf" + csv_bytes(assay()), 0, ("measured: 10",),
         check=_all_ok, rows=N),
    Case("csv-gz", "assay.csv.gz", lambda p: gzip.compress(csv_bytes(assay())), 0, ("measured: 10",),
         check=_all_ok, rows=N),
    Case("utf16-excel-unicode-text", "assay.txt", lambda p: csv_bytes(assay(), sep="\t").decode().encode("utf-16"),
         0, ("read as tab-separated",), check=_all_ok, rows=N),
    Case("binary", "image.csv", lambda p: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", 2, ("a binary file",)),
    # --- file structure
    Case("header-only", "h.csv", lambda p: b"smiles,pIC50\n", 2, ("h.csv: no data rows (only a header line",)),
    Case("empty", "e.csv", lambda p: b"", 2, ("e.csv: empty file (no header line)",)),
    Case("missing", "missing.csv", None, 2, ("missing.csv: file not found",)),
    Case("ragged", "r.csv", lambda p: b"smiles,pIC50\nCCO,5\nCCN,6,7\n", 2, ("r.csv, line 3: 3 fields",)),
    Case("duplicate-header", "d.csv", lambda p: b"smiles,smiles\nC,C\n", 2, ("duplicate column name(s)",)),
    Case("no-smiles-column", "n.csv", lambda p: b"name,pIC50\nx,1\n", 2, ("no smiles column found",)),
    # --- activities
    Case("nanomolar-in-p-column", "nm.csv", lambda p: csv_bytes(nanomolar_in_p_column()), 2,
         ("outside the plausible range of 0–14 p-units", "give --units nM or --units uM")),
    Case("negative-p", "neg.csv", lambda p: csv_bytes(with_activity({measured_index(assay())[0]: -3})), 2,
         ("-3 (row", "p-units are −log10 molar")),
    Case("nanomolar-with-units", "nm.csv", lambda p: csv_bytes(nanomolar_in_p_column()), 0, ("measured: 10",),
         args=("--units", "nM"), check=_all_ok, rows=N),
    Case("rejected-activities", "rej.csv",
         lambda p: csv_bytes(with_activity(dict(zip(measured_index(assay())[:2], ["n.d.", ">10"])))), 0,
         ("measured: 8", "rejected activity values: 2", "2 activity value(s) could not be used"),
         check=_rejected, rows=N),
    Case("replicates-disagree", "dup.csv", lambda p: csv_bytes(replicate_disagreeing()), 0,
         ("measured: 11 (10 distinct compounds)", "disagree by more than 1 log unit for 1 compound"),
         check=_replicates, rows=N + 1),
    Case("too-few-measured", "few.csv", lambda p: b"smiles,pIC50\nCCO,5\nCCN,6\nCCC,\n", 2,
         ("need at least 3 measured compounds",)),
    Case("constant", "c.csv", lambda p: b"smiles,pIC50\nCCO,5\nCCN,5\nCCC,5\nCCCl,\n", 2,
         ("all 3 measured activities are equal",)),
    Case("unknown-units", "u.csv", lambda p: csv_bytes(assay()), 2, ("unknown units 'mM'",), args=("--units", "mM")),
    # --- structures
    Case("invalid-smiles", "inv.csv", lambda p: csv_bytes(assay().assign(
        smiles=lambda t: t["smiles"].where(t.index != 35, "C1CC"))), 0, ("invalid structures: 1",),
         check=_status(35, "invalid SMILES"), rows=N),
    Case("salt-stripped", "salt.csv", lambda p: csv_bytes(salt_and_parent()), 0, ("measured: 10",),
         check=_salt_equals_parent, rows=N + 2),
    Case("no-standardize", "salt.csv", lambda p: csv_bytes(salt_and_parent()), 0, ("measured: 10",),
         args=("--no-standardize",), check=_salt_differs, rows=N + 2),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_predict_input_catalogue(case: Case, tiny_model_dir, tmp_path):
    from assayfew.cli import typer_app

    source, out = tmp_path / case.name, tmp_path / "out.csv"
    if case.content is not None:
        source.write_bytes(case.content(source))
    res = runner.invoke(typer_app, ["predict", str(source), "--model", str(tiny_model_dir), "--out", str(out),
                                    *case.args])
    text = " ".join(res.output.split())
    assert res.exit_code == case.exit_code, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    for message in case.messages:
        assert message in text, (message, res.output)
    for message in case.absent:
        assert message not in text, (message, res.output)
    if case.check is None:
        assert not out.exists()
        return
    table = pd.read_csv(out)
    assert len(table) == case.rows
    case.check(table)


def test_catalogue_is_large_enough():
    assert len(CASES) >= 20


def test_measured_row_order_does_not_change_any_output(tiny_model_dir, tmp_path):
    from assayfew.cli import typer_app

    table = assay()
    outputs = []
    for name, frame in (("fwd", table), ("rev", table.iloc[::-1]), ("mix", table.sample(frac=1, random_state=3))):
        src, out = tmp_path / f"{name}.csv", tmp_path / f"{name}_out.csv"
        frame.to_csv(src, index=False)
        res = runner.invoke(typer_app, ["predict", str(src), "--model", str(tiny_model_dir), "--out", str(out)])
        assert res.exit_code == 0, res.output
        r2_line = next(line for line in res.output.splitlines() if "cross-validated R²" in line)
        outputs.append((r2_line, pd.read_csv(out).set_index("compound_id").sort_index()))
    for r2_line, frame in outputs[1:]:
        assert r2_line == outputs[0][0]
        pd.testing.assert_frame_equal(frame, outputs[0][1], rtol=0, atol=1e-6)
