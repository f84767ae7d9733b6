"""`assayfew predict --library`: score a screening library with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from assayfew.cli._common import fail
from assayfew.predict import InputError, PredictionResult
from assayfew.screen import LibraryFeatures, score_library


def score_with_progress(result: PredictionResult, features: LibraryFeatures, out: Path | None, err: Console) -> None:
    """Score `library` with the assay's adaptation, showing compounds scored, rate and time left (by bytes
    of the file read); then a one-line summary. `features` is already featurising the library."""
    library = features.library
    assert result.adaptation is not None
    start = features.started  # featurising began before the assay was adapted
    columns = (TextColumn("scoring {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.fields[rows]:>12,} compounds  {task.fields[rate]:>8,.0f}/s"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(library.path.name, total=max(library.size, 1), rows=0, rate=0.0)

        def report(rows: int, done_bytes: int) -> None:
            rate = rows / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=min(done_bytes, library.size), rows=rows, rate=rate)

        try:
            summary = score_library(result.adaptation, features, out, units=result.units, progress=report)
        except InputError as exc:
            bar.stop()
            raise fail(str(exc)) from None
        except OSError as exc:  # the output cannot be written (disk full, ...)
            bar.stop()
            raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
        bar.update(task, completed=max(library.size, 1))
    seconds = time.perf_counter() - start
    err.print(f"library: {summary.n_rows:,} compounds scored in {seconds:.1f} s "
              f"({summary.n_rows / max(seconds, 1e-9):,.0f}/s); rows that could not be scored: "
              f"{summary.n_invalid:,} (kept, with their status)")
    if summary.replaced_columns:
        err.print(f"[yellow]warning:[/yellow] the library's column(s) {', '.join(summary.replaced_columns)} "
                  "were replaced by this run's")
    if out is not None:
        err.print(f"wrote {out}")
