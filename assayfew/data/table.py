"""The long-format assay table, the per-row Report and DataFormatError."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

TABLE_COLUMNS = ["assay_id", "compound_id", "smiles", "value", "split", "relation", "family", "file", "row"]

_DTYPES = {
    "assay_id": str,
    "compound_id": str,
    "smiles": str,
    "value": float,
    "split": str,
    "relation": str,
    "family": str,
    "file": str,
    "row": int,
}


class DataFormatError(ValueError):
    """An input that cannot be read at all; the message names file, row and column."""

    def __init__(self, file: object, row: int | None, column: str | None, problem: str) -> None:
        where = f"{file}"
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {problem}")
        self.file, self.row, self.column = str(file), row, column


@dataclass
class Report:
    """Per-row outcomes of reading/preparing: rejected rows, non-fatal notes, counts by reason."""

    rejected: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def _add(self, bucket: list[dict], file: object, row: int | None, reason: str) -> None:
        bucket.append({"file": str(file), "row": row, "reason": reason})
        key = _reason_key(reason)
        self.counts[key] = self.counts.get(key, 0) + 1

    def reject(self, file: object, row: int | None, reason: str) -> None:
        """Record a row that was dropped and why."""
        self._add(self.rejected, file, row, reason)

    def flag(self, file: object, row: int | None, reason: str) -> None:
        """Record a non-fatal observation about a kept row (censored, replicate, ...)."""
        self._add(self.notes, file, row, reason)

    def extend(self, other: Report) -> None:
        self.rejected.extend(other.rejected)
        self.notes.extend(other.notes)
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count

    def to_dict(self) -> dict:
        return {"rejected": list(self.rejected), "notes": list(self.notes), "counts": dict(self.counts)}

    def summary(self) -> Counter:
        """Counts by reason (same as counts, as a Counter)."""
        return Counter(self.counts)


def _reason_key(reason: str) -> str:
    """Group detailed reasons: quoted details become '…' and numbers/ids after 'row'/'of' are dropped."""
    key = re.sub(r"'[^']*'", "'…'", reason)
    key = re.sub(r"\brow \d+", "row N", key)
    return key.split(";", 1)[0]


def empty_table() -> pd.DataFrame:
    return make_table({c: [] for c in TABLE_COLUMNS})


def make_table(columns: dict[str, object], extra: dict[str, object] | None = None) -> pd.DataFrame:
    """Build a table with exactly TABLE_COLUMNS (in order, typed) plus optional extra columns."""
    frame = pd.DataFrame({c: columns[c] for c in TABLE_COLUMNS})
    for name, kind in _DTYPES.items():
        frame[name] = frame[name].astype(kind) if kind is not str else frame[name].astype(object).astype(str)
    frame["row"] = frame["row"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    for name, values in (extra or {}).items():
        frame[name] = values
    return frame
