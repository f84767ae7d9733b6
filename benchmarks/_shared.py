"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import sys
from pathlib import Path

from assayfew.experiment import load_taskset
from assayfew.paths import shared_data_dir
from assayfew.tasks import TaskSet

CORPORA = ("simpd_chembl32_ki", "chembl28_ycu", "kiba/kiba_long.csv.gz")


def shared_taskset(cache: Path) -> TaskSet:
    """The shared corpora (SIMPD ChEMBL32 Ki + ChEMBL28 kinase sets + KIBA) as one TaskSet, from the task
    cache at `cache` (built there from ../shared/data when missing; exits when that is absent too)."""
    cache = Path(cache)
    if (cache / "index.json").exists():
        return load_taskset([cache])
    data_dir = shared_data_dir()
    if not data_dir.exists():
        sys.exit(f"shared data not found at {data_dir} (and no task cache at {cache})")
    taskset = load_taskset([data_dir / c for c in CORPORA])
    taskset.save(cache)
    return taskset
