"""Task cache of the real SIMPD corpus (skipped without the shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assayfew.paths import assays_dir
from assayfew.splits import Split
from assayfew.tasks import EpisodeSampler, TaskSet, build_taskset


def test_simpd_task_cache(shared_data: Path, tmp_path: Path) -> None:
    taskset, summary = build_taskset(shared_data / "simpd_chembl32_ki", "dir")  # user fingerprint cache
    assert len(taskset) == 69 and summary["n_assays"] == 69
    assert set(taskset.assay_ids) == {p.stem for p in (shared_data / "simpd_chembl32_ki").glob("*.csv")}
    assert summary["n_trn"] > 0 and summary["n_tst"] > 0
    assert summary["n_trn"] + summary["n_tst"] == summary["n_measurements"]  # SIMPD: every row split
    assert all(isinstance(r["row"], int) for r in summary["rejected"])

    taskset.save(tmp_path)
    loaded = TaskSet.load(tmp_path)
    assert loaded.assay_ids == taskset.assay_ids
    assert np.array_equal(loaded.fingerprints, taskset.fingerprints)
    assert np.array_equal(loaded.values, taskset.values)

    split = Split.load(assays_dir() / "shared_heldout.json").resolve(taskset.assay_ids)
    assert (len(split.val), len(split.test)) == (10, 16) and len(split.train) == 43
    test_set = taskset.subset(split.test)
    sampler = EpisodeSampler(test_set, max_support=64, max_query=64, seed=0)
    assert len(sampler.eligible()) == 16
    for task in sampler.sample(8):
        x, y, s = test_set.assay(test_set.index(task.assay_id))
        assert 0 < len(task.support_y) <= min(64, int((s == 1).sum()))
        assert 0 < len(task.query_y) <= min(64, int((s == 2).sum()))
