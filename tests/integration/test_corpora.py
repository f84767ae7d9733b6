"""Every shared corpus loads via read_corpus with the expected assay counts; SIMPD prepares."""

from __future__ import annotations

from pathlib import Path

import pytest

from assayfew.chem import FingerprintSpec
from assayfew.data import TABLE_COLUMNS, read_corpus
from assayfew.data.prepare import prepare_corpus

pytestmark = pytest.mark.shared_data


@pytest.mark.parametrize(
    ("folder", "n_assays"),
    [("simpd_chembl32_ki", {69}), ("kiba/kiba_long.csv.gz", {229}), ("davis/davis_long.csv.gz", {442}), ("chembl28_ycu", {15, 16})],
)
def test_corpus_loads(shared_data: Path, folder: str, n_assays: set[int]) -> None:
    table, report = read_corpus(shared_data / folder)
    assert list(table.columns)[: len(TABLE_COLUMNS)] == TABLE_COLUMNS
    assert table["assay_id"].nunique() in n_assays
    assert (table["smiles"] != "").all() and table["value"].notna().all()
    assert table["row"].min() >= 2


def test_simpd_splits_and_davis_censoring(shared_data: Path) -> None:
    simpd, _ = read_corpus(shared_data / "simpd_chembl32_ki")
    assert set(simpd["split"]) == {"TRN", "TST"}
    assert simpd["family"].str.startswith("Target CHEMBL").all()
    davis, report = read_corpus(shared_data / "davis/davis_long.csv.gz")
    censored = (davis["relation"] == "<").mean()
    assert 0.6 < censored < 0.8  # README: ~70% censored at pKd 5.0
    assert len(report.notes) == int((davis["relation"] == "<").sum())


def test_fsmol(shared_data: Path) -> None:
    table, report = read_corpus(shared_data / "fsmol")
    assert set(table["assay_id"]) == {"CHEMBL1001235", "CHEMBL1002396"}
    assert any("ug.mL-1" in r["reason"] for r in report.rejected)  # CHEMBL1000114 has no molar units
    assert (table["relation"] != "=").any()


def test_prepare_simpd(shared_data: Path) -> None:
    table, report = read_corpus(shared_data / "simpd_chembl32_ki")
    keep = sorted(table["assay_id"].unique())[:8]  # a subset keeps the test fast; benchmarks do all
    table = table[table["assay_id"].isin(keep)].reset_index(drop=True)
    prepared = prepare_corpus(table, report, FingerprintSpec())
    out = prepared.table
    assert out["assay_id"].nunique() == 8
    assert len(out) + sum(out["n_replicates"] - 1) + len(prepared.report.rejected) == len(table)
    assert prepared.fingerprints.shape[1] == 1024
    assert out["fp_row"].max() == len(prepared.fingerprints) - 1
