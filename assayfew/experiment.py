"""Assemble the data of an experiment: corpora → one TaskSet → train/val/test sides of a split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assayfew.chem import FingerprintSpec
from assayfew.data.readers import PQSAR_FILES, PQSAR_SOURCE
from assayfew.paths import assays_dir
from assayfew.splits import Split
from assayfew.tasks import TaskSet, build_taskset


def load_taskset(sources: Sequence[Path], fmt: str | None = None, *, spec: FingerprintSpec = FingerprintSpec(),
                 cache: bool = True, standardize: bool = True) -> TaskSet:
    """One TaskSet from task-cache directories (written by `assayfew tasks`) and/or raw corpora.

    Raw corpora are featurized with `standardize`; a task cache that recorded the other choice is refused.
    """
    sets = []
    for source in sources:
        source = Path(source)
        if (source / "index.json").exists():
            cached = TaskSet.load(source)
            if cached.standardized is not None and cached.standardized != standardize:
                done = "with" if cached.standardized else "without"
                raise ValueError(f"{source}: task cache built {done} standardisation; pass "
                                 f"--{'' if cached.standardized else 'no-'}standardize or rebuild it")
            sets.append(cached)
        else:
            sets.append(build_taskset(source, fmt, spec=spec, cache=cache, standardize=standardize)[0])
    return sets[0] if len(sets) == 1 else TaskSet.concat(sets)


@dataclass
class SplitData:
    train: TaskSet
    val: TaskSet
    test: TaskSet
    split: Split


def split_taskset(taskset: TaskSet, split: Split, *, seed: int = 0) -> SplitData:
    """Resolve `split` against the TaskSet's assays and cut it into its three sides."""
    resolved = split.resolve(taskset.assay_ids, seed=seed)
    return SplitData(train=taskset.subset(resolved.train), val=taskset.subset(resolved.val),
                     test=taskset.subset(resolved.test), split=resolved)


def pqsar_group_split(group: int) -> Split:
    """The paper's drug group `group` (1–4): published meta-test ids, 76 validation ids drawn with a fixed seed."""
    if group not in (1, 2, 3, 4):
        raise ValueError(f"--group must be 1, 2, 3 or 4, not {group}")
    return Split.load(assays_dir() / "pqsar" / f"group{group}.json")


#: where `--group` runs look for the pQSAR SI files when --data-dir is not given (else ./pqsar)
PQSAR_DIR_ENV = "ASSAYFEW_PQSAR_DIR"


def pqsar_data_dir(data_dir: Path | None = None) -> Path:
    """The pQSAR SI folder: `data_dir`, else $ASSAYFEW_PQSAR_DIR, else ./pqsar; a FileNotFoundError that names
    every missing file, where the files come from and where to put them."""
    if data_dir is not None:
        where, how = Path(data_dir), "given by --data-dir"
    elif os.environ.get(PQSAR_DIR_ENV):
        where, how = Path(os.environ[PQSAR_DIR_ENV]), f"from ${PQSAR_DIR_ENV}"
    else:
        where, how = Path("pqsar"), f"the default when neither --data-dir nor ${PQSAR_DIR_ENV} is set"
    missing = [f"{name} ({role})" for role, name in PQSAR_FILES.items() if not (where / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the pQSAR data files are not in {where.resolve()} ({how}); missing: {', '.join(missing)}. "
            f"They are {PQSAR_SOURCE} (not shipped with assayfew): download them and put all three in that "
            f"folder, or point --data-dir or ${PQSAR_DIR_ENV} at the folder that holds them.")
    return where


def pqsar_taskset(data_dir: Path, *, spec: FingerprintSpec = FingerprintSpec(), cache: bool = True,
                  standardize: bool = True) -> TaskSet:
    """The pQSAR SI files in `data_dir` as a TaskSet (the reader names any missing file and where to get it)."""
    return build_taskset(Path(data_dir), "pqsar", spec=spec, cache=cache, standardize=standardize)[0]


def experiment_data(*, group: int | None, data_dir: Path | None, corpus: Sequence[Path] | None,
                    fmt: str | None, split: Path | None,
                    spec: FingerprintSpec = FingerprintSpec(), standardize: bool = True) -> tuple[TaskSet, Split]:
    """The corpus and split an experiment names: a pQSAR group, or any corpus with a split file."""
    if group is not None:
        split_def = pqsar_group_split(group)  # an invalid group is rejected before anything is read
        return pqsar_taskset(pqsar_data_dir(data_dir), spec=spec, standardize=standardize), split_def
    if corpus:
        if split is None:
            raise ValueError("--corpus needs --split SPLIT.json")
        return load_taskset(corpus, fmt, spec=spec, standardize=standardize), Split.load(split)
    raise ValueError("give --group N --data-dir DIR, or --corpus SOURCE --split SPLIT.json")
