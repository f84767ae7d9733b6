"""Split files, resolve rules, seeded target-grouped splitting, the shipped split files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assayfew.paths import assays_dir
from assayfew.splits import (Split, SplitError, grouped_split, make_shared_heldout_split, shared_groups,
                             target_folds, target_of)

SIMPD_LIKE = [f"CHEMBL{t}-{r}" for t in range(100, 140) for r in range(1, 1 + (t % 3) + 1)]


def test_target_of_strips_replicate_suffix() -> None:
    assert target_of("CHEMBL219-1") == target_of("CHEMBL219-2") == "CHEMBL219"
    assert target_of("CHEMBL219") == "CHEMBL219"
    assert target_of("688643") == "688643"
    assert target_of("A-B-12") == "A-B"


def test_grouped_split_reproducible_and_targets_on_one_side() -> None:
    a = grouped_split(SIMPD_LIKE, n_val=10, n_test=16, seed=3)
    b = grouped_split(list(reversed(SIMPD_LIKE)), n_val=10, n_test=16, seed=3)
    assert a.to_dict() == b.to_dict()
    c = grouped_split(SIMPD_LIKE, n_val=10, n_test=16, seed=4)
    assert c.test != a.test
    assert len(a.test) == 16 and len(a.val) == 10
    assert sorted(a.train + a.val + a.test) == sorted(SIMPD_LIKE)
    sides: dict[str, set[str]] = {}
    for side in ("train", "val", "test"):
        for assay in getattr(a, side):
            sides.setdefault(target_of(assay), set()).add(side)
    assert all(len(s) == 1 for s in sides.values())


def test_grouped_split_fractions_and_eligibility() -> None:
    ids = [str(i) for i in range(100)]
    s = grouped_split(ids, n_val=0.1, n_test=0.2, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (70, 10, 20)
    s = grouped_split(ids, n_val=5, n_test=5, seed=0, eligible=lambda a: int(a) < 20)
    assert all(int(a) < 20 for a in s.val + s.test)
    with pytest.raises(SplitError):
        grouped_split(ids, n_val=1.5, n_test=1, seed=0)


def test_load_save_roundtrip_ignores_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": [1, 2], "val": ["3"], "test": [4], "seed": 7, "made_by": "x"}))
    s = Split.load(path)
    assert (s.train, s.val, s.test) == (["1", "2"], ["3"], ["4"])
    assert s.info == {"seed": 7, "made_by": "x"}
    s.save(tmp_path / "t.json")
    assert Split.load(tmp_path / "t.json") == s


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"test": "abc"}', '{"n_val": -1}'])
def test_load_malformed_is_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SplitError, match="bad.json"):
        Split.load(path)
    with pytest.raises(SplitError, match="not found"):
        Split.load(tmp_path / "missing.json")


def test_resolve_empty_train_means_rest_and_reports_unknown() -> None:
    corpus = [f"a{i}" for i in range(10)]
    s = Split(test=["a1", "a2", "zz"], val=["a3"]).resolve(corpus)
    assert s.test == ["a1", "a2"] and s.val == ["a3"]
    assert s.train == [a for a in corpus if a not in {"a1", "a2", "a3"}]
    assert s.unknown == ["zz"]
    assert s.unassigned == []


def test_resolve_explicit_train_reports_unassigned() -> None:
    s = Split(train=["a0"], test=["a1"]).resolve(["a0", "a1", "a2"])
    assert s.train == ["a0"] and s.unassigned == ["a2"]


def test_resolve_draws_n_val_reproducibly_from_non_test() -> None:
    corpus = [str(i) for i in range(200)]
    base = Split(test=[str(i) for i in range(20)], n_val=30, val_seed=5)
    r1, r2 = base.resolve(corpus), base.resolve(list(reversed(corpus)))
    assert sorted(r1.val) == sorted(r2.val) and len(r1.val) == 30
    assert not set(r1.val) & set(r1.test)
    assert sorted(r1.train + r1.val + r1.test, key=int) == corpus
    other = Split(test=base.test, n_val=30, val_seed=6).resolve(corpus)
    assert sorted(other.val) != sorted(r1.val)
    # an explicit val list wins over n_val
    assert Split(test=["0"], val=["1"], n_val=30).resolve(corpus).val == ["1"]
    with pytest.raises(SplitError, match="n_val"):
        Split(test=["0"], n_val=500).resolve(corpus)


def test_resolve_rejects_id_on_two_sides() -> None:
    with pytest.raises(SplitError, match="both"):
        Split(val=["a"], test=["a"]).resolve(["a", "b"])


def test_shipped_pqsar_groups() -> None:
    for g in range(1, 5):
        s = Split.load(assays_dir() / "pqsar" / f"group{g}.json")
        assert len(set(s.test)) == 100 and s.train == [] and s.val == []
        assert (s.n_val, s.val_seed) == (76, 0)
        corpus = s.test + [f"x{i}" for i in range(300)]
        r = s.resolve(corpus)
        assert len(r.val) == 76 and len(r.train) == 224 and not r.unknown


def test_shipped_pqsar_groups_match_shared_lists(shared_data: Path) -> None:
    for g in range(1, 5):
        ids = (shared_data / "pqsar_groups" / f"group{g}_meta_test.txt").read_text().split()
        assert Split.load(assays_dir() / "pqsar" / f"group{g}.json").test == ids


def test_shipped_shared_heldout_regenerates(shared_data: Path) -> None:
    shipped = Split.load(assays_dir() / "shared_heldout.json")
    made = make_shared_heldout_split(shared_data, seed=shipped.info["seed"])
    assert made.to_dict() == shipped.to_dict()
    assert 14 <= len(shipped.test) <= 16 and 8 <= len(shipped.val) <= 10
    assert all(a.startswith("CHEMBL") and "-" in a for a in shipped.test + shipped.val)
    held_targets = {target_of(a) for a in shipped.test + shipped.val}
    assert not held_targets & {target_of(a) for a in shipped.train}
    assert "CHEMBL240-1" in shipped.train and "hERG" in shipped.train  # hERG never held out
    assert not {"Caco2_permeability", "HLM_metabolic_stability"} & set(shipped.train)
    assert "davis" in shipped.info["excluded"]


def test_shipped_trainval_split_is_shared_heldout_with_validation_trained() -> None:
    """The final fit's split: the same test targets, the validation datasets moved to the training side."""
    heldout = Split.load(assays_dir() / "shared_heldout.json")
    trainval = Split.load(assays_dir() / "shared_trainval.json")
    assert trainval.train == heldout.train + heldout.val and trainval.val == []
    assert trainval.test == heldout.test and not set(trainval.test) & set(trainval.train)
    assert trainval.info["excluded"] == heldout.info["excluded"]


def test_target_folds_hold_out_whole_groups_once_each() -> None:
    ids = [f"T{t}-{r}" for t in range(9) for r in range(1, 2 + t % 3)] + ["KIN1", "KIN2"]
    split = Split(train=ids[:-5] + ["KIN1", "KIN2"], val=ids[-5:-2], test=["X-1"], info={"seed": 0})
    eligible = lambda a: a.startswith("T")  # noqa: E731
    folds = target_folds(split, 3, seed=1, eligible=eligible)
    pool = set(split.train) | set(split.val)
    held = [a for f in folds for a in f.val]
    assert sorted(held) == sorted(a for a in pool if eligible(a))  # every eligible assay held out exactly once
    for k, fold in enumerate(folds):
        assert set(fold.train) == pool - set(fold.val) and fold.test == ["X-1"]
        assert {"KIN1", "KIN2"} <= set(fold.train)  # never held out
        assert fold.info["fold"] == k and fold.info["n_folds"] == 3 and fold.info["seed"] == 0
        groups = {target_of(a) for a in fold.val}
        assert all(target_of(a) not in groups for a in fold.train)  # whole targets on one side
    sizes = sorted(len(f.val) for f in folds)
    assert sizes[-1] - sizes[0] <= 3  # balanced to within the largest group
    again = target_folds(split, 3, seed=1, eligible=eligible)
    assert [f.to_dict() for f in again] == [f.to_dict() for f in folds]
    assert [f.val for f in target_folds(split, 3, seed=2, eligible=eligible)] != [f.val for f in folds]
    with pytest.raises(SplitError, match="n_folds"):
        target_folds(split, 1, seed=0)
    with pytest.raises(SplitError, match="cannot fill"):
        target_folds(split, 20, seed=0, eligible=eligible)


def test_shared_target_folds_cover_the_holdable_simpd_datasets(shared_data: Path) -> None:
    shared = shared_groups(shared_data)
    heldout = Split.load(assays_dir() / "shared_heldout.json")
    folds = target_folds(heldout, 5, seed=0, group_fn=shared.group.__getitem__,
                         eligible=shared.holdable.__contains__)
    held = sorted(a for f in folds for a in f.val)
    assert held == sorted(a for a in heldout.train + heldout.val if a in shared.holdable)
    assert not set(held) & set(heldout.test) and "CHEMBL240-1" not in held  # hERG is also a chembl28 set
