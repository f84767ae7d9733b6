"""`assayfew pretrain`: multitask pre-training of the meta-model's body (one head per training assay)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from assayfew.bounds import SEED_MAX
from assayfew.cli._common import (
    CorpusOption, DataDirOption, FormatOption, GroupOption, SplitOption, err, run_options, user_errors,
)
from assayfew.cli.train import _csv_ints, check_run_target
from assayfew.device import DEVICE_HELP
from assayfew.experiment import experiment_data, split_taskset
from assayfew.loop import Reporter
from assayfew.pretrain import PretrainConfig, pretrain
from assayfew.rundir import clear_run


class _Reporter(Reporter):
    def __init__(self, progress: Progress):
        self.progress, self.task = progress, None

    def start(self, total_iters: int, done_iters: int) -> None:
        self.task = self.progress.add_task("pre-training", total=total_iters, completed=done_iters, info="")

    def iteration(self, epoch: int, loss: float, n: int = 1) -> None:
        self.progress.update(self.task, advance=n, info=f"epoch {epoch}  loss {loss:.3f}")

    def epoch(self, row: dict) -> None:
        self.progress.console.print(f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  val R² ridge head "
                                    f"{row['val_ridge_r2']:.4f}  gd head {row['val_gd_r2']:.4f}")


def main(
    out: Annotated[Path, typer.Option(help="Run directory (config.toml, metrics.csv, model/, heads.safetensors).")],
    group: GroupOption = None,
    data_dir: DataDirOption = None,
    corpus: CorpusOption = None,
    format: FormatOption = None,
    split: SplitOption = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of pre-training options (flags override).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    iters: Annotated[Optional[int], typer.Option(min=1, help="Minibatches per epoch.")] = None,
    hidden: Annotated[Optional[str], typer.Option(help="Hidden widths, e.g. 500,500 (as the meta-model's).")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=SEED_MAX)] = None,
    device: Annotated[Optional[str], typer.Option(help=DEVICE_HELP)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out.")] = False,
) -> None:
    """Pre-train the body with multitask regression over the split's training assays; `train --config` with
    `init_body = "RUN"` then meta-trains from it."""
    with user_errors():
        flags = {"epochs": epochs, "iters": iters, "seed": seed, "device": device,
                 "hidden": _csv_ints(hidden) if hidden else None}
        cfg = PretrainConfig.from_dict(run_options(config, out, False, flags))
        check_run_target(out, resume=False, overwrite=overwrite)
        taskset, split_def = experiment_data(group=group, data_dir=data_dir, corpus=corpus, fmt=format, split=split,
                                             standardize=cfg.standardize)
        data = split_taskset(taskset, split_def, seed=cfg.seed)
        if len(data.train) == 0 or len(data.val) == 0:
            raise ValueError(f"the split leaves {len(data.train)} training and {len(data.val)} validation assays")
        if overwrite:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        data.split.save(out / "split.json")
        err.print(f"pre-train on {len(data.train)} assays, select on {len(data.val)}; run in {out}")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err) as progress:
            result = pretrain(cfg, data.train, data.val, out, reporter=_Reporter(progress),
                              split_info={"source": str(split or f"pqsar group {group}")})
    err.print(f"best epoch {result.best_epoch}: val R² ({cfg.select} head) {result.best_val:.4f}; "
              f"{result.wall_s:.0f} s; body in {out / 'model'}")
