"""`assayfew featurize`: SMILES CSV → Morgan fingerprint npz."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from assayfew.bounds import MAX_FP_BITS, MAX_FP_RADIUS, MIN_FP_BITS
from assayfew.chem import featurize_smiles
from assayfew.cli._common import FEATURE_BITS_HELP, fail, fingerprint_spec
from assayfew.data import DataFormatError, read_smiles_csv
from assayfew.io import atomic_write, check_output_file


def main(
    input_csv: Path = typer.Argument(..., help="CSV file with a SMILES column."),
    out: Path = typer.Option(..., "--out", help="Output .npz (fingerprints, valid, smiles), at exactly this path."),
    smiles_col: str | None = typer.Option(None, "--smiles-col", help="SMILES column (default: auto-detect)."),
    radius: int = typer.Option(2, "--radius", min=0, max=MAX_FP_RADIUS, help="Morgan radius."),
    bits: int = typer.Option(1024, "--bits", min=MIN_FP_BITS, max=MAX_FP_BITS, help="Fingerprint length."),
    feature_bits: int = typer.Option(0, "--feature-bits", min=0, max=MAX_FP_BITS, help=FEATURE_BITS_HELP),
    standardize: bool = typer.Option(False, "--standardize", help="Largest fragment + neutralise first."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the fingerprint cache."),
) -> None:
    """Featurize every row of INPUT_CSV (input order kept; invalid rows are all-zero with valid=False)."""
    console = Console()
    if not input_csv.is_file():
        problem = "is a directory, not a CSV file" if input_csv.is_dir() else "file not found"
        raise typer.BadParameter(f"{input_csv}: {problem}", param_hint="INPUT_CSV")
    check_output_file(out)
    try:
        smiles, column = read_smiles_csv(input_csv, smiles_col)
    except DataFormatError as exc:
        if exc.column is None:  # unreadable file (encoding, empty, malformed): not the column's fault
            raise fail(str(exc)) from None
        raise typer.BadParameter(str(exc), param_hint="--smiles-col") from exc
    result = featurize_smiles(smiles, fingerprint_spec(radius, bits, feature_bits), standardize=standardize,
                              cache=not no_cache, canonical=False)
    arrays = {"fingerprints": result.fingerprints, "valid": result.valid, "smiles": np.array(smiles, dtype=str)}

    def write(path: Path) -> None:
        with open(path, "wb") as handle:  # a file handle: numpy adds no '.npz' to the name
            np.savez_compressed(handle, **arrays)

    atomic_write(out, write)
    n_bad = int((~result.valid).sum())
    console.print(f"{len(smiles)} rows from column '{column}' written to {out}")
    console.print(f"{n_bad} invalid rows", soft_wrap=True)
    if n_bad:
        counts = Counter(r for r in result.reasons if r)
        table = Table(title="Invalid rows by reason")
        table.add_column("reason")
        table.add_column("count", justify="right")
        for reason, count in counts.most_common():
            table.add_row(reason, str(count))
        console.print(table)
        first = [i for i, ok in enumerate(result.valid) if not ok][:5]
        examples = Table(title="First invalid rows (line numbers, header = 1)")
        for name in ("row", "SMILES", "reason"):
            examples.add_column(name)
        for i in first:
            examples.add_row(str(i + 2), smiles[i][:60], result.reasons[i])
        console.print(examples)
