"""`assayfew evaluate`: adapt on each meta-test assay's support, score its query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from assayfew.bounds import MAX_STEPS, SEED_MAX
from assayfew.checkpoint import load_model
from assayfew.cli._common import CorpusOption, DataDirOption, FormatOption, GroupOption, err, user_errors
from assayfew.device import DEVICE_HELP, resolve_device
from assayfew.evaluate import coverage, evaluate_episodes, evaluation_episodes
from assayfew.experiment import experiment_data, split_taskset
from assayfew.io import check_output_file, write_csv
from assayfew.paths import default_model_dir


def main(
    model: Annotated[Optional[Path], typer.Option(help="Model directory (default: the shipped model).")] = None,
    group: GroupOption = None,
    data_dir: DataDirOption = None,
    corpus: CorpusOption = None,
    format: FormatOption = None,
    split: Annotated[Optional[Path], typer.Option(help="Split file; its 'test' side is evaluated.")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_STEPS,
                                                 help="Adaptation steps (default: the model's).")] = None,
    support_k: Annotated[Optional[int], typer.Option(min=1,
                                                     help="Draw K support compounds from TRN (default: all).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Per-assay CSV.")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """Squared Pearson r per meta-test assay; prints one JSON line (mean, median, gt03, n, 95% CIs, skipped and
    absent assay ids)."""
    if out is not None:
        check_output_file(out)
    with user_errors():
        target = resolve_device(device)
        loaded = load_model(model or default_model_dir()).to(target)
        taskset, split_def = experiment_data(group=group, data_dir=data_dir, corpus=corpus, fmt=format, split=split,
                                             spec=loaded.spec, standardize=loaded.standardize)
        test = split_taskset(taskset, split_def, seed=seed).test
        if len(test) == 0:
            raise ValueError("the split's test side has no assays in this corpus")
        episodes = evaluation_episodes(test, support_k=support_k, seed=seed)
        covered = coverage(split_def.test, test, episodes)
        err.print(f"evaluated {covered['evaluated']} of {len(dict.fromkeys(split_def.test))} meta-test assays")
        if covered["skipped"]:
            err.print(f"skipped (too few compounds: under 2 support or 5 query): {', '.join(covered['skipped'])}")
        if covered["absent"]:
            err.print(f"absent from the corpus: {', '.join(covered['absent'])}")
        result = evaluate_episodes(episodes, lambda xs, ys, xq: loaded.adapt_predict(xs, ys, xq, steps=steps),
                                   seed=seed)
    if out is not None:
        write_csv(out, result.per_assay)
        err.print(f"wrote {out}")
    print(json.dumps(result.summary | {"skipped": covered["skipped"], "absent": covered["absent"]}))
