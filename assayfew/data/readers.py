"""Readers: pQSAR SI trio, long CSVs (KIBA/Davis), per-target CSV directories, FS-Mol CSVs.

Every reader returns (table, Report): the table has TABLE_COLUMNS (see table.py); rows that cannot be
used are never dropped silently but recorded in Report.rejected with file, row (1-based line, header = 1)
and reason.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from assayfew.data.table import DataFormatError, Report, empty_table, make_table

__all__ = [
    "PQSAR_FILES",
    "read_pqsar",
    "read_long_csv",
    "read_dir",
    "read_fsmol",
    "read_corpus",
    "read_smiles_csv",
]

PQSAR_FILES = {
    "activities": "ci9b00375_si_002.txt",
    "assays": "ci9b00375_si_001.txt",
    "structures": "ci9b00375_si_003.txt",
}
PQSAR_SOURCE = "the Supporting Information of Martin et al., J. Chem. Inf. Model. 2019 (DOI 10.1021/acs.jcim.9b00375)"

VALUE_COLUMNS = ["kiba_score", "pKd", "pchembl_value", "pchembl", "pIC50", "pKi", "pXC50", "value", "label", "y"]
SMILES_COLUMNS = ["smiles", "SMILES", "canonical_smiles", "Smiles"]
COMPOUND_COLUMNS = ["compound_id", "compound_chembl_id", "molecule_chembl_id", "chembl_id"]
_DASHES = re.compile("[\u2010\u2011\u2012\u2013\u2212]")
_SPLITS = {"trn": "TRN", "train": "TRN", "training": "TRN", "tst": "TST", "test": "TST", "": ""}
_MOLAR = {"M": 1.0, "mM": 1e-3, "uM": 1e-6, "µM": 1e-6, "μM": 1e-6, "nM": 1e-9, "pM": 1e-12}
_FLIP = {"<": ">", ">": "<", "=": "="}
_RELATIONS = {"=": "=", "~": "=", "": "=", "<": "<", "<=": "<", "<<": "<", ">": ">", ">=": ">", ">>": ">"}


def normalize_dashes(text: str) -> str:
    """Replace Unicode hyphens/minus signs (U+2010..U+2013, U+2212) by ASCII '-'."""
    return _DASHES.sub("-", text)


#: Assay columns of long CSVs, in order of preference.
ASSAY_COLUMNS = ("target", "assay_chembl_id", "assay_id")


def find_column(columns: list[str], candidates: list[str]) -> str | None:
    """First candidate present in columns (exact, then case-insensitive)."""
    for name in candidates:
        if name in columns:
            return name
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def read_csv_strings(path: Path) -> pd.DataFrame:
    """Read a CSV with every cell as a string ('' for empty); raise DataFormatError when unreadable."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(path, None, None, f"not a readable CSV ({exc})") from exc


# --------------------------------------------------------------------------- shared validation


def _validated(
    report: Report,
    file: str,
    rows: np.ndarray,
    assay: pd.Series,
    compound: pd.Series,
    smiles: pd.Series,
    raw_value: pd.Series,
    value_col: str,
    split: pd.Series | None = None,
    relation: pd.Series | None = None,
    family: pd.Series | str = "",
    value: pd.Series | None = None,
    extra: dict[str, pd.Series] | None = None,
) -> pd.DataFrame:
    """Build a table from string columns, rejecting rows with bad values or empty SMILES."""
    n = len(rows)
    index = pd.RangeIndex(n)
    raw_value = pd.Series(raw_value.to_numpy(), index=index).astype(str).str.strip()
    if value is None:
        value = pd.to_numeric(raw_value.map(normalize_dashes), errors="coerce")
    value = pd.Series(np.asarray(value, dtype=float), index=index)
    smiles = pd.Series(smiles.to_numpy(), index=index).astype(str).str.strip()
    keep = np.ones(n, dtype=bool)
    bad_value = ~np.isfinite(value.to_numpy())
    for i in np.flatnonzero(bad_value):
        text = raw_value.iat[i]
        reason = f"missing value in column {value_col}" if text == "" else f"non-numeric value '{text}' in column {value_col}"
        report.reject(file, int(rows[i]), reason)
    keep &= ~bad_value
    empty = (smiles == "").to_numpy() & keep
    for i in np.flatnonzero(empty):
        report.reject(file, int(rows[i]), "empty SMILES")
    keep &= ~empty

    if split is None:
        split_out = pd.Series([""] * n, index=index)
    else:
        split_raw = pd.Series(split.to_numpy(), index=index).astype(str).str.strip()
        split_out = split_raw.str.lower().map(_SPLITS)
        for i in np.flatnonzero(split_out.isna().to_numpy() & keep):
            report.flag(file, int(rows[i]), f"unknown split '{split_raw.iat[i]}' (left empty)")
        split_out = split_out.fillna("")
    rel = pd.Series(["="] * n, index=index) if relation is None else pd.Series(relation.to_numpy(), index=index)
    fam = family if isinstance(family, str) else pd.Series(family.to_numpy(), index=index)
    columns = {
        "assay_id": pd.Series(assay.to_numpy(), index=index).astype(str),
        "compound_id": pd.Series(compound.to_numpy(), index=index).astype(str),
        "smiles": smiles,
        "value": value,
        "split": split_out,
        "relation": rel,
        "family": fam,
        "file": file,
        "row": pd.Series(rows, index=index),
    }
    extras = {k: pd.Series(np.asarray(v), index=index) for k, v in (extra or {}).items()}
    table = make_table(columns, extras)
    return table[keep].reset_index(drop=True)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_table()


def _flag_censored(report: Report, table: pd.DataFrame) -> None:
    for file, row, rel in table.loc[table["relation"] != "=", ["file", "row", "relation"]].itertuples(index=False):
        report.flag(file, int(row), f"censored value (relation '{rel}')")


# --------------------------------------------------------------------------- pQSAR


def read_pqsar(data_dir: Path) -> tuple[pd.DataFrame, Report]:
    """Read the pQSAR/MetaMix SI files (si_001 assays, si_002 activities, si_003 structures).

    Extra column `pqsar_pred`: pQSAR's own prediction (NaN when absent).
    """
    data_dir = Path(data_dir)
    missing = [name for name in PQSAR_FILES.values() if not (data_dir / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"pQSAR data files missing in {data_dir}: {', '.join(missing)}. "
            f"Download them from {PQSAR_SOURCE} and place them in that directory."
        )
    report = Report()
    families = _read_pqsar_assays(data_dir / PQSAR_FILES["assays"])
    structures = _read_pqsar_structures(data_dir / PQSAR_FILES["structures"], report)
    act_path = data_dir / PQSAR_FILES["activities"]
    act_file = str(act_path)

    rows, compounds, assays, raw_values, preds, splits = [], [], [], [], [], []
    with open(act_path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if "CHEMBL" not in line:
                continue
            fields = normalize_dashes(line).split()
            if len(fields) < 3:
                report.reject(act_file, line_no, f"too few fields ({len(fields)}) in activity line")
                continue
            rows.append(line_no)
            compounds.append(fields[0])
            assays.append(fields[1])
            raw_values.append(fields[2])
            preds.append(fields[3] if len(fields) > 3 else "")
            splits.append(fields[4] if len(fields) > 4 else "")
    frame = pd.DataFrame({"compound": compounds, "assay": assays, "value": raw_values, "pred": preds, "split": splits})
    smiles = frame["compound"].map(structures)
    no_structure = smiles.isna().to_numpy()
    row_array = np.asarray(rows, dtype=np.int64)
    for i in np.flatnonzero(no_structure):
        report.reject(act_file, int(row_array[i]), f"no structure for {compounds[i]} in {PQSAR_FILES['structures']}")
    keep = ~no_structure
    frame, smiles, row_array = frame[keep], smiles[keep], row_array[keep]
    pred = pd.to_numeric(frame["pred"], errors="coerce")
    table = _validated(
        report,
        act_file,
        row_array,
        assay=frame["assay"],
        compound=frame["compound"],
        smiles=smiles,
        raw_value=frame["value"],
        value_col="pIC50_exp (column 3)",
        split=frame["split"],
        family=frame["assay"].map(families).fillna(""),
        extra={"pqsar_pred": pred.to_numpy(dtype=float)},
    )
    return table, report


def _read_pqsar_assays(path: Path) -> dict[str, str]:
    """assay id → target family (column 3) from si_001."""
    families: dict[str, str] = {}
    seen_header = False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not seen_header:
                seen_header = "assay_id" in line
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) > 3 and fields[0].strip():
                families[fields[0].strip()] = fields[3].strip()
    return families


def _read_pqsar_structures(path: Path, report: Report) -> dict[str, str]:
    """CHEMBL id → SMILES from the PDF-extracted si_003 (wrapped lines joined, headers skipped)."""
    structures: dict[str, str] = {}
    current: str | None = None
    first_row: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            text = normalize_dashes(line.strip())
            if not text or any(word in text for word in ("Page", "Table", "SMILE")):
                continue
            if text.startswith("CHEMBL"):
                ident, _, smi = text.partition(",")
                ident = ident.strip()
                if ident in structures:
                    report.flag(str(path), line_no, f"duplicate structure record for {ident} (first at row {first_row[ident]}; last kept)")
                structures[ident] = smi.strip()
                first_row.setdefault(ident, line_no)
                current = ident
            elif current is not None:
                structures[current] += text.replace(" ", "")
            else:
                report.flag(str(path), line_no, "text before the first CHEMBL record ignored")
    return structures


# --------------------------------------------------------------------------- long CSV (KIBA, Davis)


def read_long_csv(
    path: Path,
    *,
    assay_col: str | None = None,
    compound_col: str = "compound_id",
    smiles_col: str = "smiles",
    value_col: str | None = None,
    split_col: str | None = None,
    censor_at: float | None = None,
) -> tuple[pd.DataFrame, Report]:
    """Long format: one measurement per row (assay, compound, SMILES, value).

    assay_col: None = the first of ASSAY_COLUMNS in the header ("target" for KIBA/Davis, "assay_chembl_id" for
    ChEMBL exports). censor_at: values <= censor_at are marked relation "<" (e.g. Davis pKd 5.0 = Kd >= 10 µM)
    and flagged.
    """
    path = Path(path)
    frame = read_csv_strings(path)
    columns = list(frame.columns)
    assay_col = assay_col or find_column(columns, list(ASSAY_COLUMNS)) or ASSAY_COLUMNS[0]
    value_col = value_col or find_column(columns, VALUE_COLUMNS)
    if value_col is None:
        raise DataFormatError(path, 1, None, f"no value column found (looked for {', '.join(VALUE_COLUMNS)})")
    for name in (assay_col, smiles_col, value_col) + ((split_col,) if split_col else ()):
        if name not in columns:
            raise DataFormatError(path, 1, name, f"column missing (header has {', '.join(columns)})")
    report = Report()
    compound = frame[compound_col] if compound_col in columns else pd.Series([""] * len(frame))
    table = _validated(
        report,
        str(path),
        np.arange(2, len(frame) + 2),
        assay=frame[assay_col],
        compound=compound,
        smiles=frame[smiles_col],
        raw_value=frame[value_col],
        value_col=value_col,
        split=frame[split_col] if split_col else None,
    )
    if censor_at is not None:
        censored = table["value"] <= censor_at + 1e-9
        table.loc[censored, "relation"] = "<"
        _flag_censored(report, table)
    return table, report


# --------------------------------------------------------------------------- directory of per-target CSVs


def read_dir(
    path: Path, *, value_col: str | None = None, split_col: str | None = "split"
) -> tuple[pd.DataFrame, Report]:
    """A directory of per-target CSVs (assay id = file stem); also accepts a single CSV file.

    A `targets.tsv` (dataset, description) supplies each assay's family; byte-identical duplicate
    files are skipped (the later one, noted in the report); non-CSV files are ignored.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise DataFormatError(path, None, None, "no CSV files in directory")
    families: dict[str, str] = {}
    targets = path / "targets.tsv" if path.is_dir() else None
    if targets is not None and targets.exists():
        meta = pd.read_csv(targets, sep="\t", dtype=str, keep_default_na=False)
        if len(meta.columns) >= 2:
            families = dict(zip(meta.iloc[:, 0], meta.iloc[:, 1]))
    report = Report()
    digests: dict[str, Path] = {}
    frames = []
    for file in files:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest in digests:
            report.flag(str(file), None, f"byte-identical duplicate of {digests[digest].name}; skipped")
            continue
        digests[digest] = file
        frames.append(_read_target_csv(file, families, value_col, split_col, report))
    return _concat(frames), report


def _read_target_csv(
    file: Path, families: dict[str, str], value_col: str | None, split_col: str | None, report: Report
) -> pd.DataFrame:
    frame = read_csv_strings(file)
    columns = list(frame.columns)
    smiles_col = find_column(columns, SMILES_COLUMNS)
    if smiles_col is None:
        raise DataFormatError(file, 1, "smiles", f"no SMILES column (looked for {', '.join(SMILES_COLUMNS)})")
    vcol = value_col or find_column(columns, VALUE_COLUMNS)
    if vcol is None or vcol not in columns:
        raise DataFormatError(file, 1, value_col or "value", f"no value column (looked for {', '.join(VALUE_COLUMNS)})")
    compound_col = find_column(columns, COMPOUND_COLUMNS)
    stem = file.name.removesuffix(".gz").removesuffix(".csv")
    n = len(frame)
    return _validated(
        report,
        str(file),
        np.arange(2, n + 2),
        assay=pd.Series([stem] * n),
        compound=frame[compound_col] if compound_col else pd.Series([""] * n),
        smiles=frame[smiles_col],
        raw_value=frame[vcol],
        value_col=vcol,
        split=frame[split_col] if split_col and split_col in columns else None,
        family=families.get(stem, ""),
    )


# --------------------------------------------------------------------------- FS-Mol


_FSMOL_STAGE = re.compile(r"^(?:(raw|cleaned|processed)_)?(.+?)(?:_(raw|cleaned|processed))?$")
_STAGE_RANK = {"processed": 3, "": 2, "cleaned": 1, "raw": 0}


def read_fsmol(path: Path) -> tuple[pd.DataFrame, Report]:
    """FS-Mol assay CSV(s): value = pchembl, else -log10(standard_value in molar) for molar units.

    The relation refers to the value: a concentration reported as '<' becomes '>' in -log10 units.
    In a directory, of raw_/cleaned_/processed variants of one assay the most processed one is used.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    report = Report()
    if path.is_file():
        return _read_fsmol_file(path, report), report
    chosen: dict[str, tuple[int, Path]] = {}
    variants: dict[str, list[Path]] = {}
    for file in sorted(path.glob("*.csv")):
        header = read_csv_strings(file).columns if file.stat().st_size else []
        if "smiles" not in header or not ({"pchembl", "standard_value"} & set(header)):
            report.flag(str(file), None, "not an FS-Mol assay file (no smiles/pchembl/standard_value columns); skipped")
            continue
        match = _FSMOL_STAGE.match(file.stem)
        stage, assay = (match.group(1) or match.group(3) or ""), match.group(2)
        variants.setdefault(assay, []).append(file)
        if assay not in chosen or _STAGE_RANK[stage] > chosen[assay][0]:
            chosen[assay] = (_STAGE_RANK[stage], file)
    frames = []
    for assay, (_, file) in sorted(chosen.items()):
        for other in variants[assay]:
            if other != file:
                report.flag(str(other), None, f"less processed variant of {assay}; used {file.name}")
        frames.append(_read_fsmol_file(file, report))
    return _concat(frames), report


def _read_fsmol_file(file: Path, report: Report) -> pd.DataFrame:
    frame = read_csv_strings(file)
    columns = list(frame.columns)
    for name in ("smiles", "chembl_id"):
        if name not in columns:
            raise DataFormatError(file, 1, name, "column missing")
    n = len(frame)
    empty = pd.Series([""] * n)
    pchembl = frame["pchembl"] if "pchembl" in columns else empty
    std_value = frame["standard_value"] if "standard_value" in columns else empty
    units = (frame["standard_units"] if "standard_units" in columns else empty).str.strip()
    rel_raw = (frame["standard_relation"] if "standard_relation" in columns else empty).str.strip().str.strip("'\"")
    rows = np.arange(2, n + 2)
    file_s = str(file)

    p_num = pd.to_numeric(pchembl.map(normalize_dashes), errors="coerce")
    s_num = pd.to_numeric(std_value.map(normalize_dashes), errors="coerce")
    factor = units.map(_MOLAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        from_std = -np.log10(s_num * factor)
    use_p = p_num.notna().to_numpy()
    value = np.where(use_p, p_num, from_std)
    raw = np.where(use_p, pchembl, std_value)
    relation = rel_raw.map(_RELATIONS)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if use_p[i]:
            continue
        if pd.isna(s_num.iat[i]):
            continue  # reported by _validated as non-numeric/missing
        if pd.isna(factor.iat[i]):
            report.reject(file_s, int(rows[i]), f"unsupported units '{units.iat[i]}' in column standard_units (needs pchembl or molar units)")
            keep[i] = False
        elif s_num.iat[i] <= 0:
            report.reject(file_s, int(rows[i]), f"non-positive standard_value '{std_value.iat[i]}' cannot be log-transformed")
            keep[i] = False
    for i in np.flatnonzero(relation.isna().to_numpy() & keep):
        report.reject(file_s, int(rows[i]), f"unknown relation '{rel_raw.iat[i]}' in column standard_relation")
        keep[i] = False
    relation = relation.fillna("=")
    relation = pd.Series(np.where(use_p, relation, relation.map(_FLIP)))
    sel = np.flatnonzero(keep)
    table = _validated(
        report,
        file_s,
        rows[sel],
        assay=frame["chembl_id"].iloc[sel],
        compound=(frame["molecule_chembl_id"] if "molecule_chembl_id" in columns else empty).iloc[sel],
        smiles=frame["smiles"].iloc[sel],
        raw_value=pd.Series(raw[sel]),
        value_col="pchembl/standard_value",
        relation=relation.iloc[sel],
        value=pd.Series(value[sel]),
    )
    _flag_censored(report, table)
    return table


# --------------------------------------------------------------------------- dispatch


def detect_format(source: Path) -> str:
    """Guess the corpus format of a file or directory: pqsar, long, dir or fsmol."""
    source = Path(source)
    if source.is_dir():
        if any((source / name).exists() for name in PQSAR_FILES.values()):
            return "pqsar"
        csvs = sorted(source.glob("*.csv"))
        if any(_looks_fsmol(f) for f in csvs):
            return "fsmol"
        return "dir"
    if source.name in PQSAR_FILES.values():
        return "pqsar"
    header = list(pd.read_csv(source, nrows=0).columns) if source.exists() else []
    if _looks_fsmol(source, header):
        return "fsmol"
    if set(ASSAY_COLUMNS) & set(header):
        return "long"
    return "dir"


def _looks_fsmol(file: Path, header: list[str] | None = None) -> bool:
    if header is None:
        try:
            header = list(pd.read_csv(file, nrows=0).columns)
        except Exception:
            return False
    return "chembl_id" in header and bool({"pchembl", "standard_value"} & set(header))


def read_corpus(source: Path, fmt: str | None = None, **kw) -> tuple[pd.DataFrame, Report]:
    """Read any supported corpus; fmt in {"pqsar", "long", "dir", "fsmol"} or None to autodetect."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: not found")
    fmt = fmt or detect_format(source)
    if fmt == "pqsar":
        return read_pqsar(source.parent if source.is_file() else source)
    if fmt == "long":
        if "censor_at" not in kw and "davis" in source.name.lower():
            kw["censor_at"] = 5.0
        return read_long_csv(source, **kw)
    if fmt == "dir":
        return read_dir(source, **kw)
    if fmt == "fsmol":
        return read_fsmol(source)
    raise ValueError(f"unknown corpus format {fmt!r} (expected pqsar, long, dir or fsmol)")




def read_smiles_csv(path: Path, smiles_col: str | None = None) -> tuple[list[str], str]:
    """SMILES column of a CSV, one entry per row in file order ('' for empty cells), and the column used.

    The column is auto-detected among smiles/SMILES/canonical_smiles/Smiles when not given.
    """
    path = Path(path)
    frame = read_csv_strings(path)
    columns = list(frame.columns)
    column = smiles_col if smiles_col is not None else find_column(columns, SMILES_COLUMNS)
    if column is None or column not in columns:
        wanted = smiles_col or " / ".join(SMILES_COLUMNS)
        raise DataFormatError(path, 1, wanted, f"SMILES column not found (header has: {', '.join(columns)})")
    return frame[column].astype(str).tolist(), column
