"""Run a grid's cells into an output directory, resumably, and gather one results CSV.

    DIR/grid.toml          the grid as given          DIR/bench.json   data, split, seeds, ks (checked on re-run)
    DIR/cells/<id>/        cell.json (definition), run/ (meta-training run dir, model/ kept), result.csv (last)
    DIR/results.csv        one row per cell × K × assay (finished cells only; rebuilt after every cell)

A cell is finished when its result.csv exists (written atomically, last); a re-run skips finished cells and
restarts any other from scratch (a killed cell leaves no partial result). Several workers (the same command
started more than once) may share a directory: each cell is claimed with a file lock (DIR/locks/) while it runs.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from assayfew.baselines import BASELINES
from assayfew.bench.grid import REFERENCE, Cell, Grid
from assayfew.checkpoint import load_model
from assayfew.evaluate import (EvaluationResult, evaluate_episodes, evaluate_tasks, evaluation_episodes,
                               reference_prediction, with_reference)
from assayfew.experiment import SplitData
from assayfew.io import read_json, write_csv, write_json, write_toml
from assayfew.loop import Reporter
from assayfew.meta.registry import option_names
from assayfew.provenance import array_digest, stamp
from assayfew.train import TrainConfig, train

RESULTS_FILE = "results.csv"
#: the results CSV's fixed columns (the grid's axis fields follow, then the scores)
META_COLUMNS = ["method", "kind", "studies", "cell", "seed", "k", "assay_id", "n_support", "n_query"]
SCORE_COLUMNS = ["r2", "mse", "wall_s"]


class BenchReporter:
    """Progress hooks for a grid run (the CLI renders them; the library stays quiet)."""

    def cell_start(self, cell: Cell, index: int, total: int, work: int) -> None:
        """A cell begins: `work` steps (meta-training iterations + one per K)."""

    def training(self) -> Reporter:
        """The meta-training loop's reporter for the current cell."""
        return Reporter()

    def advance(self, n: int = 1) -> None:
        """`n` evaluation steps of the current cell are done."""

    def cell_done(self, cell: Cell, wall_s: float, skipped: bool) -> None: ...


@dataclass
class GridRun:
    """What `run_grid` did: the cells it ran and skipped, and the results CSV it wrote."""

    ran: list[str]
    skipped: list[str]
    busy: list[str]  # cells another worker was running
    results: Path


def data_record(data: SplitData, source: dict[str, Any]) -> dict[str, Any]:
    """What a grid directory was run on (a re-run on other data is refused)."""
    test = data.test
    return source | {"n_train": len(data.train), "n_val": len(data.val), "test_assays": test.assay_ids,
                     "test_digest": array_digest(test.fp_rows, test.values, test.split, test.fingerprints),
                     "train_digest": array_digest(data.train.values, data.train.offsets)}


def check_directory(out: Path, record: dict[str, Any]) -> None:
    """ValueError when `out` holds a grid run on other data or with other evaluation episodes (seeds stay
    free: a grid may add seeds)."""
    bench_file = Path(out) / "bench.json"
    if not bench_file.exists():
        return
    previous = read_json(bench_file)
    for key in ("test_digest", "train_digest", "test_assays"):
        if previous.get("data", {}).get(key) != record.get(key):
            raise ValueError(f"{out} holds a grid run on other data or another split ({key} differs): "
                             "choose a new --out")


def run_grid(grid: Grid, data: SplitData, out: Path, *, source: dict[str, Any],
             reporter: BenchReporter | None = None) -> GridRun:
    """Run every unfinished cell of `grid` on `data` (train/val: meta-training and selection; test: the K-shot
    evaluation), writing DIR as described in the module docstring."""
    reporter = reporter or BenchReporter()
    out = Path(out)
    record = data_record(data, source)
    check_directory(out, record)
    out.mkdir(parents=True, exist_ok=True)
    write_toml(out / "grid.toml", grid.source)
    write_json(out / "bench.json", {"data": record, "seeds": grid.seeds, "k": grid.ks,
                                    "cells": [c.id for c in grid.cells]} | stamp())
    episodes = {(seed, k): evaluation_episodes(data.test, support_k=k, seed=seed)
                for seed in grid.seeds for k in grid.ks}
    ran, skipped, busy = [], [], []
    for index, cell in enumerate(grid.cells):
        cell_dir = out / "cells" / cell.id
        if finished(cell_dir, cell):
            skipped.append(cell.id)
            reporter.cell_done(cell, read_json(cell_dir / "cell.json")["wall_s"], skipped=True)
            continue
        with claim(out, cell) as mine:
            if not mine:  # another worker on this directory is running it
                busy.append(cell.id)
                continue
            if finished(cell_dir, cell):  # finished by another worker since the check above
                skipped.append(cell.id)
                continue
            wall = _run_claimed(cell, index, grid, data, cell_dir, episodes, reporter)
        ran.append(cell.id)
        gather(grid, out)
        reporter.cell_done(cell, wall, skipped=False)
    return GridRun(ran=ran, skipped=skipped, busy=busy, results=gather(grid, out))


@contextmanager
def claim(out: Path, cell: Cell) -> Iterator[bool]:
    """Hold an exclusive lock on the cell (DIR/locks/<id>.lock) while it runs: several workers may run one
    grid directory at once, each taking the cells no other holds. True when this process got it; the lock
    goes with the process, so a killed worker never blocks a cell."""
    (Path(out) / "locks").mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "locks" / f"{cell.id}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_claimed(cell: Cell, index: int, grid: Grid, data: SplitData, cell_dir: Path,
                 episodes: dict[tuple[int, int], list], reporter: BenchReporter) -> float:
    """Run a claimed cell from scratch into `cell_dir`; returns its wall time."""
    if cell_dir.exists():
        shutil.rmtree(cell_dir)  # a cell killed part-way restarts from scratch
    cell_dir.mkdir(parents=True)
    write_json(cell_dir / "cell.json", _definition(cell))
    cfg = TrainConfig.from_dict(cell.config) if cell.kind == "meta" else None
    work = (cfg.epochs * cfg.iters if cfg else 0) + len(grid.ks)
    reporter.cell_start(cell, index, len(grid.cells), work)
    t0 = time.perf_counter()
    scored = _run_cell(cell, data, cell_dir, grid.ks, episodes, reporter)
    wall = time.perf_counter() - t0
    shutil.rmtree(cell_dir / "run" / "state", ignore_errors=True)  # resume state: unused once finished
    write_json(cell_dir / "cell.json", _definition(cell) | {"wall_s": wall})
    write_csv(cell_dir / "result.csv", scored)  # last: its presence marks the cell finished
    return wall


def _definition(cell: Cell) -> dict[str, Any]:
    return {"kind": cell.kind, "method": cell.method, "seed": cell.seed, "config": cell.config}


def finished(cell_dir: Path, cell: Cell) -> bool:
    """Whether `cell_dir` holds this cell's finished result (same definition)."""
    if not (cell_dir / "result.csv").is_file() or not (cell_dir / "cell.json").is_file():
        return False
    stored = read_json(cell_dir / "cell.json")
    return "wall_s" in stored and {k: stored.get(k) for k in ("kind", "method", "seed", "config")} == \
        json.loads(json.dumps(_definition(cell)))


def _run_cell(cell: Cell, data: SplitData, cell_dir: Path, ks: list[int],
              episodes: dict[tuple[int, int], list], reporter: BenchReporter) -> pd.DataFrame:
    """The cell's per-assay scores at every K (columns k, assay_id, n_support, n_query, r2, mse)."""
    if cell.kind == "meta":
        cfg = TrainConfig.from_dict(cell.config)
        train(cfg, data.train, data.val, cell_dir / "run", reporter=reporter.training(),
              split_info={"source": "assayfew bench"})
        model = load_model(cell_dir / "run" / "model")

        def evaluate(eps: list) -> EvaluationResult:
            return evaluate_episodes(eps, model.adapt_predict, n_boot=0)
    elif cell.config["name"] == REFERENCE:
        def evaluate(eps: list) -> EvaluationResult:
            return evaluate_tasks(with_reference(eps), reference_prediction, n_boot=0)
    else:
        name, options = cell.config["name"], dict(cell.config["options"])
        if "seed" in option_names(BASELINES.get(name)):
            options.setdefault("seed", cell.seed)
        baseline = BASELINES.build(name, **options)

        def evaluate(eps: list) -> EvaluationResult:
            return evaluate_episodes(eps, baseline.predict, n_boot=0)
    frames = []
    for k in ks:
        frames.append(evaluate(episodes[(cell.seed, k)]).per_assay.assign(k=k))
        reporter.advance()
    return pd.concat(frames, ignore_index=True)[["k", "assay_id", "n_support", "n_query", "r2", "mse"]]


def gather(grid: Grid, out: Path) -> Path:
    """Write DIR/results.csv from the finished cells of `grid` (grid order); returns its path."""
    frames = []
    for cell in grid.cells:
        cell_dir = Path(out) / "cells" / cell.id
        if not finished(cell_dir, cell):
            continue
        scores = pd.read_csv(cell_dir / "result.csv", dtype={"assay_id": str})
        wall = read_json(cell_dir / "cell.json")["wall_s"]
        meta = {"method": cell.method, "kind": cell.kind, "studies": ";".join(cell.studies), "cell": cell.id,
                "seed": cell.seed} | {a: _cell_value(cell.axes.get(a)) for a in grid.axes}
        frames.append(scores.assign(**meta, wall_s=wall))
    columns = META_COLUMNS + grid.axes + SCORE_COLUMNS
    results = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    write_csv(Path(out) / RESULTS_FILE, results)
    return Path(out) / RESULTS_FILE


def _cell_value(value: Any) -> Any:
    """An axis value as one CSV cell (lists as "1,2"; absent: empty)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value
