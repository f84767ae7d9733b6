"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import sys
from pathlib import Path

from assayfew.chem import FingerprintSpec
from assayfew.experiment import load_taskset
from assayfew.paths import shared_data_dir
from assayfew.tasks import TaskSet

CORPORA = ("simpd_chembl32_ki", "chembl28_ycu", "kiba/kiba_long.csv.gz")


def default_cache(spec: FingerprintSpec) -> Path:
    """Where the shared corpora's task cache for `spec` lives by default (one per fingerprint)."""
    if spec == FingerprintSpec():
        return Path("cache/shared_tasks")
    features = f"_f{spec.feature_bits}" if spec.feature_bits else ""
    return Path(f"cache/shared_tasks_r{spec.radius}_{spec.bits}{features}")


def shared_taskset(cache: Path | None, spec: FingerprintSpec = FingerprintSpec()) -> TaskSet:
    """The shared corpora (SIMPD ChEMBL32 Ki + ChEMBL28 kinase sets + KIBA) as one TaskSet with `spec`'s
    fingerprints, from the task cache at `cache` (default: `default_cache(spec)`; built there from
    ../shared/data when missing; exits when that is absent too, or when the cache has other fingerprints)."""
    cache = Path(cache) if cache is not None else default_cache(spec)
    if (cache / "index.json").exists():
        taskset = load_taskset([cache])
        if taskset.spec != spec:
            sys.exit(f"{cache}: task cache of fingerprints {taskset.spec.to_dict()}; the model needs {spec.to_dict()} "
                     "(pass another --cache)")
        return taskset
    data_dir = shared_data_dir()
    if not data_dir.exists():
        sys.exit(f"shared data not found at {data_dir} (and no task cache at {cache})")
    taskset = load_taskset([data_dir / c for c in CORPORA], spec=spec)
    taskset.save(cache)
    return taskset
