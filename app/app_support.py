"""Presentation helpers for the Streamlit dashboard: parsing pasted text, ranking, charts (no modelling)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from assayfew.predict import (ACTIVITY_COLUMNS, SMILES_COLUMNS, InputError, PredictionResult, detect_column,
                              parse_activities, to_p)
from assayfew.userfiles import UserTable, read_user_table, sniff_delimiter

MAX_ROWS = 20_000
MAX_BYTES = 10_000_000
UPLOAD_TYPES = ["csv", "tsv", "txt", "tab", "xlsx", "sdf", "sd", "gz"]
LABEL_COLUMNS = ("compound_id", "Compound_ID", "compound", "Compound", "id", "ID", "Name", "name",
                 "molecule_chembl_id", "molecule_id")
PASTE_HEADER = "smiles,activity"


def parse_pasted(text: str, *, max_rows: int = MAX_ROWS) -> UserTable:
    """A table from pasted "SMILES,value" lines (comma, tab or semicolon: cells pasted from a spreadsheet
    are tab-separated); a header line is optional (default: smiles,activity)."""
    body = text.strip("\n\r ")
    if not body:
        raise InputError("pasted text is empty: paste one 'SMILES,value' line per compound")
    lines = body.splitlines()
    delimiter = sniff_delimiter(lines)
    header = [field.strip() for field in next(csv.reader([lines[0]], delimiter=delimiter))]
    known = set(SMILES_COLUMNS) | set(ACTIVITY_COLUMNS)
    has_header = any(field in known for field in header)
    width = len(header) if has_header else len(PASTE_HEADER.split(","))
    for number, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
        if len(row) > width:
            raise InputError(f"pasted text, line {number}: {len(row)} fields, expected {width}; "
                             "use one 'SMILES,value' pair per line")
    if not has_header:
        body = PASTE_HEADER.replace(",", delimiter) + "\n" + body
    source = io.StringIO(body + "\n")
    source.name = "pasted text"  # type: ignore[attr-defined]
    return read_user_table(source, sep=delimiter, max_rows=max_rows)


def guess_column(columns: Sequence[str], candidates: Sequence[str], what: str) -> tuple[int | None, str]:
    """Index of the auto-detected column (None when undetectable) and a note for the user ('' when found)."""
    try:
        found = detect_column(columns, candidates, None, what)
    except InputError:
        return None, f"Could not guess the {what} column unambiguously: choose it."
    return list(map(str, columns)).index(found), ""


def label_column(table: pd.DataFrame, smiles_col: str) -> str:
    """The column naming compounds: a known id column, else the SMILES."""
    for name in LABEL_COLUMNS:
        if name in table.columns:
            return name
    return smiles_col


def measured_mask(result: PredictionResult) -> np.ndarray:
    """Rows used as measured (a valid structure and activity)."""
    mask = np.zeros(len(result.table), dtype=bool)
    mask[result.measured_rows] = True
    return mask


def candidates(result: PredictionResult, kappa: float) -> pd.DataFrame:
    """Unmeasured rows with a prediction, ranked by upper confidence bound (p-scale) = p + κ·uncertainty."""
    table = result.table
    label = label_column(table, result.smiles_col)
    keep = ~measured_mask(result) & np.isfinite(table["prediction"].to_numpy(dtype=float))
    rows = table.loc[keep]
    p_pred = to_p(rows["prediction"].to_numpy(dtype=float), result.units)
    unc = rows["uncertainty"].to_numpy(dtype=float)
    ucb = p_pred + kappa * np.nan_to_num(unc, nan=0.0)
    ranked = pd.DataFrame({
        "compound": rows[label].astype(str).to_numpy(),
        "smiles": rows[result.smiles_col].to_numpy(),
        "prediction": rows["prediction"].to_numpy(dtype=float),
        "p_prediction": p_pred,
        "uncertainty": unc,
        "ucb": ucb,
        "similarity_to_support": rows["similarity_to_support"].to_numpy(dtype=float),
        "in_domain": rows["in_domain"].to_numpy(dtype=bool),
    }, index=rows.index)
    return ranked.sort_values("ucb", ascending=False, kind="stable")


def top_predicted(result: PredictionResult, n: int = 12) -> pd.DataFrame:
    """The `n` unmeasured compounds with the most potent prediction."""
    ranked = candidates(result, kappa=0.0)
    return ranked.sort_values("p_prediction", ascending=False, kind="stable").head(n)


def cv_chart(result: PredictionResult) -> alt.Chart:
    """Measured vs cross-validated prediction on the measured compounds."""
    mask = measured_mask(result)
    table = result.table.loc[mask]
    measured, _ = parse_activities(table[result.activity_col], result.units)
    measured = np.where(np.isfinite(measured), measured, np.nan)
    data = pd.DataFrame({"measured (p)": measured,
                         "cross-validated (p)": to_p(table["cv_prediction"].to_numpy(dtype=float), result.units),
                         "compound": table[label_column(result.table, result.smiles_col)].astype(str).to_numpy()})
    data = data.dropna()
    title = f"Measured vs cross-validated (support CV R² = {result.cv_r2:.2f})"
    lo = float(np.nanmin(data[["measured (p)", "cross-validated (p)"]].to_numpy())) if len(data) else 0.0
    hi = float(np.nanmax(data[["measured (p)", "cross-validated (p)"]].to_numpy())) if len(data) else 1.0
    scale = alt.Scale(domain=[lo - 0.2, hi + 0.2], zero=False)
    points = alt.Chart(data).mark_circle(size=60).encode(
        x=alt.X("measured (p):Q", scale=scale), y=alt.Y("cross-validated (p):Q", scale=scale),
        tooltip=["compound", "measured (p)", "cross-validated (p)"])
    diagonal = alt.Chart(pd.DataFrame({"a": [lo - 0.2, hi + 0.2]})).mark_line(
        color="gray", strokeDash=[4, 4]).encode(x=alt.X("a:Q", title="measured (p)"),
                                                y=alt.Y("a:Q", title="cross-validated (p)"))
    return (diagonal + points).properties(title=title, height=340)


def histogram(result: PredictionResult) -> alt.Chart:
    """Distribution of the predicted activities of the unmeasured compounds (p-scale)."""
    ranked = candidates(result, kappa=0.0)
    data = pd.DataFrame({"predicted activity (p)": ranked["p_prediction"].to_numpy()})
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("predicted activity (p):Q", bin=alt.Bin(maxbins=30)), y=alt.Y("count()", title="compounds"),
    ).properties(title="Predicted activities of the unmeasured compounds", height=340)
