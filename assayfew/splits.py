"""Assay-level train/val/test splits: split files, seeded target-grouped splitting.

A split file is JSON ``{"train": [...], "val": [...], "test": [...]}`` with assay ids as strings.
Partial files are completed by :meth:`Split.resolve`:

* empty or missing ``train`` means "every corpus assay not in val/test";
* ``"n_val": N`` (with optional ``"val_seed"``) and an empty ``val`` means "choose N ids reproducibly
  from the non-test assays" (used for the pQSAR groups, whose validation lists were not published).

Other keys (``seed``, ``made_by``, ``excluded``, ...) are kept in :attr:`Split.info` and otherwise ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assayfew.io import write_json

SIDES = ("train", "val", "test")
_KNOWN_KEYS = {*SIDES, "n_val", "val_seed", "unknown", "unassigned"}
_REPLICATE_SUFFIX = re.compile(r"-\d+$")


class SplitError(ValueError):
    """A split file or split request that cannot be honoured."""


def target_of(assay_id: str) -> str:
    """The target an assay id belongs to: SIMPD names ``CHEMBL219-1``/``CHEMBL219-2`` -> ``CHEMBL219``."""
    return _REPLICATE_SUFFIX.sub("", str(assay_id))


def _id_list(value: Any, key: str, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SplitError(f"{where}: key {key!r} must be a list of assay ids, got {type(value).__name__}")
    return [str(v) for v in value]


@dataclass
class Split:
    """Assay ids per side. ``n_val``/``val_seed`` describe a validation set still to be drawn."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    n_val: int | None = None
    val_seed: int | None = None
    #: ids named by the file but absent from the corpus (filled by :meth:`resolve`)
    unknown: list[str] = field(default_factory=list)
    #: corpus assays on no side (only possible when ``train`` is explicit; filled by :meth:`resolve`)
    unassigned: list[str] = field(default_factory=list)
    #: other keys of the file (seed, made_by, excluded, ...), kept verbatim, not interpreted
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "split") -> Split:
        """Build from a parsed split file; unknown keys go to :attr:`info`."""
        if not isinstance(data, dict):
            raise SplitError(f"{where}: a split file must be a JSON object with train/val/test lists")
        n_val = data.get("n_val")
        if n_val is not None and (isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 0):
            raise SplitError(f"{where}: 'n_val' must be a non-negative integer, got {n_val!r}")
        val_seed = data.get("val_seed")
        if val_seed is not None and (isinstance(val_seed, bool) or not isinstance(val_seed, int)):
            raise SplitError(f"{where}: 'val_seed' must be an integer, got {val_seed!r}")
        return cls(
            train=_id_list(data.get("train"), "train", where),
            val=_id_list(data.get("val"), "val", where),
            test=_id_list(data.get("test"), "test", where),
            n_val=n_val,
            val_seed=val_seed,
            unknown=_id_list(data.get("unknown"), "unknown", where),
            unassigned=_id_list(data.get("unassigned"), "unassigned", where),
            info={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        )

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split file (clear :class:`SplitError` for unreadable/malformed files)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SplitError(f"{path}: split file not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SplitError(f"{path}: cannot read split file ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise SplitError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: info keys first, then the sides (and draw/report keys when set)."""
        out: dict[str, Any] = dict(self.info)
        if self.n_val is not None:
            out["n_val"] = self.n_val
        if self.val_seed is not None:
            out["val_seed"] = self.val_seed
        if self.unknown:
            out["unknown"] = list(self.unknown)
        if self.unassigned:
            out["unassigned"] = list(self.unassigned)
        out.update(train=list(self.train), val=list(self.val), test=list(self.test))
        return out

    def save(self, path: str | Path) -> None:
        """Write as indented JSON, atomically."""
        write_json(Path(path), self.to_dict())

    # ------------------------------------------------------------- queries
    def side_of(self) -> dict[str, str]:
        """Map assay id -> side name."""
        return {a: side for side in SIDES for a in getattr(self, side)}

    # ------------------------------------------------------------- resolve
    def resolve(self, all_assay_ids: Iterable[str], *, seed: int = 0) -> Split:
        """Complete a (partial) split against a corpus' assay ids.

        Ids not in the corpus are dropped and listed in ``unknown``; an empty ``train`` becomes every
        remaining assay; ``n_val`` with an empty ``val`` draws that many non-test assays with
        ``val_seed`` (else ``seed``). Raises :class:`SplitError` when one id is on two sides or when
        fewer than ``n_val`` assays are available.
        """
        corpus = [str(a) for a in all_assay_ids]
        known = set(corpus)
        sides = {s: list(dict.fromkeys(getattr(self, s))) for s in SIDES}
        for i, a in enumerate(SIDES):
            for b in SIDES[i + 1 :]:
                both = sorted(set(sides[a]) & set(sides[b]))
                if both:
                    raise SplitError(f"assay ids on both {a!r} and {b!r}: {', '.join(both[:10])}")
        unknown = [x for s in SIDES for x in sides[s] if x not in known]
        test = [x for x in sides["test"] if x in known]
        val = [x for x in sides["val"] if x in known]
        explicit_train = bool(sides["train"])
        taken = set(test) | set(val)
        if explicit_train:
            train = [x for x in sides["train"] if x in known]
        else:
            train = [x for x in corpus if x not in taken]
        val_seed = self.val_seed if self.val_seed is not None else seed
        if not val and self.n_val:
            pool = sorted(set(train))
            if len(pool) < self.n_val:
                raise SplitError(f"n_val={self.n_val} but only {len(pool)} non-test assays are available")
            rng = np.random.default_rng(val_seed)
            chosen = set(pool[j] for j in rng.permutation(len(pool))[: self.n_val])
            val = [x for x in train if x in chosen]
            train = [x for x in train if x not in chosen]
        on_a_side = set(train) | set(val) | set(test)
        unassigned = [x for x in corpus if x not in on_a_side] if explicit_train else []
        return Split(
            train=train,
            val=val,
            test=test,
            n_val=self.n_val,
            val_seed=val_seed if self.n_val else self.val_seed,
            unknown=list(dict.fromkeys(unknown)),
            unassigned=list(dict.fromkeys(unassigned)),
            info=dict(self.info),
        )


# ------------------------------------------------------------------ splitting
def _count(n: int | float, total: int, name: str) -> int:
    if isinstance(n, bool):
        raise SplitError(f"{name} must be a count or a fraction, got {n!r}")
    if isinstance(n, float):
        if not 0.0 <= n < 1.0:
            raise SplitError(f"{name} as a fraction must be in [0, 1), got {n}")
        return int(round(n * total))
    if n < 0:
        raise SplitError(f"{name} must be >= 0, got {n}")
    return int(n)


def grouped_split(
    assay_ids: Sequence[str],
    *,
    n_val: int | float,
    n_test: int | float,
    seed: int,
    group_fn: Callable[[str], str] = target_of,
    eligible: Callable[[str], bool] | None = None,
) -> Split:
    """Seeded split that keeps every assay of one group (target) on the same side.

    ``n_val``/``n_test`` are assay counts (int) or fractions of all assays (float); groups are taken
    whole in a seeded random order while they fit, so sides get at most (usually exactly) that many.
    Only groups whose assays all pass ``eligible`` may go to val/test; everything else is train.
    The result depends only on the set of ids and the seed (not their order). Lists are sorted.
    """
    ids = sorted(set(str(a) for a in assay_ids))
    groups: dict[str, list[str]] = {}
    for a in ids:
        groups.setdefault(str(group_fn(a)), []).append(a)
    want_test = _count(n_test, len(ids), "n_test")
    want_val = _count(n_val, len(ids), "n_val")
    candidates = sorted(k for k, members in groups.items() if eligible is None or all(map(eligible, members)))
    order = [candidates[j] for j in np.random.default_rng(seed).permutation(len(candidates))]
    chosen: dict[str, list[str]] = {"test": [], "val": []}
    used: set[str] = set()
    for side, want in (("test", want_test), ("val", want_val)):
        for key in order:
            if len(chosen[side]) >= want:
                break
            if key in used or len(chosen[side]) + len(groups[key]) > want:
                continue
            chosen[side].extend(groups[key])
            used.add(key)
    held = set(chosen["test"]) | set(chosen["val"])
    return Split(
        train=[a for a in ids if a not in held],
        val=sorted(chosen["val"]),
        test=sorted(chosen["test"]),
    )


# ---------------------------------------------------- the shipped shared split
#: chembl28_ycu potency sets -> a group key shared with the same target elsewhere (UniProt, or the
#: SIMPD target for hERG) so one target never straddles two sides.
CHEMBL28_POTENCY = {
    "ABL": "P00519",
    "EGFR": "P00533",
    "EPHB4": "P54760",
    "ERBB2": "P04626",
    "ERBB4": "Q15303",
    "FGFR1": "P11362",
    "HCK": "P08631",
    "LCK": "P06239",
    "PDGFRbeta": "P09619",
    "SRC": "P12931",
    "VEGFR2": "P35968",
    "hERG": "name:herg",
    "BACE1": "P56817",
}
SHARED_HELDOUT_EXCLUDED = {
    "chembl28_ycu/Caco2_permeability": "ADME endpoint (permeability), not a potency assay",
    "chembl28_ycu/HLM_metabolic_stability": "ADME endpoint (% remaining), not a potency assay",
    "chembl28_ycu/solubility_tayyebi2023": "physicochemical endpoint, not a potency assay",
    "chembl28_ycu/ERBB4": "byte-identical to ERBB2 upstream (only ERBB2 is used)",
    "davis": "70% of values censored at pKd 5.0",
    "fsmol": "three tiny FS-Mol fixture assays, not a corpus",
}
SHARED_HELDOUT_N_TEST = 16
SHARED_HELDOUT_N_VAL = 10


def _simpd_targets(simpd_dir: Path) -> dict[str, str]:
    """SIMPD dataset id -> target group key (target name, so orthologs/duplicates share a side)."""
    names: dict[str, str] = {}
    tsv = simpd_dir / "targets.tsv"
    if tsv.exists():
        for line in tsv.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0]:
                name = parts[1].split(":", 1)[-1].strip().lower()
                names[parts[0]] = f"name:{name}" if name else target_of(parts[0])
    datasets = sorted(p.stem for p in simpd_dir.glob("*.csv"))
    return {d: names.get(d, target_of(d)) for d in datasets}


def _kiba_targets(kiba_file: Path) -> list[str]:
    import pandas as pd

    return sorted(pd.read_csv(kiba_file, usecols=["target"], dtype=str)["target"].dropna().unique())


@dataclass
class SharedGroups:
    """The shared corpora's assay ids with their target group keys; `holdable` assays may be held out (SIMPD
    datasets whose target no other corpus covers)."""

    group: dict[str, str]
    holdable: set[str]
    sources: dict[str, int]


def shared_groups(data_dir: str | Path) -> SharedGroups:
    """Target groups over SIMPD-69, the chembl28_ycu potency sets and the KIBA targets: replicate datasets
    ``-1/-2`` and same-named orthologs share a key; a chembl28 set shares its target's key (hERG with SIMPD's)."""
    data_dir = Path(data_dir)
    simpd = _simpd_targets(data_dir / "simpd_chembl32_ki")
    if not simpd:
        raise SplitError(f"{data_dir / 'simpd_chembl32_ki'}: no SIMPD dataset CSVs found")
    chembl28 = sorted(
        p.stem
        for p in (data_dir / "chembl28_ycu").glob("*.csv")
        if p.stem in CHEMBL28_POTENCY and p.stem != "ERBB4"
    )
    kiba_file = data_dir / "kiba" / "kiba_long.csv.gz"
    kiba = _kiba_targets(kiba_file) if kiba_file.exists() else []
    group: dict[str, str] = {}
    group.update({a: CHEMBL28_POTENCY[a] for a in chembl28})
    group.update({a: a for a in kiba})
    group.update(simpd)
    keys_outside_simpd = {g for a, g in group.items() if a not in simpd}
    holdable = {a for a in simpd if simpd[a] not in keys_outside_simpd}
    return SharedGroups(group=group, holdable=holdable,
                        sources={"simpd_chembl32_ki": len(simpd), "chembl28_ycu": len(chembl28), "kiba": len(kiba)})


def make_shared_heldout_split(data_dir: str | Path, seed: int = 0) -> Split:
    """The product's target-held-out evaluation split over the shared corpora.

    Union of SIMPD-69 dataset ids, the chembl28_ycu potency sets and the KIBA targets. Test (~16) and
    validation (~10) are SIMPD datasets only, drawn with :func:`grouped_split` by target (replicate
    datasets ``-1/-2`` and same-named orthologs together; a target also covered by another corpus, such
    as hERG, always stays in train); everything else is train. ADME sets and Davis are excluded.
    """
    shared = shared_groups(data_dir)
    split = grouped_split(
        list(shared.group),
        n_val=SHARED_HELDOUT_N_VAL,
        n_test=SHARED_HELDOUT_N_TEST,
        seed=seed,
        group_fn=shared.group.__getitem__,
        eligible=shared.holdable.__contains__,
    )
    split.info = {
        "made_by": "assayfew.splits.make_shared_heldout_split",
        "seed": seed,
        "description": (
            "Target-held-out split over the shared corpora: test/val are SIMPD ChEMBL32 Ki datasets "
            "(whole targets); train is the other SIMPD datasets, the chembl28_ycu potency sets and the "
            "KIBA targets. Assay ids are SIMPD file stems, chembl28_ycu file stems and KIBA UniProt ids."
        ),
        "sources": dict(shared.sources),
        "excluded": dict(SHARED_HELDOUT_EXCLUDED),
    }
    return split


def target_folds(split: Split, n_folds: int, *, seed: int, group_fn: Callable[[str], str] = target_of,
                 eligible: Callable[[str], bool] | None = None) -> list[Split]:
    """Leave-targets-out folds over `split`'s training and validation assays, for decisions on more targets
    than one validation side holds: fold k validates on its share of the eligible assays (whole groups,
    assigned in a seeded order to the fold with the fewest assays so far) and trains on every other training
    or validation assay; the test side stays as it is. Each fold's `info` names the fold."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise SplitError(f"n_folds must be an integer >= 2, not {n_folds!r}")
    pool = list(dict.fromkeys([*split.train, *split.val]))
    groups: dict[str, list[str]] = {}
    for a in sorted(pool):
        if eligible is None or eligible(a):
            groups.setdefault(str(group_fn(a)), []).append(a)
    if len(groups) < n_folds:
        raise SplitError(f"{len(groups)} eligible target groups cannot fill {n_folds} folds")
    keys = sorted(groups)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for j in np.random.default_rng(seed).permutation(len(keys)):
        min(folds, key=len).extend(groups[keys[j]])
    out = []
    for k, held in enumerate(folds):
        held_set = set(held)
        out.append(Split(train=[a for a in pool if a not in held_set], val=sorted(held), test=list(split.test),
                         info=dict(split.info) | {"fold": k, "n_folds": n_folds, "fold_seed": seed}))
    return out


def held_out_indices(n: int, fraction: float, seed: int, *, minimum: int = 1, what: str = "items") -> np.ndarray:
    """Sorted indices of a seeded `fraction` of n items held out for validation (at least `minimum`); ValueError
    unless at least `minimum` are left on the other side too."""
    n_out = max(minimum, round(fraction * n))
    if n - n_out < minimum:
        raise ValueError(f"{n} {what} cannot be split into training and validation {what} with at least {minimum} each")
    return np.sort(np.random.default_rng([seed, 2]).permutation(n)[:n_out])
