"""Adapt a meta-trained model to one assay's measured compounds and predict the rest.

One library function, `adapt_and_predict`, serves the CLI and the app. Rules it keeps:
- every input row comes back, in input order, with its original columns;
- a compound's prediction never depends on the other unmeasured rows (the model's batch-norm statistics
  come from the measured set only, and every random draw is seeded by `seed` and the measured set);
- same input and seed → same output.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from assayfew.adaptation import AssayAdaptation
from assayfew.checkpoint import MetaModel, ModelError, load_model
from assayfew.baselines import ridge_predict
from assayfew.chem import FingerprintSpec, featurize_smiles, may_change_on_standardizing
from assayfew.metrics import r2_pearson
from assayfew.paths import default_model_dir, rdkit_example_dir
from assayfew.uncertainty import (CV_FOLDS, LOCAL_NEIGHBOURS, UncertaintyCalibration, cross_validated, cv_folds,
                                  nearest_measured, support_error, support_residuals)
from assayfew.userfiles import InputError

SMILES_COLUMNS = ("smiles", "SMILES", "Smiles", "canonical_smiles")
ACTIVITY_COLUMNS = ("activity", "Activity", "pIC50", "pKi", "pKd", "pchembl_value", "value", "Act")
UNITS = ("p", "nM", "uM")
OUTPUT_COLUMNS = ("prediction", "uncertainty", "similarity_to_support", "in_domain", "status", "cv_prediction")
LOW_CV_R2 = 0.2
IN_DOMAIN_SIMILARITY = 0.3
MIN_MEASURED = 3
#: Plausible activities in p-units (−log10 molar): 1 M to 10 fM.
P_RANGE = (0.0, 14.0)
#: Replicate measurements of one compound further apart than this (log units) get a stronger warning.
DISAGREEMENT = 1.0


@dataclass(frozen=True)
class PredictOptions:
    steps: int | None = None
    seed: int = 0
    cv_folds: int = CV_FOLDS
    ridge_weight: float | None = None  # blend with fingerprint ridge; None: the model's own setting
    in_domain_similarity: float = IN_DOMAIN_SIMILARITY
    standardize: bool | None = None  # largest fragment + neutralise; None: the model's choice


@dataclass
class PredictionResult:
    table: pd.DataFrame
    smiles_col: str
    activity_col: str
    units: str
    n_measured: int  # rows used as measured (replicates of one compound count once each)
    n_predicted: int  # rows with a valid structure and no usable activity
    n_invalid: int  # rows whose structure could not be used (no prediction)
    cv_r2: float
    warnings: list[str] = field(default_factory=list)
    n_rejected_activity: int = 0  # rows whose activity value was rejected (they are predicted instead)
    n_compounds_measured: int = 0  # distinct measured structures (replicates averaged)
    standardized: bool = False
    measured_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    adaptation: AssayAdaptation | None = None  # the adapted model, to score more compounds (a library)

    def summary(self) -> str:
        """One line of counts for the user."""
        replicates = (f" ({self.n_compounds_measured} distinct compounds)"
                      if self.n_compounds_measured != self.n_measured else "")
        return (f"rows: {len(self.table)}   measured: {self.n_measured}{replicates}   "
                f"predicted: {self.n_predicted}   invalid structures: {self.n_invalid}   "
                f"rejected activity values: {self.n_rejected_activity}")


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


_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


def parse_activities(raw: pd.Series, units: str) -> tuple[np.ndarray, list[str]]:
    """Activities in p-units (NaN where unmeasured) and a per-row problem ('' when fine).

    A decimal comma is read as a decimal point ('6,5' → 6.5), except where it could be a thousands
    separator of a potency ('1,500' nM is flagged as ambiguous).
    """
    if units not in UNITS:
        raise InputError(f"unknown units {units!r}; choose from {', '.join(UNITS)}")
    values = np.full(len(raw), np.nan)
    problems = [""] * len(raw)
    for i, v in enumerate(raw.tolist()):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            continue
        text = str(v).strip().replace("\u2010", "-").replace("\u2212", "-")
        if _DECIMAL_COMMA.match(text):  # 6,5 from a semicolon-separated export
            if units != "p" and len(text.split(",")[1]) == 3:
                problems[i] = (f"invalid activity value {v!r} (ambiguous: decimal comma or thousands separator?): "
                               "not used as measured")
                continue
            text = text.replace(",", ".")
        try:
            x = float(text)
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


def check_plausible(values: np.ndarray, raw: pd.Series, units: str, column: str) -> None:
    """Refuse activities outside P_RANGE (after unit conversion), suggesting --units for concentrations."""
    lo, hi = P_RANGE
    finite = values[np.isfinite(values)]
    if units == "p" and len(finite) and 0 < finite.max() < 0.01:  # e.g. 1e-7: a molar concentration
        raise InputError(f"all values in column {column!r} are below 0.01, e.g. {raw[np.isfinite(values)].iloc[0]}: "
                         "they look like molar concentrations; convert them to nM and give --units nM")
    bad = np.flatnonzero(np.isfinite(values) & ((values < lo) | (values > hi)))
    if not len(bad):
        return
    examples = ", ".join(f"{raw.iloc[i]} (row {i + 1})" for i in bad[:3])
    what = f"{len(bad)} value(s) in column {column!r} outside the plausible range of {lo:g}–{hi:g} p-units"
    if units == "p" and finite.min() > 0 and np.median(finite) > hi:
        hint = "they look like concentrations: give --units nM or --units uM"
    elif units == "p":
        hint = "p-units are −log10 molar (pIC50 6 = 1 µM); check these values or give --units nM or --units uM"
    else:
        hint = f"as {units} these are implausible potencies; check the values and --units"
    raise InputError(f"{what}, e.g. {examples}: {hint}")


def content_rng(seed: int, keys: Sequence[str], values: np.ndarray) -> np.random.Generator:
    """Random draws seeded by `seed` and the measured set's content (sorted keys + values), not its row order."""
    digest = hashlib.sha256("\n".join(f"{k}\t{float(v)!r}" for k, v in zip(keys, values)).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


@dataclass
class _Support:
    """The measured set as distinct compounds in canonical (sorted canonical SMILES) order."""

    rows: list[list[int]]  # input rows of each compound
    keys: list[str]  # canonical SMILES
    y: np.ndarray  # mean p-activity of each compound


def _measured_compounds(measured: np.ndarray, smiles: list[str], values: np.ndarray, model: MetaModel,
                        standardize: bool) -> _Support:
    canonical = featurize_smiles([smiles[i] for i in measured], model.spec, standardize=standardize).canonical
    groups: dict[str, list[int]] = {}
    for row, key in zip(measured.tolist(), canonical or []):
        groups.setdefault(key, []).append(row)
    keys = sorted(groups)
    rows = [groups[k] for k in keys]
    y = np.array([np.mean(np.sort(values[r])) for r in rows])  # sorted: the mean does not depend on order
    return _Support(rows=rows, keys=keys, y=y)


def _note_replicates(support: _Support, values: np.ndarray, status: list[str], units: str,
                     standardize: bool) -> list[str]:
    """Mark rows measured more than once (one averaged point each); warnings for the user."""
    replicated = [(rows, y) for rows, y in zip(support.rows, support.y) if len(rows) > 1]
    if not replicated:
        return []
    disagreeing = []
    for rows, y in replicated:
        spread = float(np.ptp(values[rows]))
        for row in rows:
            others = ", ".join(str(r + 1) for r in rows if r != row)
            _add_note(status, row, f"same compound as row(s) {others}: the mean of {len(rows)} measurements "
                                   f"({_format(y, units)}) is used as one point")
            if spread > DISAGREEMENT:
                _add_note(status, row, f"they disagree by {spread:.1f} log units")
        if spread > DISAGREEMENT:
            disagreeing.append((rows, spread))
    sameness = "same structure after standardisation" if standardize else "same structure"
    warnings = [f"{len(replicated)} measured compound(s) appear more than once ({sameness}): their values "
                "were averaged into one point each (see the status column)"]
    if disagreeing:
        examples = "; ".join(f"rows {', '.join(str(r + 1) for r in rows)} differ by {spread:.1f}"
                             for rows, spread in disagreeing[:3])
        warnings.append(f"replicate measurements disagree by more than {DISAGREEMENT:g} log unit for "
                        f"{len(disagreeing)} compound(s) ({examples}): check them; their mean was used")
    return warnings


def _add_note(status: list[str], row: int, note: str) -> None:
    """Append a note to a usable row's status ('ok; note; ...')."""
    status[row] = f"{status[row] or 'ok'}; {note}"


def _note_standardized(smiles: list[str], rows: np.ndarray, status: list[str], model: MetaModel) -> None:
    """Note, on usable rows, the structure standardisation made of the user's SMILES (e.g. a salt's parent)."""
    rows = [i for i in rows.tolist() if not status[i] and may_change_on_standardizing(smiles[i])]
    if not rows:
        return
    given = [smiles[i] for i in rows]
    before = featurize_smiles(given, model.spec, standardize=False).canonical or []
    after = featurize_smiles(given, model.spec, standardize=True).canonical or []
    for i, old, new in zip(rows, before, after):
        if old != new:
            _add_note(status, i, f"standardised to {new}")


def _format(p_value: float, units: str) -> str:
    return f"{p_value:.2f}" if units == "p" else f"{from_p(np.array([p_value]), units)[0]:.4g} {units}"


def adapt_and_predict(table: pd.DataFrame, model: MetaModel, *, smiles_col: str | None = None,
                      activity_col: str | None = None, units: str = "p", options: PredictOptions = PredictOptions(),
                      input_problems: Sequence[str] | None = None,
                      progress: Callable[[float, str], None] | None = None) -> PredictionResult:
    """Adapt `model` to the rows of `table` that have an activity and predict every row.

    input_problems: per row, why its structure could not be read ('' when fine), e.g. from
    `read_user_table`; such rows keep that reason as their status.
    """
    report = progress or (lambda fraction, message: None)
    smiles_col = detect_column(table.columns, SMILES_COLUMNS, smiles_col, "smiles")
    activity_col = detect_column(table.columns, ACTIVITY_COLUMNS, activity_col, "activity")
    values, status = parse_activities(table[activity_col], units)
    check_plausible(values, table[activity_col], units, activity_col)
    n_rejected = sum(1 for s in status if s)
    smiles = ["" if pd.isna(s) else str(s) for s in table[smiles_col].tolist()]
    standardize = model.standardize if options.standardize is None else options.standardize

    report(0.05, "featurizing")
    feats = featurize_smiles(smiles, model.spec, standardize=standardize, canonical=False)
    problems = list(input_problems) if input_problems is not None else [""] * len(smiles)
    for i, ok in enumerate(feats.valid):
        if not ok:
            reason = problems[i] or f"invalid SMILES: {feats.reasons[i]}"
            status[i] = f"{reason}; {status[i]}" if status[i] else reason
    measured = np.flatnonzero(feats.valid & np.isfinite(values) & np.array([s == "" for s in status]))
    support = _measured_compounds(measured, smiles, values, model, standardize)
    if len(support.keys) < MIN_MEASURED:
        raise InputError(f"need at least {MIN_MEASURED} measured compounds with a valid SMILES and activity; "
                         f"found {len(support.keys)}")
    ys = support.y
    if np.ptp(ys) == 0:
        raise InputError(f"all {len(measured)} measured activities are equal ({ys[0]:g}): nothing to learn from")
    if standardize:
        _note_standardized(smiles, np.flatnonzero(feats.valid), status, model)
    warnings = _note_replicates(support, values, status, units, standardize)
    first_rows = np.array([rows[0] for rows in support.rows])
    xs = feats.fingerprints[first_rows].astype(np.float32)
    # Measured rows are predicted too (a fitted value); query = all valid rows.
    query = np.flatnonzero(feats.valid)
    xq = feats.fingerprints[query].astype(np.float32)

    try:
        model.check_steps(options.steps)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if options.ridge_weight is not None:
        model = model.with_prediction(fp_ridge_weight=options.ridge_weight)
    try:
        calibration = UncertaintyCalibration.from_config(model.config)
    except ValueError as exc:
        raise InputError(f"{model.path or 'model'}: {exc}") from exc

    def adapter(x_support: np.ndarray, y_support: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        return model.adapt_predict(x_support, y_support, x_query, steps=options.steps)

    rng = content_rng(options.seed, support.keys, ys)
    n_support = len(ys)

    report(0.15, "adapting on the measured compounds")
    full = model.adapt(xs, ys, steps=options.steps)
    pred_full = model.predict(full, xq)

    report(0.5, "cross-validating the measured set")
    cv_pred = cross_validated(adapter, xs, ys, cv_folds(n_support, options.cv_folds, rng))
    ok = np.isfinite(cv_pred)
    cv_r2 = r2_pearson(ys[ok], cv_pred[ok]) if ok.sum() >= 3 else float("nan")

    report(0.9, "similarity to the measured set")
    top = np.full((len(smiles), LOCAL_NEIGHBOURS), np.nan)  # similarities to the nearest measured compounds
    local = np.full(len(smiles), np.nan)
    structure = model.spec.structure_part(xs)
    residuals = support_residuals(ys, cv_pred)
    top[query], local[query] = nearest_measured(model.spec.structure_part(feats.fingerprints[query]), structure,
                                                residuals)
    cv_column = np.full(len(smiles), np.nan)
    # A measured compound's similarity (and local error) is to the *other* measured compounds.
    for j, rows in enumerate(support.rows):
        near = nearest_measured(structure[j:j + 1], np.delete(structure, j, axis=0), np.delete(residuals, j))
        top[rows], local[rows] = near[0][0], near[1][0]
        cv_column[rows] = cv_pred[j]
    similarity = top[:, 0]

    out = table.copy()
    prediction = np.full(len(smiles), np.nan)
    prediction[query] = pred_full
    uncertainty = np.full(len(smiles), np.nan)
    cv_rmse = support_error(ys, cv_pred)
    uncertainty[query] = calibration.sd(top[query], cv_rmse, local[query])
    out["prediction"] = from_p(prediction, units)
    out["uncertainty"] = uncertainty
    out["similarity_to_support"] = np.round(similarity, 4)
    out["in_domain"] = np.where(np.isfinite(similarity), similarity >= options.in_domain_similarity, False)
    out["status"] = [s or "ok" for s in status]
    out["cv_prediction"] = from_p(cv_column, units)

    if n_rejected:
        warnings.append(f"{n_rejected} activity value(s) could not be used (see the status column): those rows "
                        "are predicted as if unmeasured")
    if not np.isfinite(cv_r2) or cv_r2 < LOW_CV_R2:
        warnings.append(f"cross-validated R² on the measured compounds is {cv_r2:.2f}: predictions for this assay "
                        "are unreliable; measure more compounds or treat the ranking as a rough guide")
    report(1.0, "done")
    n_valid = int(feats.valid.sum())
    return PredictionResult(table=out, smiles_col=smiles_col, activity_col=activity_col, units=units,
                            n_measured=len(measured), n_predicted=n_valid - len(measured),
                            n_invalid=len(smiles) - n_valid, cv_r2=cv_r2, warnings=warnings,
                            n_rejected_activity=n_rejected, n_compounds_measured=n_support,
                            standardized=standardize, measured_rows=np.sort(measured),
                            adaptation=AssayAdaptation(model=model, full=full, support_fingerprints=structure != 0,
                                                       support_residuals=residuals,
                                                       calibration=calibration, cv_rmse=cv_rmse,
                                                       standardize=standardize))


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
