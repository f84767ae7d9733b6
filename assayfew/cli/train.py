"""`assayfew train`: meta-train a model on the pQSAR groups or any corpus with a split file."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from assayfew.cli._common import (
    CorpusOption, DataDirOption, FormatOption, GroupOption, SplitOption, err, fail, user_errors,
)
from assayfew.device import DEVICE_HELP, resolve_device
from assayfew.distributed import DistContext, init_from_env
from assayfew.experiment import experiment_data, split_taskset
from assayfew.io import check_output_dir, read_toml
from assayfew.rundir import clear_run, run_artefacts
from assayfew.train import Reporter, TrainConfig, assay_weights, body_initializer, check_sides, train


class RichReporter(Reporter):
    def __init__(self, progress: Progress):
        self.progress, self.task, self.last_val = progress, None, float("nan")

    def start(self, total_iters: int, done_iters: int) -> None:
        self.task = self.progress.add_task("meta-training", total=total_iters, completed=done_iters, info="")

    def iteration(self, epoch: int, loss: float, n: int = 1) -> None:
        val = f"  val R² {self.last_val:.3f}" if math.isfinite(self.last_val) else ""
        self.progress.update(self.task, advance=n, info=f"epoch {epoch}  loss {loss:.3f}{val}")

    def epoch(self, row: dict) -> None:
        self.last_val = row["val_mean_r2"]
        val = (f"val mean R² {row['val_mean_r2']:.4f}  median {row['val_median_r2']:.4f}"
               if math.isfinite(row["val_mean_r2"]) else "no validation assays")
        self.progress.console.print(f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  {val}")


def default_run_dir(group: int | None, dist: DistContext) -> Path:
    """A new runs/group<N>-<timestamp> (runs/train-<timestamp> for corpus runs); rank 0's clock on every rank."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(dist.broadcast_int(int(time.time()))))
    name = f"group{group}" if group is not None else "train"
    path = Path("runs") / f"{name}-{stamp}"
    for n in range(2, 100):  # never reuse an existing directory (two runs started in the same second)
        if not path.exists():
            break
        path = Path("runs") / f"{name}-{stamp}-{n}"
    return path


def _csv_ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_options(pairs: list[str], flag: str) -> dict:
    """KEY=VALUE pairs; VALUE is read as a TOML value (1e-4, true, [1, 2], "text") or else as text."""
    import tomllib

    out: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text.strip()
    return out


def regularizer_values(values: dict, name: str | None, pairs: list[str] | None) -> dict:
    """`values` (a config file's) with --regularizer / --reg-opt applied: options given on the command line
    override the file's; naming another regularizer drops the file's options."""
    out = dict(values)
    if name is not None and name != out.get("regularizer", "none"):
        out["regularizer"], out["regularizer_options"] = name, {}
    if pairs:
        out["regularizer_options"] = dict(out.get("regularizer_options", {})) | parse_options(pairs, "--reg-opt")
    return out


def check_run_target(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Before any work: --out must be writable, and must not hold a run unless --resume or --overwrite says so."""
    if resume and overwrite:
        raise fail("--resume and --overwrite contradict each other: choose one")
    check_output_dir(out)
    found = run_artefacts(out)
    if found and not (resume or overwrite):
        raise fail(f"{out} already holds a training run ({', '.join(found)}): continue it with --resume, "
                   "choose a new --out, or pass --overwrite to replace it")


def main(
    out: Annotated[Optional[Path], typer.Option(help="Run directory (config.toml, metrics.csv, model/); "
                                                     "default: a new runs/group<N>-<timestamp> "
                                                     "(runs/train-<timestamp>).")] = None,
    group: GroupOption = None,
    data_dir: DataDirOption = None,
    corpus: CorpusOption = None,
    format: FormatOption = None,
    split: SplitOption = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of training options (flags override).")] = None,
    algo: Annotated[Optional[str], typer.Option(help="maml|anil|anil++|metasgd|tnet|r2d2")] = None,
    adapt: Annotated[Optional[str], typer.Option(help="What metasgd/tnet adapt in the inner loop: all|head "
                                                     "(default: metasgd all, tnet head).")] = None,
    regularizer: Annotated[Optional[str], typer.Option(
        help="none|weight_decay|cavia|meta_dropout|mr_maml|taml (default none).")] = None,
    reg_opt: Annotated[Optional[list[str]], typer.Option(
        "--reg-opt", metavar="KEY=VALUE", help="A regularizer option, e.g. decay=1e-4 (repeatable).")] = None,
    mix: Annotated[Optional[str], typer.Option(help="none|metamix|mixup_ss|mixup_qq|cob")] = None,
    alpha: Annotated[Optional[float], typer.Option()] = None,
    beta: Annotated[Optional[float], typer.Option()] = None,
    layers: Annotated[Optional[str], typer.Option(help="Candidate mixing layers, e.g. 1,2")] = None,
    fixed_lambda: Annotated[Optional[float], typer.Option(help="Use a fixed λ instead of Beta draws.")] = None,
    epochs: Annotated[Optional[int], typer.Option()] = None,
    keep_epoch: Annotated[Optional[int], typer.Option(
        help="Keep this epoch (0-based) and stop after it, the rate annealing over --epochs all the same "
             "(default: the epoch with the best validation mean R²). Needed when the split has no validation "
             "assays.")] = None,
    iters: Annotated[Optional[int], typer.Option(help="Meta-iterations per epoch.")] = None,
    meta_batch: Annotated[Optional[int], typer.Option()] = None,
    inner_steps: Annotated[Optional[int], typer.Option()] = None,
    inner_lr: Annotated[Optional[float], typer.Option()] = None,
    per_step_blocks: Annotated[Optional[str], typer.Option(
        help="Hidden blocks with per-step batch norm (MAML++): last (fast default) | all.")] = None,
    first_order_epochs: Annotated[Optional[int], typer.Option(
        min=0, help="First-order inner loop during the first N epochs (derivative-order annealing).")] = None,
    msl_epochs: Annotated[Optional[int], typer.Option(
        min=0, help="anil++: multi-step loss over the first N epochs (0: final step only).")] = None,
    outer_lr: Annotated[Optional[float], typer.Option()] = None,
    hidden: Annotated[Optional[str], typer.Option(help="Hidden widths, e.g. 500,500")] = None,
    label_scaling: Annotated[Optional[str], typer.Option(help="none|center|standardize")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option(help=DEVICE_HELP)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue RUN_DIR from its last completed epoch.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out.")] = False,
    standardize: Annotated[Optional[bool], typer.Option(
        "--standardize/--no-standardize", help="Strip salts and neutralise structures before featurizing "
                                               "(default: yes; predict follows the model's choice).")] = None,
) -> None:
    """Meta-train ANIL++ (or another learner) with MetaMix (or another mixing strategy).

    Under `torchrun --nproc-per-node N -m assayfew train ...` the meta-batch is shared out over N processes
    (NCCL on GPUs, gloo on CPUs); rank 0 validates and writes the run directory."""
    with user_errors():
        if resume and out is None:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        values: dict = read_toml(config) if config else {}
        flags = {"algo": algo, "adapt": adapt, "mix": mix, "alpha": alpha, "beta": beta, "fixed_lambda": fixed_lambda,
                 "epochs": epochs, "keep_epoch": keep_epoch, "iters": iters, "meta_batch": meta_batch,
                 "inner_steps": inner_steps, "inner_lr": inner_lr, "per_step_blocks": per_step_blocks,
                 "first_order_epochs": first_order_epochs, "msl_epochs": msl_epochs, "outer_lr": outer_lr,
                 "label_scaling": label_scaling, "seed": seed, "device": device, "standardize": standardize,
                 "layers": _csv_ints(layers) if layers else None, "hidden": _csv_ints(hidden) if hidden else None}
        if resume and out is not None and (out / "config.toml").exists() and not config:
            values = read_toml(out / "config.toml")
        values |= {k: v for k, v in flags.items() if v is not None}
        values = regularizer_values(values, regularizer, reg_opt)
        cfg = TrainConfig.from_dict(values)
        body_initializer(cfg, None)  # a bad init_body fails before the run directory is made (data: in train)
        dist = init_from_env(resolve_device(cfg.device))
        if out is not None:  # a named run directory is checked before any work
            check_run_target(out, resume=resume, overwrite=overwrite)
        else:  # a new default one is made only once the data have loaded (no empty run dirs left behind)
            out = default_run_dir(group, dist)
        if not dist.is_main:
            dist.barrier()  # rank 0 reads and featurizes first; the others then hit its caches
        taskset, split_def = experiment_data(group=group, data_dir=data_dir, corpus=corpus, fmt=format, split=split,
                                             standardize=cfg.standardize)
        if dist.is_main:
            dist.barrier()
        data = split_taskset(taskset, split_def, seed=cfg.seed)
        check_sides(cfg, data.train, data.val)
        assay_weights(data.train.sources, cfg.source_balance, cfg.source_weights)  # fails before the run dir exists
        if not dist.is_main:
            train(cfg, data.train, data.val, out, resume=resume, dist=dist)
            return
        check_run_target(out, resume=resume, overwrite=overwrite)
        if overwrite:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        data.split.save(out / "split.json")
        ranks = f" on {dist.world_size} ranks" if dist.active else ""
        ignored = (f"; {len(data.split.unknown)} split assay ids are not in the corpus and are ignored (listed under "
                   f"'unknown' in split.json)" if data.split.unknown else "")
        err.print(f"train {len(data.train)} assays, val {len(data.val)}, test {len(data.test)}{ranks}{ignored}; "
                  f"run in {out}")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err) as progress:
            result = train(cfg, data.train, data.val, out, resume=resume, reporter=RichReporter(progress),
                           split_info={"source": str(split or f"pqsar group {group}")}, dist=dist)
    how = "best epoch" if cfg.keep_epoch is None else "kept epoch"
    val = f"val mean R² {result.best_val:.4f}" if math.isfinite(result.best_val) else "no validation assays"
    err.print(f"{how} {result.best_epoch}: {val}; model in {out / 'model'}")
