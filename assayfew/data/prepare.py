"""Prepared corpora: one row per (assay, compound), replicates aggregated, fingerprints computed once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from assayfew.chem import FingerprintSpec, featurize_smiles
from assayfew.data.table import Report

_SPLIT_RANK = {"TRN": 0, "TST": 1, "": 2}  # replicates with mixed splits keep TRN
PREPARED_COLUMNS = [
    "assay_id", "compound_id", "smiles", "value", "n_replicates", "split", "censored", "family", "fp_row",
]


@dataclass
class PreparedCorpus:
    """table: one row per (assay_id, canonical compound); fingerprints[table.fp_row] are its bits."""

    table: pd.DataFrame
    fingerprints: np.ndarray
    spec: FingerprintSpec
    report: Report
    standardized: bool = False  # structures standardised (largest fragment, neutralised) before featurizing


def prepare_corpus(
    table: pd.DataFrame,
    report: Report,
    spec: FingerprintSpec = FingerprintSpec(),
    *,
    standardize: bool = True,
    cache: bool | Path = False,
) -> PreparedCorpus:
    """Featurize unique SMILES once, reject invalid ones, aggregate replicates by mean (noted per row).

    Replicates with different splits keep TRN; a compound is censored when any of its rows is. A reader's
    `pqsar_pred` column (pQSAR's own prediction) is kept, averaged like the values, as column `reference`.
    The returned report is `report` extended with this step's rejections and notes.
    """
    inverse, unique = pd.factorize(table["smiles"].astype(str).to_numpy(dtype=object))
    feats = featurize_smiles(list(unique), spec, standardize=standardize, cache=cache)

    valid_row = feats.valid[inverse]
    for file, row, idx in zip(table["file"].to_numpy()[~valid_row], table["row"].to_numpy()[~valid_row], inverse[~valid_row]):
        report.reject(file, int(row), f"invalid SMILES: {feats.reasons[idx]}")
    kept = table.loc[valid_row].copy()
    canonical = np.asarray(feats.canonical, dtype=object)[inverse[valid_row]]
    kept["smiles"] = canonical

    # one fingerprint row per unique canonical SMILES (first occurrence)
    canon_inverse, _ = pd.factorize(canonical)
    _, canon_first = np.unique(canon_inverse, return_index=True)
    src_rows = inverse[valid_row][canon_first]
    fingerprints = feats.fingerprints[src_rows]
    kept["fp_row"] = canon_inverse.astype(np.int64)
    kept["censored"] = kept["relation"].astype(str) != "="
    kept["_order"] = np.arange(len(kept))
    kept["_split_rank"] = kept["split"].map(_SPLIT_RANK).fillna(2).astype(np.int8)

    groups = kept.groupby(["assay_id", "fp_row"], sort=False)
    first_pos = groups["_order"].transform("min")
    dup = kept["_order"] != first_pos
    if dup.any():
        first_row = kept["row"].to_numpy()[first_pos.to_numpy()]
        for file, row, ref in zip(kept["file"].to_numpy()[dup], kept["row"].to_numpy()[dup], first_row[dup.to_numpy()]):
            report.flag(file, int(row), f"replicate of row {int(ref)}, aggregated by mean")
        n_splits = groups["split"].transform("nunique")
        mixed = (n_splits > 1) & ~dup
        for file, row in kept.loc[mixed, ["file", "row"]].itertuples(index=False):
            report.flag(file, int(row), "replicates have different splits; kept TRN")
    n_censored = int(kept["censored"].sum())
    if n_censored:
        report.counts["censored rows kept"] = report.counts.get("censored rows kept", 0) + n_censored

    agg = groups.agg(
        compound_id=("compound_id", "first"),
        smiles=("smiles", "first"),
        value=("value", "mean"),
        n_replicates=("value", "size"),
        _split_rank=("_split_rank", "min"),
        censored=("censored", "any"),
        family=("family", "first"),
        _order=("_order", "min"),
        **({"reference": ("pqsar_pred", "mean")} if "pqsar_pred" in kept.columns else {}),
    ).reset_index()
    agg = agg.sort_values("_order", kind="stable").reset_index(drop=True)
    agg["split"] = np.array(["TRN", "TST", ""], dtype=object)[agg["_split_rank"].to_numpy()]
    out = agg[PREPARED_COLUMNS + (["reference"] if "reference" in agg.columns else [])].copy()
    out["n_replicates"] = out["n_replicates"].astype(np.int64)
    out["censored"] = out["censored"].astype(bool)
    return PreparedCorpus(table=out, fingerprints=fingerprints, spec=spec, report=report, standardized=standardize)
