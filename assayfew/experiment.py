"""Assemble the data of an experiment: corpora → one TaskSet → train/val/test sides of a split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assayfew.chem import FingerprintSpec
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


def pqsar_taskset(data_dir: Path, *, spec: FingerprintSpec = FingerprintSpec(), cache: bool = True,
                  standardize: bool = True) -> TaskSet:
    """The pQSAR SI files in `data_dir` as a TaskSet (the reader names any missing file and where to get it)."""
    return build_taskset(Path(data_dir), "pqsar", spec=spec, cache=cache, standardize=standardize)[0]


def experiment_data(*, group: int | None, data_dir: Path | None, corpus: Sequence[Path] | None,
                    fmt: str | None, split: Path | None,
                    spec: FingerprintSpec = FingerprintSpec(), standardize: bool = True) -> tuple[TaskSet, Split]:
    """The corpus and split an experiment names: a pQSAR group, or any corpus with a split file."""
    if group is not None:
        if data_dir is None:
            raise ValueError("--group needs --data-dir (the folder with the pQSAR SI files)")
        return pqsar_taskset(data_dir, spec=spec, standardize=standardize), pqsar_group_split(group)
    if corpus:
        if split is None:
            raise ValueError("--corpus needs --split SPLIT.json")
        return load_taskset(corpus, fmt, spec=spec, standardize=standardize), Split.load(split)
    raise ValueError("give --group N --data-dir DIR, or --corpus SOURCE --split SPLIT.json")
