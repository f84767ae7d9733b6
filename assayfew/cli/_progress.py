"""Rich progress bars for the training loop's and evaluators' `Reporter` hooks (shared by the benchmark groups)."""

from __future__ import annotations

from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from assayfew.cli._common import err
from assayfew.loop import Reporter

__all__ = ["progress_bar", "RichReporter"]


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err)


class RichReporter(Reporter):
    """One bar named `what`; meta-training shows the epoch and loss, and `epoch_line(row)` prints each epoch's
    validation."""

    def __init__(self, progress: Progress, what: str, epoch_line: Callable[[dict], str] | None = None) -> None:
        self.progress, self.what, self.epoch_line, self.task = progress, what, epoch_line, None

    def start(self, total_iters: int, done_iters: int) -> None:
        self.task = self.progress.add_task(self.what, total=total_iters, completed=done_iters, info="")

    def iteration(self, epoch: int, loss: float, n: int = 1) -> None:
        info = f"epoch {epoch}  loss {loss:.3f}" if self.what == "meta-training" else ""
        self.progress.update(self.task, advance=n, info=info)

    def epoch(self, row: dict) -> None:
        if self.epoch_line is not None:
            self.progress.console.print(self.epoch_line(row))
