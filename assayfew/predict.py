"""Adapt a meta-trained model to one assay's measured compounds and predict the rest.

One library function, `adapt_and_predict`, serves the CLI and the app. Rules it keeps:
- every input row comes back, in input order, with its original columns;
- a compound's prediction never depends on the other unmeasured rows (the model's batch-norm statistics
  come from the measured set only, and every random draw is seeded by `seed` and the measured set);
- same input and seed → same output.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from assayfew.checkpoint import MetaModel, ModelError, load_model
from assayfew.baselines import ridge_predict
from assayfew.chem import FingerprintSpec, featurize_smiles, max_tanimoto
from assayfew.metrics import r2_pearson
from assayfew.paths import default_model_dir, rdkit_example_dir

SMILES_COLUMNS = ("smiles", "SMILES", "Smiles", "canonical_smiles")
ACTIVITY_COLUMNS = ("activity", "Activity", "pIC50", "pKi", "pKd", "pchembl_value", "value", "Act")
UNITS = ("p", "nM", "uM")
OUTPUT_COLUMNS = ("prediction", "uncertainty", "similarity_to_support", "in_domain", "status", "cv_prediction")
LOW_CV_R2 = 0.2
IN_DOMAIN_SIMILARITY = 0.3
MIN_MEASURED = 3


class InputError(ValueError):
    """The input cannot be used as given; the message says why in plain words."""


@dataclass(frozen=True)
class PredictOptions:
    steps: int | None = None
    seed: int = 0
    n_ensemble: int = 8
    cv_folds: int = 5
    ridge_weight: float | None = None  # blend with fingerprint ridge; None: the model's own setting
    in_domain_similarity: float = IN_DOMAIN_SIMILARITY


@dataclass
class PredictionResult:
    table: pd.DataFrame
    smiles_col: str
    activity_col: str
    units: str
    n_measured: int
    n_predicted: int
    n_invalid: int
    cv_r2: float
    warnings: list[str] = field(default_factory=list)


def detect_column(columns: Sequence[str], candidates: Sequence[str], given: str | None, what: str) -> str:
    """The column to use: the one given, else the single known name present."""
    cols = [str(c) for c in columns]
    if given is not None:
        if given not in cols:
            raise InputError(f"{what} column {given!r} not found; the columns are: {', '.join(cols)}")
        return given
    found = [c for c in candidates if c in cols]
    if not found:
        raise InputError(f"no {what} column found (looked for {', '.join(candidates)}); "
                         f"name it with --{what.replace(' ', '-')}-col. Columns: {', '.join(cols)}")
    if len(found) > 1:
        raise InputError(f"several possible {what} columns ({', '.join(found)}); choose one with "
                         f"--{what.replace(' ', '-')}-col")
    return found[0]


def parse_activities(raw: pd.Series, units: str) -> tuple[np.ndarray, list[str]]:
    """Activities in p-units (NaN where unmeasured) and a per-row problem ('' when fine)."""
    if units not in UNITS:
        raise InputError(f"unknown units {units!r}; choose from {', '.join(UNITS)}")
    values = np.full(len(raw), np.nan)
    problems = [""] * len(raw)
    for i, v in enumerate(raw.tolist()):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            continue
        try:
            x = float(str(v).strip().replace("\u2010", "-").replace("\u2212", "-"))
        except ValueError:
            problems[i] = f"invalid activity value {v!r} (not a number): not used as measured"
            continue
        if not np.isfinite(x):
            problems[i] = f"invalid activity value {v!r} (not finite): not used as measured"
        elif units != "p" and x <= 0:
            problems[i] = f"invalid activity value {v!r} (a potency in {units} must be > 0): not used as measured"
        else:
            values[i] = to_p(np.array([x]), units)[0]
    return values, problems


_P_OFFSET = {"nM": 9.0, "uM": 6.0}  # p = offset - log10(potency in these units)


def to_p(values: np.ndarray, units: str) -> np.ndarray:
    """Potencies in `units` to p-units (−log10 molar; higher = more potent); NaN where not positive."""
    values = np.asarray(values, dtype=float)
    if units == "p":
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, _P_OFFSET[units] - np.log10(values), np.nan)


def from_p(values: np.ndarray, units: str) -> np.ndarray:
    """p-units back to the input's units."""
    if units == "p":
        return values
    return 10.0 ** (_P_OFFSET[units] - values)


def _folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [f for f in np.array_split(rng.permutation(n), min(k, n)) if len(f)]


def adapt_and_predict(table: pd.DataFrame, model: MetaModel, *, smiles_col: str | None = None,
                      activity_col: str | None = None, units: str = "p", options: PredictOptions = PredictOptions(),
                      progress: Callable[[float, str], None] | None = None) -> PredictionResult:
    """Adapt `model` to the rows of `table` that have an activity and predict every row."""
    report = progress or (lambda fraction, message: None)
    smiles_col = detect_column(table.columns, SMILES_COLUMNS, smiles_col, "smiles")
    activity_col = detect_column(table.columns, ACTIVITY_COLUMNS, activity_col, "activity")
    values, status = parse_activities(table[activity_col], units)
    smiles = ["" if pd.isna(s) else str(s) for s in table[smiles_col].tolist()]

    report(0.05, "featurizing")
    feats = featurize_smiles(smiles, model.spec, canonical=False)
    for i, ok in enumerate(feats.valid):
        if not ok:
            status[i] = f"invalid SMILES: {feats.reasons[i]}"
    usable = feats.valid & np.array([s == "" for s in status])
    measured = np.flatnonzero(usable & np.isfinite(values))
    if len(measured) < MIN_MEASURED:
        raise InputError(f"need at least {MIN_MEASURED} measured compounds with a valid SMILES and activity; "
                         f"found {len(measured)}")
    ys = values[measured]
    if np.ptp(ys) == 0:
        raise InputError(f"all {len(measured)} measured activities are equal ({ys[0]:g}): nothing to learn from")
    xs = feats.fingerprints[measured].astype(np.float32)
    targets = np.flatnonzero(feats.valid & ~np.isin(np.arange(len(smiles)), measured))
    # Measured rows are predicted too (a fitted value); query = all valid rows.
    query = np.flatnonzero(feats.valid)
    xq = feats.fingerprints[query].astype(np.float32)

    if options.ridge_weight is not None:
        model = model.with_prediction(fp_ridge_weight=options.ridge_weight)

    def adapter(x_support: np.ndarray, y_support: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        return model.adapt_predict(x_support, y_support, x_query, steps=options.steps)

    rng = np.random.default_rng([options.seed, len(measured)])

    report(0.15, "adapting on the measured compounds")
    pred_full = adapter(xs, ys, xq)
    members = []
    for b in range(options.n_ensemble):
        boot = rng.integers(0, len(measured), len(measured))
        if np.ptp(ys[boot]) == 0:
            continue
        members.append(adapter(xs[boot], ys[boot], xq))
        report(0.15 + 0.5 * (b + 1) / max(options.n_ensemble, 1), f"ensemble member {b + 1}/{options.n_ensemble}")
    spread = np.std(np.stack(members), axis=0) if len(members) >= 2 else np.full(len(query), np.nan)

    report(0.7, "cross-validating the measured set")
    cv_pred = np.full(len(measured), np.nan)
    for fold in _folds(len(measured), options.cv_folds, rng):
        train = np.setdiff1d(np.arange(len(measured)), fold)
        if len(train) >= 2 and np.ptp(ys[train]) > 0:
            cv_pred[fold] = adapter(xs[train], ys[train], xs[fold])
    ok = np.isfinite(cv_pred)
    cv_r2 = r2_pearson(ys[ok], cv_pred[ok]) if ok.sum() >= 3 else float("nan")

    report(0.9, "similarity to the measured set")
    support_fp = feats.fingerprints[measured]
    similarity = np.full(len(smiles), np.nan)
    sim_q = max_tanimoto(feats.fingerprints[query], support_fp)
    similarity[query] = sim_q
    # A measured compound's similarity is to the *other* measured compounds.
    for j, i in enumerate(measured):
        others = np.delete(support_fp, j, axis=0)
        similarity[i] = float(max_tanimoto(feats.fingerprints[i:i + 1], others)[0]) if len(others) else 0.0

    out = table.copy()
    prediction = np.full(len(smiles), np.nan)
    prediction[query] = pred_full
    uncertainty = np.full(len(smiles), np.nan)
    uncertainty[query] = spread
    cv_column = np.full(len(smiles), np.nan)
    cv_column[measured] = cv_pred
    out["prediction"] = from_p(prediction, units)
    out["uncertainty"] = uncertainty
    out["similarity_to_support"] = np.round(similarity, 4)
    out["in_domain"] = np.where(np.isfinite(similarity), similarity >= options.in_domain_similarity, False)
    out["status"] = [s or "ok" for s in status]
    out["cv_prediction"] = from_p(cv_column, units)

    warnings = []
    if not np.isfinite(cv_r2) or cv_r2 < LOW_CV_R2:
        warnings.append(f"cross-validated R² on the measured compounds is {cv_r2:.2f}: predictions for this assay "
                        "are unreliable; measure more compounds or treat the ranking as a rough guide")
    report(1.0, "done")
    return PredictionResult(table=out, smiles_col=smiles_col, activity_col=activity_col, units=units,
                            n_measured=len(measured), n_predicted=len(targets),
                            n_invalid=int((~feats.valid).sum()), cv_r2=cv_r2, warnings=warnings)


def read_input_csv(source: str | Path | IO, *, max_rows: int | None = None) -> pd.DataFrame:
    """Read a user's CSV (a path or an open file) as text columns: nothing coerced, nothing dropped.

    Every non-blank line after the header is a row. A line with more fields than the header is an error
    naming the file and line (pandas would silently shift such rows into an index).
    """
    name = str(getattr(source, "name", source))
    try:
        if isinstance(source, (str, Path)):
            text = Path(source).read_text(encoding="utf-8-sig")
        else:
            raw = source.read()
            text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else str(raw)
    except FileNotFoundError as exc:
        raise InputError(f"{name}: file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name}: is a directory, not a CSV file") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not a UTF-8 text file") from exc
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise InputError(f"{name}: empty file (no header line)")
        header = [h.strip() for h in header]
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise InputError(f"{name}: duplicate column name(s) in the header: {', '.join(duplicated)}")
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) > len(header) and any(f.strip() for f in fields[len(header):]):
                raise InputError(f"{name}, line {reader.line_num}: {len(fields)} fields but the header has "
                                 f"{len(header)}")
            rows.append((fields + [""] * len(header))[: len(header)])
            if max_rows is not None and len(rows) > max_rows:
                raise InputError(f"{name}: more than the limit of {max_rows} rows")
    except csv.Error as exc:
        raise InputError(f"{name}, line {reader.line_num}: not a readable CSV ({exc})") from exc
    return pd.DataFrame(rows, columns=header, dtype=object).replace("", np.nan)


def load_default_model(model_dir: Path | None = None) -> MetaModel:
    path = Path(model_dir) if model_dir else default_model_dir()
    try:
        return load_model(path)
    except (FileNotFoundError, ModelError) as exc:
        raise InputError(str(exc)) from exc


def example_assay(n_measured: int = 32, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """RDKit's bundled ChEMBL assay CHEMBL2321810 (pIC50): `n_measured` random rows keep their value.

    Returns the input table (columns compound_id, smiles, pIC50; blank where "unmeasured") and the true pIC50
    of every row.
    """
    data = rdkit_example_dir()
    smi = pd.read_csv(data / "CHEMBL2321810.smi", sep=r"\s+", header=None, names=["smiles", "compound_id"],
                      dtype=str)
    act = pd.read_csv(data / "CHEMBL2321810_act.csv", dtype={"Name": str})
    merged = smi.merge(act.rename(columns={"Name": "compound_id", "Act": "pIC50_true"}), on="compound_id",
                       how="inner", validate="one_to_one")
    if not 3 <= n_measured < len(merged):
        raise InputError(f"--n-measured must be between 3 and {len(merged) - 1}")
    rng = np.random.default_rng(seed)
    measured = np.zeros(len(merged), dtype=bool)
    measured[rng.choice(len(merged), n_measured, replace=False)] = True
    truth = merged["pIC50_true"].to_numpy(dtype=float)
    table = pd.DataFrame({"compound_id": merged["compound_id"], "smiles": merged["smiles"],
                          "pIC50": np.where(measured, truth, np.nan)})
    return table, truth


def ridge_baseline_r2(table: pd.DataFrame, truth: np.ndarray, spec: FingerprintSpec,
                      activity_col: str = "pIC50", smiles_col: str = "smiles") -> float:
    """R² on the unmeasured rows of ridge regression fitted on the measured rows (the example's yardstick)."""
    feats = featurize_smiles(table[smiles_col].tolist(), spec, canonical=False)
    measured = table[activity_col].notna().to_numpy() & feats.valid
    unmeasured = ~table[activity_col].notna().to_numpy() & feats.valid
    x = feats.fingerprints.astype(np.float32)
    pred = ridge_predict(x[measured], truth[measured], x[unmeasured])
    return r2_pearson(truth[unmeasured], pred)
