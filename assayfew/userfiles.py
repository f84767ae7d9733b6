"""Users' assay files as text tables: CSV/TSV/semicolon CSV, Excel .xlsx, SDF (.sdf, .sdf.gz).

One entry point, `read_user_table`, serves the CLI and the app. The format is recognised from the content
(gzip, zip/xlsx and legacy .xls signatures; SDF records), else from the name; text that is not UTF-8 is
read as Windows-1252/Latin-1 with a note. Every cell stays text (nothing coerced); every record is a row
(an SDF molecule that cannot be read keeps its row, with the reason in `UserTable.problems`).
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

#: Delimiters tried when sniffing, in order of preference on a tie.
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon"}
SEP_NAMES = {",": ",", "comma": ",", "\t": "\t", "\\t": "\t", "tab": "\t", ";": ";", "semicolon": ";"}
SDF_SUFFIXES = (".sdf", ".sd", ".mol", ".sdf.gz", ".sd.gz")
_SNIFF_LINES = 50
_GZIP_MAGIC, _ZIP_MAGIC, _OLE_MAGIC = b"\x1f\x8b", b"PK\x03\x04", b"\xd0\xcf\x11\xe0"


class InputError(ValueError):
    """The input cannot be used as given; the message says why in plain words."""


@dataclass
class UserTable:
    """A user's file as a table of text cells (NaN where blank)."""

    table: pd.DataFrame
    format: str  # "csv", "tsv", "semicolon", "xlsx" or "sdf"
    problems: list[str]  # per row: "" or why the row's structure could not be read
    notes: list[str] = field(default_factory=list)  # things the user should know about how it was read


def read_user_table(source: str | Path | IO, *, sep: str | None = None, max_rows: int | None = None,
                    max_bytes: int | None = None) -> UserTable:
    """Read a path or an open file (bytes or text; its `name` picks SDF when the content is ambiguous)."""
    name = str(source) if isinstance(source, (str, Path)) else str(getattr(source, "name", "input"))
    raw = _read_raw(source, name, max_bytes)
    if isinstance(raw, str):
        text, notes = raw, []
    else:
        if raw[:2] == _GZIP_MAGIC:
            raw = _gunzip(raw, name, max_bytes)
        if raw[:4] == _ZIP_MAGIC:
            return _excel(raw, name, max_rows)
        if raw[:4] == _OLE_MAGIC:
            raise InputError(f"{name}: a legacy Excel .xls file; save it as .xlsx or CSV")
        text, notes = _decode(raw, name)
    if _looks_like_sdf(text, name):
        return _sdf(text, name, max_rows, notes)
    return _delimited(text, name, sep, max_rows, notes)


def _read_raw(source: str | Path | IO, name: str, max_bytes: int | None) -> bytes | str:
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise InputError(f"{name}: larger than the limit of {_size(max_bytes)}")
            return path.read_bytes()
        raw = source.read()
    except FileNotFoundError as exc:
        raise InputError(f"{name}: file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name}: is a directory, not a file") from exc
    except PermissionError as exc:
        raise InputError(f"{name}: permission denied") from exc
    if max_bytes is not None and len(raw) > max_bytes:
        raise InputError(f"{name}: larger than the limit of {_size(max_bytes)}")
    return raw


def _size(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1e6 else f"{n:,} bytes"


def _gunzip(raw: bytes, name: str, max_bytes: int | None) -> bytes:
    limit = None if max_bytes is None else 20 * max_bytes  # a decompression bomb stops here
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
            data = handle.read(-1 if limit is None else limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: not a readable gzip file ({exc})") from exc
    if limit is not None and len(data) > limit:
        raise InputError(f"{name}: decompressed, larger than the limit of {_size(limit)}")
    return data


def _decode(raw: bytes, name: str) -> tuple[str, list[str]]:
    """Text from bytes: UTF-8 (BOM optional) or UTF-16 with a BOM; otherwise Windows-1252/Latin-1, noted."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16"), []
        except UnicodeDecodeError as exc:
            raise InputError(f"{name}: not a readable UTF-16 text file") from exc
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    if b"\x00" in raw:
        raise InputError(f"{name}: a binary file, not a text table (CSV/TSV), Excel .xlsx or SDF file")
    try:
        text, encoding = raw.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        text, encoding = raw.decode("latin-1"), "Latin-1"
    return text, [f"{name}: not UTF-8; read as {encoding} (Latin-1) text"]


def _looks_like_sdf(text: str, name: str) -> bool:
    if name.lower().endswith(SDF_SUFFIXES):
        return True
    head = text[:200_000]
    return "\nM  END" in head and ("$$$$" in head or len(head) == len(text))


# --------------------------------------------------------------------------- delimited text


def sniff_delimiter(lines: Sequence[str]) -> str:
    """The delimiter (comma, tab or semicolon) that splits the header into most fields and every other
    sampled line into as many; comma when none splits the header."""
    sample = [line for line in lines if line.strip()][:_SNIFF_LINES]
    best, best_score = ",", (-1, 0)
    for delimiter in DELIMITERS:
        counts = [len(row) for row in csv.reader(sample, delimiter=delimiter)]
        if not counts or counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts), counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _delimited(text: str, name: str, sep: str | None, max_rows: int | None, notes: list[str]) -> UserTable:
    if sep is not None:
        if sep not in SEP_NAMES:
            raise InputError(f"unknown separator {sep!r}; use ',', ';' or 'tab'")
        delimiter = SEP_NAMES[sep]
    else:
        delimiter = sniff_delimiter(text.splitlines()[:_SNIFF_LINES])
        if delimiter != ",":
            notes = notes + [f"{name}: read as {DELIMITERS[delimiter]}-separated (force with --sep)"]
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        rows: list[list[str]] = []
        width = len(header or [])
        for fields in reader:
            if not fields or not any(f.strip() for f in fields):
                continue
            if len(fields) > width and any(f.strip() for f in fields[width:]):
                raise InputError(f"{name}, line {reader.line_num}: {len(fields)} fields but the header has "
                                 f"{width}")
            rows.append(fields)
            _check_rows(len(rows), max_rows, name)
    except csv.Error as exc:
        raise InputError(f"{name}, line {reader.line_num}: not a readable CSV ({exc})") from exc
    kind = {",": "csv", "\t": "tsv", ";": "semicolon"}[delimiter]
    return UserTable(table=_text_table(header, rows, name), format=kind, problems=[""] * len(rows), notes=notes)


def _check_rows(n: int, max_rows: int | None, name: str) -> None:
    if max_rows is not None and n > max_rows:
        raise InputError(f"{name}: more than the limit of {max_rows:,} rows")


def _text_table(header: Sequence[object] | None, rows: list[list[str]], name: str) -> pd.DataFrame:
    """A table of text cells ('' → NaN) under a checked header; short rows are padded."""
    if not header or not any(str(h).strip() for h in header):
        raise InputError(f"{name}: empty file (no header line)")
    columns = [str(h).strip() for h in header]
    duplicated = sorted({h for h in columns if h and columns.count(h) > 1})
    if duplicated:
        raise InputError(f"{name}: duplicate column name(s) in the header: {', '.join(duplicated)}")
    if not rows:
        raise InputError(f"{name}: no data rows (only a header line: {', '.join(c for c in columns if c)})")
    width = len(columns)
    cells = [(list(r) + [""] * width)[:width] for r in rows]
    return pd.DataFrame(cells, columns=columns, dtype=object).replace("", np.nan)


# --------------------------------------------------------------------------- Excel


def _excel(raw: bytes, name: str, max_rows: int | None) -> UserTable:
    try:
        sheets = pd.read_excel(io.BytesIO(raw), sheet_name=None, header=None, dtype=object, engine="openpyxl")
    except ImportError as exc:
        raise InputError(f"{name}: reading Excel files needs openpyxl (pip install openpyxl)") from exc
    except Exception as exc:  # a zip that is not a workbook, a damaged workbook, ...
        raise InputError(f"{name}: not a readable Excel .xlsx file ({type(exc).__name__})") from exc
    if not sheets:
        raise InputError(f"{name}: the workbook has no sheets")
    sheet, frame = next(iter(sheets.items()))
    notes = [f"{name}: read the first of {len(sheets)} sheets ({sheet!r})"] if len(sheets) > 1 else []
    values = [["" if _blank(v) else _cell_text(v) for v in row] for row in frame.itertuples(index=False)]
    while values and not any(v.strip() for v in values[0]):
        values.pop(0)  # blank rows above the header
    header, rows = (values[0], [r for r in values[1:] if any(v.strip() for v in r)]) if values else (None, [])
    _check_rows(len(rows), max_rows, name)
    return UserTable(table=_text_table(header, rows, name), format="xlsx", problems=[""] * len(rows), notes=notes)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _cell_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- SDF


def _sdf(text: str, name: str, max_rows: int | None, notes: list[str]) -> UserTable:
    """One row per record: `name` (title line), `smiles` (from the structure) and every data item."""
    records = _sdf_records(text)
    if not any(line.startswith("M  END") for lines in records for line in lines):
        raise InputError(f"{name}: no molecules found in the SDF file (no 'M  END' line)")
    _check_rows(len(records), max_rows, name)
    items = [_sdf_items(lines) for lines in records]
    properties = list(dict.fromkeys(key for item in items for key in item))
    name_col = "name" if "name" not in properties else "sdf_name"
    smiles_col = "smiles" if "smiles" not in properties else "sdf_smiles"
    rows, problems = [], []
    for number, (lines, item) in enumerate(zip(records, items), start=1):
        smiles, problem = _sdf_smiles(lines)
        problems.append(f"invalid structure in SDF record {number}: {problem}" if problem else "")
        rows.append([lines[0].strip() if lines else "", smiles] + [item.get(p, "") for p in properties])
    table = _text_table([name_col, smiles_col, *properties], rows, name)
    return UserTable(table=table, format="sdf", problems=problems, notes=notes)


def _sdf_records(text: str) -> list[list[str]]:
    records, current = [], []
    for line in text.splitlines():
        if line.strip() == "$$$$":
            records.append(current)
            current = []
        else:
            current.append(line)
    if any(line.strip() for line in current):
        records.append(current)
    return records


def _sdf_items(lines: list[str]) -> dict[str, str]:
    """Data items (`> <NAME>` then value lines up to a blank line) after the connection table."""
    end = next((i for i, line in enumerate(lines) if line.startswith("M  END")), len(lines))
    items: dict[str, str] = {}
    key, value = None, []
    for line in lines[end + 1:] + [""]:
        if key is None:
            if line.startswith(">") and "<" in line and ">" in line[line.index("<"):]:
                key = line[line.index("<") + 1:line.index(">", line.index("<"))].strip()
                value = []
        elif line.strip():
            value.append(line.rstrip())
        else:
            items.setdefault(key, "\n".join(value))
            key = None
    return items


def _sdf_smiles(lines: list[str]) -> tuple[str, str]:
    """SMILES of a record's structure, or ('', why not)."""
    from rdkit import Chem

    from assayfew.chem import parse_molblock

    end = next((i for i, line in enumerate(lines) if line.startswith("M  END")), None)
    if end is None:
        return "", "no connection table (no 'M  END' line)"
    mol, reason = parse_molblock("\n".join(lines[:end + 1]))
    return (Chem.MolToSmiles(mol), "") if mol is not None else ("", reason)
