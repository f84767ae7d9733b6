"""`assayfew bench drug|report`: the paper's comparisons as one resumable grid (meta-learners, mixers,
regularisers, ablations and single-task baselines on the same K-shot episodes) and its Markdown report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from assayfew.bench.grid import Cell, load_grid
from assayfew.bench.report import write_report
from assayfew.bench.run import BenchReporter, run_grid
from assayfew.cli._common import (
    CorpusOption, DataDirOption, FormatOption, GroupOption, SplitOption, err, guarded, user_errors,
)
from assayfew.experiment import experiment_data, split_taskset
from assayfew.io import check_output_dir
from assayfew.loop import Reporter

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


class _CellReporter(BenchReporter, Reporter):
    """One progress bar per cell: meta-training iterations, then one step per K evaluated."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, None

    def cell_start(self, cell: Cell, index: int, total: int, work: int) -> None:
        self.task = self.progress.add_task(f"[{index + 1}/{total}] {cell.method} seed {cell.seed}", total=work,
                                           info="")

    def training(self) -> Reporter:
        return self

    def iteration(self, epoch: int, loss: float, n: int = 1) -> None:
        self.progress.update(self.task, advance=n, info=f"epoch {epoch} loss {loss:.3f}")

    def advance(self, n: int = 1) -> None:
        self.progress.update(self.task, advance=n, info="evaluating")

    def cell_done(self, cell: Cell, wall_s: float, skipped: bool) -> None:
        what = "finished earlier" if skipped else "done"
        if self.task is not None and not skipped:
            self.progress.remove_task(self.task)  # one live bar: the running cell's
            self.task = None
        self.progress.console.print(f"{cell.method} seed {cell.seed}: {what} ({wall_s:.1f} s)")


def drug(
    grid: Annotated[Path, typer.Option(help="GRID.toml: seeds, K values, baselines, [train], [[study]] axes.")],
    out: Annotated[Path, typer.Option(help="Output directory (re-running skips its finished cells).")],
    group: GroupOption = None,
    data_dir: DataDirOption = None,
    corpus: CorpusOption = None,
    format: FormatOption = None,
    split: SplitOption = None,
) -> None:
    """Run every cell of GRID.toml (skipping finished ones), write DIR/results.csv and DIR/report.md.

    Start the same command again (another shell or machine sharing DIR) to run cells in parallel: each cell
    is locked while a worker runs it."""
    with user_errors():
        spec = load_grid(grid)  # the whole grid is validated before any data is read
        check_output_dir(out)
        standardize = {c.config.get("standardize", True) for c in spec.cells if c.kind == "meta"} or {True}
        if len(standardize) > 1:
            raise ValueError(f"{grid}: every cell must use the same 'standardize'")
        taskset, split_def = experiment_data(group=group, data_dir=data_dir, corpus=corpus, fmt=format,
                                             split=split, standardize=standardize.pop())
        data = split_taskset(taskset, split_def, seed=0)
        if len(data.train) == 0 or len(data.val) == 0 or len(data.test) == 0:
            raise ValueError(f"the split leaves {len(data.train)} training, {len(data.val)} validation and "
                             f"{len(data.test)} test assays: all three are needed")
        source = {"corpus": [str(c) for c in corpus or []], "split": str(split or f"pqsar group {group}"),
                  "format": format}
        err.print(f"{len(spec.cells)} cells; train {len(data.train)} assays, val {len(data.val)}, "
                  f"test {len(data.test)}; K = {spec.ks}; output in {out}")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err) as progress:
            done = run_grid(spec, data, out, source=source, reporter=_CellReporter(progress))
        report = write_report(out, spec.reference)
    busy = f", left {len(done.busy)} to other workers" if done.busy else ""
    err.print(f"ran {len(done.ran)} cell(s), skipped {len(done.skipped)} finished{busy}; results in "
              f"{done.results}, report in {report}")


def report(
    out: Annotated[Path, typer.Argument(help="A bench output directory (its results.csv).")],
    reference: Annotated[Optional[str], typer.Option(help="Method the others are compared with "
                                                          "(default: the best mean at each K).")] = None,
) -> None:
    """Regenerate DIR/report.md and DIR/plots/ from DIR/results.csv alone (works on a half-finished grid)."""
    with user_errors():
        path = write_report(out, reference)
    err.print(f"wrote {path}")


app.command("drug")(guarded(drug))
app.command("report")(guarded(report))
