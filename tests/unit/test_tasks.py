"""TaskSet (construction, subset, concat, cache round trip) and EpisodeSampler invariants."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from assayfew.chem import FingerprintSpec
from assayfew.tasks import EpisodeSampler, Task, TaskCacheError, TaskSet

SPEC = FingerprintSpec(radius=2, bits=32)


def _prepared(seed: int = 0) -> SimpleNamespace:
    """A tiny prepared corpus: assay 'split' (30 TRN + 10 TST), 'big' (100 unsplit), 'tiny' (5)."""
    rng = np.random.default_rng(seed)
    n_fp = 120
    fingerprints = (rng.random((n_fp, SPEC.bits)) < 0.3).astype(np.uint8)
    rows = []
    for j in range(40):
        rows.append(("split", j, "TRN" if j < 30 else "TST", "kinase"))
    for j in range(100):
        rows.append(("big", 20 + j, "", "gpcr"))
    for j in range(5):
        rows.append(("tiny", j, "", ""))
    rng.shuffle(rows)  # interleaved assays: from_prepared must group them
    table = pd.DataFrame(
        {
            "assay_id": [r[0] for r in rows],
            "compound_id": [f"C{r[1]}" for r in rows],
            "smiles": ["C"] * len(rows),
            "value": rng.normal(6, 1, len(rows)),
            "n_replicates": 1,
            "split": [r[2] for r in rows],
            "censored": [i % 7 == 0 for i in range(len(rows))],
            "family": [r[3] for r in rows],
            "fp_row": [r[1] for r in rows],
        }
    )
    return SimpleNamespace(table=table, fingerprints=fingerprints, spec=SPEC, report=None, standardized=True)


@pytest.fixture()
def taskset() -> TaskSet:
    return TaskSet.from_prepared(_prepared())


def test_from_prepared_groups_assays(taskset: TaskSet) -> None:
    prepared = _prepared()
    table = prepared.table
    assert len(taskset) == 3 and set(taskset.assay_ids) == {"split", "big", "tiny"}
    assert taskset.n_measurements == len(table)
    for assay in taskset.assay_ids:
        i = taskset.index(assay)
        x, y, split = taskset.assay(i)
        sub = table[table.assay_id == assay]
        assert x.dtype == np.float32 and y.dtype == np.float32 and x.shape == (len(sub), SPEC.bits)
        assert sorted(y.tolist()) == pytest.approx(sorted(sub.value.astype(np.float32).tolist()))
        # x rows are the fingerprints of the compounds, paired with their values
        by_value = {np.float32(v): r for v, r in zip(sub.value, sub.fp_row)}
        for xi, yi in zip(x, y):
            assert np.array_equal(xi, prepared.fingerprints[by_value[yi]])
    x, y, split = taskset.assay(taskset.index("split"))
    assert (split == 1).sum() == 30 and (split == 2).sum() == 10
    assert taskset.families[taskset.index("big")] == "gpcr"
    assert taskset.censored.sum() == table.censored.sum()
    with pytest.raises(KeyError, match="nope"):
        taskset.index("nope")


def test_save_load_roundtrip(taskset: TaskSet, tmp_path: Path) -> None:
    taskset.save(tmp_path / "cache")
    loaded = TaskSet.load(tmp_path / "cache")
    assert loaded.assay_ids == taskset.assay_ids and loaded.families == taskset.families
    assert loaded.spec == taskset.spec
    for name in ("fingerprints", "offsets", "fp_rows", "values", "split", "censored"):
        a, b = getattr(loaded, name), getattr(taskset, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_load_errors_are_clear(tmp_path: Path, taskset: TaskSet) -> None:
    with pytest.raises(TaskCacheError, match="not a task cache"):
        TaskSet.load(tmp_path)
    taskset.save(tmp_path)
    (tmp_path / "arrays.npz").write_bytes(b"garbage")
    with pytest.raises(TaskCacheError, match="corrupt"):
        TaskSet.load(tmp_path)


def test_subset_and_concat(taskset: TaskSet) -> None:
    sub = taskset.subset(["tiny", "split"])
    assert sub.assay_ids == ["tiny", "split"] and len(sub.fingerprints) == 40  # tiny shares rows 0-4 with split
    for a in sub.assay_ids:
        for got, want in zip(sub.assay(sub.index(a)), taskset.assay(taskset.index(a))):
            assert np.array_equal(got, want)
    both = TaskSet.concat([taskset, sub], prefixes=["one", "two"])
    assert len(both) == 5 and both.assay_ids[3:] == ["two/tiny", "two/split"]
    for a in sub.assay_ids:
        for got, want in zip(both.assay(both.index(f"two/{a}")), sub.assay(sub.index(a))):
            assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="duplicate"):
        TaskSet.concat([taskset, sub])
    other = TaskSet.from_prepared(SimpleNamespace(**{**vars(_prepared()), "spec": FingerprintSpec(3, 32)}))
    with pytest.raises(ValueError, match="spec"):
        TaskSet.concat([taskset, other], prefixes=["a", "b"])


def _check(task: Task, sampler: EpisodeSampler, taskset: TaskSet) -> None:
    x, y, split = taskset.assay(taskset.index(task.assay_id))
    assert task.support_x.shape[0] == len(task.support_y) and task.query_x.shape[0] == len(task.query_y)
    assert task.support_x.dtype == np.float32 and task.query_y.dtype == np.float32
    # compounds of the assay are distinct rows, so fingerprint+value identify them
    key = lambda xs, ys: {(r.tobytes(), float(v)) for r, v in zip(xs, ys)}  # noqa: E731
    s, q = key(task.support_x, task.support_y), key(task.query_x, task.query_y)
    assert len(s) == len(task.support_y) and len(q) == len(task.query_y)
    assert not s & q
    assert len(task.query_y) >= sampler.min_query
    if task.assay_id == "split" and sampler.use_split:
        assert s <= key(x[split == 1], y[split == 1]) and q <= key(x[split == 2], y[split == 2])
        assert len(task.support_y) == min(30, sampler.max_support or 30)
        assert len(task.query_y) == min(10, sampler.max_query or 10)
    else:
        lo, hi = sampler.support_range
        assert lo <= len(task.support_y) <= hi
        assert len(task.query_y) <= sampler.query_range[1]


def test_sampler_invariants(taskset: TaskSet) -> None:
    sampler = EpisodeSampler(taskset, support_range=(8, 40), query_range=(8, 30), max_support=20, seed=1)
    assert sorted(taskset.assay_ids[i] for i in sampler.eligible()) == ["big", "split"]
    tasks = sampler.sample(60)
    assert {t.assay_id for t in tasks} == {"big", "split"}
    for t in tasks:
        _check(t, sampler, taskset)
    sizes = {len(t.support_y) for t in tasks if t.assay_id == "big"}
    assert len(sizes) > 3  # K varies within the range


def test_sampler_reproducible(taskset: TaskSet) -> None:
    def run(seed: int) -> list[Task]:
        return EpisodeSampler(taskset, support_range=(4, 16), seed=seed).sample(10)

    a, b, c = run(5), run(5), run(6)
    for ta, tb in zip(a, b):
        assert ta.assay_id == tb.assay_id
        assert np.array_equal(ta.support_y, tb.support_y) and np.array_equal(ta.query_x, tb.query_x)
    assert any(not np.array_equal(ta.support_y, tc.support_y) for ta, tc in zip(a, c))


def test_sampler_without_split_and_small_assays(taskset: TaskSet) -> None:
    sampler = EpisodeSampler(taskset, support_range=(30, 64), query_range=(16, 64), use_split=False, min_query=4)
    i = taskset.index("split")  # 40 compounds: K capped at 36 so 4 remain for the query
    for seed in range(20):
        t = sampler.episode(i, np.random.default_rng(seed))
        assert 30 <= len(t.support_y) <= 36 and 4 <= len(t.query_y) <= 10
        _check(t, sampler, taskset)
    with pytest.raises(ValueError, match="too small"):
        sampler.episode(taskset.index("tiny"), np.random.default_rng(0))
    assert taskset.index("tiny") not in sampler.eligible()
    with pytest.raises(ValueError):
        EpisodeSampler(taskset, support_range=(10, 5))


def test_local_pool_draws_episodes_from_the_anchors_nearest_compounds() -> None:
    """With local_pool = P, an unsplit assay's support and query come from the P compounds nearest a random
    anchor: with two chemical series (disjoint bits), every episode stays inside one series, and both series
    get drawn. Assays of at most P compounds, and split assays, are drawn as before; P < 0 is an error."""
    from tests.conftest import make_synthetic_taskset

    taskset = make_synthetic_taskset(n_assays=3, bits=128, n_per_assay=300, seed=2)
    rng = np.random.default_rng(0)
    series = np.arange(len(taskset.fingerprints)) % 2  # series 0 sets bits 0..63 only, series 1 bits 64..127
    fps = (rng.random(taskset.fingerprints.shape) < 0.2).astype(np.uint8)
    fps[series == 0, 64:] = 0
    fps[series == 1, :64] = 0
    taskset.fingerprints[:] = fps
    in_assay = series[taskset.fp_rows[taskset.offsets[1]:taskset.offsets[2]]]
    assert min(np.sum(in_assay == 0), np.sum(in_assay == 1)) > 100
    local = EpisodeSampler(taskset, support_range=(16, 32), query_range=(16, 32), local_pool=100)
    seen = set()
    for seed in range(20):
        support, query = local.episode_rows(1, np.random.default_rng(seed))
        rows = np.concatenate([support, query])
        assert len(set(rows.tolist())) == len(rows)
        assert np.all((rows >= taskset.offsets[1]) & (rows < taskset.offsets[2]))
        kinds = set(series[taskset.fp_rows[rows]].tolist())
        assert len(kinds) == 1, kinds
        seen |= kinds
    assert seen == {0, 1}
    plain = EpisodeSampler(taskset, support_range=(16, 32), query_range=(16, 32))
    mixed = set(series[taskset.fp_rows[np.concatenate(plain.episode_rows(1, np.random.default_rng(0)))]].tolist())
    assert mixed == {0, 1}
    whole = EpisodeSampler(taskset, support_range=(16, 32), query_range=(16, 32), local_pool=300)
    for seed in range(3):
        a = whole.episode_rows(0, np.random.default_rng(seed))
        b = plain.episode_rows(0, np.random.default_rng(seed))
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    split = make_synthetic_taskset(n_assays=2, bits=64, n_per_assay=80, seed=1, with_split=True)
    for seed in range(3):
        a = EpisodeSampler(split, local_pool=10).episode_rows(0, np.random.default_rng(seed))
        b = EpisodeSampler(split).episode_rows(0, np.random.default_rng(seed))
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="local_pool"):
        EpisodeSampler(taskset, local_pool=-1)


def test_empty_subset_roundtrip(taskset: TaskSet, tmp_path: Path) -> None:
    empty = taskset.subset([])
    assert len(empty) == 0 and empty.fingerprints.shape == (0, SPEC.bits)
    empty.save(tmp_path)
    assert len(TaskSet.load(tmp_path)) == 0


def test_sampler_weights_steer_assay_choice_and_sources_survive_subset_concat_save(tmp_path):
    from collections import Counter

    from assayfew.tasks import EpisodeSampler, TaskSet
    from tests.conftest import make_synthetic_taskset

    a, b = make_synthetic_taskset(n_assays=4, seed=1), make_synthetic_taskset(n_assays=2, seed=2)
    a.sources, b.sources = ["big"] * 4, ["small"] * 2
    both = TaskSet.concat([a, b], prefixes=["a", "b"])
    assert both.sources == ["big"] * 4 + ["small"] * 2
    both.save(tmp_path / "c")
    assert TaskSet.load(tmp_path / "c").sources == both.sources
    assert both.subset(["b/A1", "a/A0"]).sources == ["small", "big"]
    weights = [0.0] * 4 + [1.0] * 2
    picked = Counter(t.assay_id for t in EpisodeSampler(both, support_range=(8, 16), weights=weights,
                                                        seed=0).sample(50))
    assert set(picked) <= {"b/A0", "b/A1"} and len(picked) == 2


def test_standardisation_choice_is_recorded_and_not_mixed(tmp_path):
    from assayfew.chem import FingerprintSpec as Spec
    from assayfew.experiment import load_taskset
    from assayfew.train import TrainConfig, model_config

    raw = TaskSet.from_prepared(SimpleNamespace(**{**vars(_prepared()), "standardized": False}))
    std = TaskSet.from_prepared(_prepared(1))
    assert std.standardized is True and std.subset(std.assay_ids[:1]).standardized is True
    raw.save(tmp_path / "raw")
    assert TaskSet.load(tmp_path / "raw").standardized is False
    with pytest.raises(ValueError, match="with and without standardisation"):
        TaskSet.concat([raw, std], prefixes=["a", "b"])
    with pytest.raises(ValueError, match="built without standardisation; pass --no-standardize"):
        load_taskset([tmp_path / "raw"], standardize=True)
    assert load_taskset([tmp_path / "raw"], standardize=False).standardized is False
    fingerprint = model_config(TrainConfig(), Spec(2, 32), raw)["fingerprint"]
    assert fingerprint == {"radius": 2, "bits": 32, "standardize": False}


def test_split_sizes_range_draws_varied_sizes_from_each_side(taskset: TaskSet) -> None:
    """split_sizes="range": a split assay's support is K of its TRN rows with K uniform in support_range
    (limited by the TRN rows there are), its query Q of its TST rows; "cap" keeps every row up to the maxima."""
    i = taskset.index("split")  # 30 TRN, 10 TST rows
    x, y, split = taskset.assay(i)
    trn = {(r.tobytes(), float(v)) for r, v in zip(x[split == 1], y[split == 1])}
    tst = {(r.tobytes(), float(v)) for r, v in zip(x[split == 2], y[split == 2])}
    ranged = EpisodeSampler(taskset, support_range=(5, 40), query_range=(4, 8), split_sizes="range", seed=1)
    sizes = set()
    for seed in range(40):
        t = ranged.episode(i, np.random.default_rng(seed))
        assert {(r.tobytes(), float(v)) for r, v in zip(t.support_x, t.support_y)} <= trn
        assert {(r.tobytes(), float(v)) for r, v in zip(t.query_x, t.query_y)} <= tst
        assert 5 <= len(t.support_y) <= 30 and 4 <= len(t.query_y) <= 8
        sizes.add((len(t.support_y), len(t.query_y)))
    assert len({s for s, _ in sizes}) > 5 and len({q for _, q in sizes}) > 2
    capped = EpisodeSampler(taskset, support_range=(5, 40), query_range=(4, 8), seed=1)
    assert all(len(capped.episode(i, np.random.default_rng(s)).support_y) == 30 for s in range(5))
    with pytest.raises(ValueError, match="split_sizes"):
        EpisodeSampler(taskset, split_sizes="all")
