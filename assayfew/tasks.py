"""Few-shot tasks: a compact in-memory/on-disk task store and a seeded episode sampler.

A :class:`TaskSet` holds every assay of a corpus as contiguous arrays (measurements grouped by assay,
fingerprints stored once). :class:`EpisodeSampler` turns assays into support/query :class:`Task`s.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assayfew.chem import FingerprintSpec, nearest_tanimoto
from assayfew.io import atomic_write, write_json

if TYPE_CHECKING:  # pragma: no cover
    from assayfew.data.prepare import PreparedCorpus

CACHE_VERSION = 1
ARRAYS_FILE = "arrays.npz"
INDEX_FILE = "index.json"
SPLIT_NONE, SPLIT_TRN, SPLIT_TST = 0, 1, 2
_SPLIT_CODES = {"TRN": SPLIT_TRN, "TST": SPLIT_TST}
_ARRAY_DTYPES = {
    "fingerprints": np.uint8,
    "offsets": np.int64,
    "fp_rows": np.int32,
    "values": np.float32,
    "split": np.int8,
    "censored": np.bool_,
}


class TaskCacheError(ValueError):
    """A task cache directory that is missing, unreadable or inconsistent."""


@dataclass
class Task:
    """One episode: support and query sets of one assay. x is float32 0/1 (n, bits); y float32."""

    assay_id: str
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    query_reference: np.ndarray | None = None  # a reference model's predictions of the query (e.g. pQSAR's)


@dataclass
class TaskSet:
    """All assays of a corpus as contiguous arrays (measurements of assay i are offsets[i]:offsets[i+1])."""

    fingerprints: np.ndarray  # (n_compounds, bits) uint8
    assay_ids: list[str]
    families: list[str]
    offsets: np.ndarray  # (n_assays + 1,) int64
    fp_rows: np.ndarray  # (n_measurements,) int32 -> fingerprints row
    values: np.ndarray  # (n_measurements,) float32
    split: np.ndarray  # (n_measurements,) int8: 0 none, 1 TRN, 2 TST
    censored: np.ndarray  # (n_measurements,) bool
    spec: FingerprintSpec
    sources: list[str] | None = None  # corpus each assay came from (e.g. for balanced sampling)
    standardized: bool | None = None  # structures standardised before featurizing; None: not recorded
    reference: np.ndarray | None = None  # (n_measurements,) float32: a reference model's prediction, NaN if none

    def __post_init__(self) -> None:
        self.assay_ids = [str(a) for a in self.assay_ids]
        self.families = [str(f) for f in self.families]
        self.sources = [""] * len(self.assay_ids) if self.sources is None else [str(s) for s in self.sources]
        if len(self.sources) != len(self.assay_ids):
            raise ValueError("inconsistent TaskSet: sources and assay_ids differ in length")
        for name, dtype in _ARRAY_DTYPES.items():
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        if self.reference is not None:
            self.reference = np.ascontiguousarray(self.reference, dtype=np.float32)
        self._check()
        self._positions = {a: i for i, a in enumerate(self.assay_ids)}
        if len(self._positions) != len(self.assay_ids):
            dupes = sorted(a for a, n in Counter(self.assay_ids).items() if n > 1)
            raise ValueError(f"duplicate assay ids: {', '.join(dupes[:10])}")

    def _check(self) -> None:
        n_assays, n_meas = len(self.assay_ids), len(self.values)
        problems = []
        if self.fingerprints.ndim != 2 or self.fingerprints.shape[1] != self.spec.bits:
            problems.append(f"fingerprints shape {self.fingerprints.shape} does not match {self.spec.bits} bits")
        if len(self.families) != n_assays:
            problems.append("families and assay_ids differ in length")
        if self.offsets.shape != (n_assays + 1,):
            problems.append(f"offsets has shape {self.offsets.shape}, expected ({n_assays + 1},)")
        elif self.offsets[0] != 0 or self.offsets[-1] != n_meas or np.any(np.diff(self.offsets) < 0):
            problems.append("offsets are not a non-decreasing 0..n_measurements sequence")
        for name in ("fp_rows", "split", "censored", "reference"):
            if getattr(self, name) is not None and getattr(self, name).shape != (n_meas,):
                problems.append(f"{name} length differs from values ({n_meas})")
        if n_meas and (self.fp_rows.min() < 0 or self.fp_rows.max() >= len(self.fingerprints)):
            problems.append("fp_rows point outside the fingerprint table")
        if problems:
            raise ValueError("inconsistent TaskSet: " + "; ".join(problems))

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.assay_ids)

    @property
    def n_measurements(self) -> int:
        return int(len(self.values))

    def index(self, assay_id: str) -> int:
        """Position of an assay id (KeyError naming the id when absent)."""
        try:
            return self._positions[str(assay_id)]
        except KeyError:
            raise KeyError(f"assay {assay_id!r} is not in this task set") from None

    def sizes(self) -> np.ndarray:
        """Number of measurements per assay."""
        return np.diff(self.offsets)

    def assay(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x float32 (n, bits) 0/1, y float32 (n,), split int8 (n,)) of assay ``i``."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        x = self.fingerprints[self.fp_rows[lo:hi]].astype(np.float32)
        return x, self.values[lo:hi].copy(), self.split[lo:hi].copy()

    def assay_reference(self, i: int) -> np.ndarray:
        """The reference predictions of assay ``i``'s measurements (all NaN when the corpus has none)."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        if self.reference is None:
            return np.full(hi - lo, np.nan, dtype=np.float32)
        return self.reference[lo:hi].copy()

    def episode_task(self, i: int, support: np.ndarray, query: np.ndarray) -> Task:
        """The Task of assay ``i`` with these support/query measurement indices (into ``values``)."""
        def x(rows: np.ndarray) -> np.ndarray:
            return self.fingerprints[self.fp_rows[rows]].astype(np.float32)

        return Task(assay_id=self.assay_ids[i], support_x=x(support), support_y=self.values[support].copy(),
                    query_x=x(query), query_y=self.values[query].copy())

    def bit_index(self) -> tuple[np.ndarray, np.ndarray]:
        """On-bits of every fingerprint in CSR form (indptr (n_compounds + 1,), bit ids), computed once."""
        cached = getattr(self, "_bit_index", None)
        if cached is None or cached[2] is not self.fingerprints:
            if self.fingerprints.size and int(self.fingerprints.max()) > 1:
                raise ValueError("bit_index: fingerprints are not 0/1 bits")
            rows, cols = np.nonzero(self.fingerprints)
            indptr = np.zeros(len(self.fingerprints) + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=len(self.fingerprints)), out=indptr[1:])
            cached = (indptr, cols.astype(np.int64), self.fingerprints)
            self._bit_index = cached
        return cached[0], cached[1]

    def subset(self, assay_ids: Iterable[str]) -> TaskSet:
        """A new TaskSet with only these assays (in the given order), fingerprints compacted."""
        order = [self.index(a) for a in assay_ids]
        spans = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in order]
        take = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        used, new_rows = np.unique(self.fp_rows[take], return_inverse=True)
        sizes = np.array([len(s) for s in spans], dtype=np.int64)
        return TaskSet(
            fingerprints=self.fingerprints[used],
            assay_ids=[self.assay_ids[i] for i in order],
            families=[self.families[i] for i in order],
            offsets=np.concatenate([[0], np.cumsum(sizes)]),
            fp_rows=new_rows.reshape(-1),
            values=self.values[take],
            split=self.split[take],
            censored=self.censored[take],
            spec=self.spec,
            sources=[self.sources[i] for i in order],
            standardized=self.standardized,
            reference=None if self.reference is None else self.reference[take],
        )

    # ---------------------------------------------------------- construction
    @classmethod
    def from_prepared(cls, prepared: PreparedCorpus) -> TaskSet:
        """Group a prepared corpus' table (one row per assay x compound) into contiguous assays."""
        table = prepared.table
        assay_col = table["assay_id"].astype(str).to_numpy()
        assay_ids = list(dict.fromkeys(assay_col))  # order of first appearance
        position = {a: i for i, a in enumerate(assay_ids)}
        codes = np.fromiter((position[a] for a in assay_col), dtype=np.int64, count=len(assay_col))
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(assay_ids))
        families = (
            table["family"].fillna("").astype(str).to_numpy()
            if "family" in table.columns
            else np.full(len(table), "", dtype=object)
        )
        first_row = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(assay_ids) else np.zeros(0, int)
        split_col = table["split"].fillna("").astype(str).str.upper().to_numpy()
        split = np.fromiter((_SPLIT_CODES.get(s, SPLIT_NONE) for s in split_col), dtype=np.int8, count=len(table))
        censored = (
            table["censored"].fillna(False).astype(bool).to_numpy()
            if "censored" in table.columns
            else np.zeros(len(table), dtype=bool)
        )
        return cls(
            fingerprints=np.asarray(prepared.fingerprints, dtype=np.uint8),
            assay_ids=assay_ids,
            families=[str(families[order[j]]) for j in first_row],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            fp_rows=table["fp_row"].to_numpy()[order],
            values=table["value"].to_numpy(dtype=np.float32)[order],
            split=split[order],
            censored=censored[order],
            spec=prepared.spec,
            standardized=prepared.standardized,
            reference=table["reference"].to_numpy(dtype=np.float32)[order] if "reference" in table.columns else None,
        )

    @classmethod
    def concat(cls, sets: Sequence[TaskSet], prefixes: Sequence[str] | None = None) -> TaskSet:
        """Merge task sets with the same fingerprint spec; ``prefixes`` turn ids into ``prefix/id``."""
        if not sets:
            raise ValueError("concat needs at least one TaskSet")
        if prefixes is not None and len(prefixes) != len(sets):
            raise ValueError(f"{len(prefixes)} prefixes for {len(sets)} task sets")
        spec = sets[0].spec
        for s in sets[1:]:
            if s.spec != spec:
                raise ValueError(f"cannot concat task sets with different fingerprint specs: {spec} vs {s.spec}")
        recorded = {s.standardized for s in sets} - {None}
        if len(recorded) > 1:
            raise ValueError("cannot concat task sets featurized with and without standardisation")
        assay_ids: list[str] = []
        for k, s in enumerate(sets):
            prefix = prefixes[k] if prefixes is not None else ""
            assay_ids += [f"{prefix}/{a}" if prefix else a for a in s.assay_ids]
        fp_base = np.cumsum([0] + [len(s.fingerprints) for s in sets[:-1]])
        meas_base = np.cumsum([0] + [s.n_measurements for s in sets[:-1]])
        return cls(
            fingerprints=np.concatenate([s.fingerprints for s in sets]),
            assay_ids=assay_ids,
            families=[f for s in sets for f in s.families],
            offsets=np.concatenate([[0]] + [s.offsets[1:] + b for s, b in zip(sets, meas_base)]),
            fp_rows=np.concatenate([s.fp_rows.astype(np.int64) + b for s, b in zip(sets, fp_base)]),
            values=np.concatenate([s.values for s in sets]),
            split=np.concatenate([s.split for s in sets]),
            censored=np.concatenate([s.censored for s in sets]),
            spec=spec,
            sources=[src for s in sets for src in s.sources],
            standardized=recorded.pop() if len(recorded) == 1 and all(s.standardized is not None for s in sets)
            else None,
            reference=None if all(s.reference is None for s in sets) else np.concatenate(
                [np.full(s.n_measurements, np.nan, np.float32) if s.reference is None else s.reference for s in sets]),
        )

    # ------------------------------------------------------------------- disk
    def save(self, cache_dir: str | Path) -> None:
        """Write ``arrays.npz`` (no pickles; fingerprints bit-packed) and ``index.json``, each atomically."""
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in _ARRAY_DTYPES if name != "fingerprints"}
        if self.reference is not None:
            arrays["reference"] = self.reference
        arrays["fingerprints_packed"] = np.packbits(self.fingerprints.astype(bool), axis=1)

        def write_arrays(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(cache_dir / ARRAYS_FILE, write_arrays)

        index = {
            "version": CACHE_VERSION,
            "spec": self.spec.to_dict(),
            "n_assays": len(self),
            "n_compounds": int(len(self.fingerprints)),
            "n_measurements": self.n_measurements,
            "assay_ids": self.assay_ids,
            "families": self.families,
            "sources": self.sources,
            "standardized": self.standardized,
        }
        write_json(cache_dir / INDEX_FILE, index)

    @classmethod
    def load(cls, cache_dir: str | Path) -> TaskSet:
        """Read a cache written by :meth:`save` (clear :class:`TaskCacheError` when it is not one)."""
        cache_dir = Path(cache_dir)
        index_path, arrays_path = cache_dir / INDEX_FILE, cache_dir / ARRAYS_FILE
        for path in (index_path, arrays_path):
            if not path.is_file():
                raise TaskCacheError(f"{cache_dir}: not a task cache ({path.name} missing)")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TaskCacheError(f"{index_path}: unreadable ({exc})") from exc
        if not isinstance(index, dict) or index.get("version") != CACHE_VERSION:
            raise TaskCacheError(
                f"{index_path}: cache version {index.get('version') if isinstance(index, dict) else None!r},"
                f" expected {CACHE_VERSION}; rebuild it with `assayfew tasks`"
            )
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in _ARRAY_DTYPES if name != "fingerprints"}
                packed = npz["fingerprints_packed"]
                reference = npz["reference"] if "reference" in npz.files else None
            spec = FingerprintSpec.from_dict(index["spec"])
            arrays["fingerprints"] = np.unpackbits(packed, axis=1, count=spec.bits)
            return cls(assay_ids=index["assay_ids"], families=index["families"], spec=spec,
                       sources=index.get("sources"), standardized=index.get("standardized"), reference=reference,
                       **arrays)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise TaskCacheError(f"{cache_dir}: corrupt task cache ({exc})") from exc


# ------------------------------------------------------------------ episodes
#: `EpisodeSampler.split_sizes`: how many TRN / TST rows a split assay's episode takes.
SPLIT_SIZES = ("cap", "range")


class EpisodeSampler:
    """Seeded support/query episodes from a TaskSet.

    Assays with a TRN/TST split (and ``use_split``) use it: support = TRN rows, query = TST rows, each
    randomly subsampled to ``max_support``/``max_query`` when set (``split_sizes = "cap"``), or to sizes drawn
    uniformly from ``support_range``/``query_range`` as for other assays (``"range"``; capped by the rows
    each side has). Other assays draw a support of K
    compounds (K uniform in ``support_range``, capped so that at least ``min_query`` remain) and a query
    of Q of the rest (Q uniform in ``query_range``, capped by what remains). With ``local_pool`` = P > 0,
    an assay of more than P compounds without a split draws both from the P compounds most similar to a
    random anchor compound (Tanimoto on the fingerprints' structure part): a chemical series, as a project's
    assay is, rather than a spread over a large, diverse set.
    """

    def __init__(
        self,
        taskset: TaskSet,
        *,
        support_range: tuple[int, int] = (16, 64),
        query_range: tuple[int, int] = (16, 64),
        max_support: int | None = None,
        max_query: int | None = None,
        use_split: bool = True,
        split_sizes: str = "cap",
        min_query: int = 4,
        weights: Sequence[float] | None = None,
        local_pool: int = 0,
        seed: int = 0,
    ) -> None:
        for name, (lo, hi) in (("support_range", support_range), ("query_range", query_range)):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 1 <= low <= high, got {(lo, hi)}")
        if min_query < 1:
            raise ValueError(f"min_query must be >= 1, got {min_query}")
        if split_sizes not in SPLIT_SIZES:
            raise ValueError(f"split_sizes must be one of {', '.join(SPLIT_SIZES)}, not {split_sizes!r}")
        if local_pool < 0:
            raise ValueError(f"local_pool must be >= 0, got {local_pool}")
        self.split_sizes = split_sizes
        self.local_pool = int(local_pool)
        self.taskset = taskset
        self.support_range = (int(support_range[0]), int(support_range[1]))
        self.query_range = (int(query_range[0]), int(query_range[1]))
        self.max_support = max_support
        self.max_query = max_query
        self.use_split = use_split
        self.min_query = min_query
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._modes = [self._mode(i) for i in range(len(taskset))]
        self._eligible = [i for i, mode in enumerate(self._modes) if mode is not None]
        self._p = None
        if weights is not None:
            if len(weights) != len(taskset):
                raise ValueError(f"{len(weights)} weights for {len(taskset)} assays")
            w = np.array([float(weights[i]) for i in self._eligible])
            if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
                raise ValueError("assay weights must be finite, non-negative and not all zero")
            self._p = w / w.sum()

    def _has_split(self, i: int) -> bool:
        s = self.taskset.split[self.taskset.offsets[i] : self.taskset.offsets[i + 1]]
        return bool(np.any(s == SPLIT_TRN)) and int(np.sum(s == SPLIT_TST)) >= self.min_query

    def _mode(self, i: int) -> str | None:
        """'split', 'random' or None (too small for an episode)."""
        if self.use_split and self._has_split(i):
            return "split"
        n = int(self.taskset.offsets[i + 1] - self.taskset.offsets[i])
        return "random" if n >= self.support_range[0] + self.min_query else None

    def eligible(self) -> list[int]:
        """Indices of assays big enough to form an episode."""
        return list(self._eligible)

    def episode_rows(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Support and query of one episode of assay ``i`` as measurement indices into the TaskSet's
        arrays (``values``, ``fp_rows``), drawn with ``rng``."""
        mode = self._modes[i]
        if mode is None:
            raise ValueError(f"assay {self.taskset.assay_ids[i]!r} is too small for an episode")
        lo, hi = int(self.taskset.offsets[i]), int(self.taskset.offsets[i + 1])
        if mode == "split":
            split = self.taskset.split[lo:hi]
            trn, tst = np.flatnonzero(split == SPLIT_TRN), np.flatnonzero(split == SPLIT_TST)
            if self.split_sizes == "range":
                support = _cap(trn, self._size(self.support_range, self.max_support, len(trn), rng), rng)
                query = _cap(tst, self._size(self.query_range, self.max_query, len(tst), rng), rng)
            else:
                support = _cap(trn, self.max_support, rng)
                query = _cap(tst, self.max_query, rng)
        else:
            pool = np.arange(hi - lo)
            if 0 < self.local_pool < len(pool):
                pool = self._local_pool(lo, hi, rng)
            n = len(pool)  # eligible: n - min_query >= 1
            cap = None if self.max_support is None else max(1, self.max_support)
            k = self._size(self.support_range, cap, n - self.min_query, rng)
            perm = pool[rng.permutation(n)]
            support, rest = perm[:k], perm[k:]
            query = rest[: self._size(self.query_range, self.max_query, len(rest), rng)]
        return support + lo, query + lo

    def _local_pool(self, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
        """The `local_pool` measurements of rows lo..hi whose compounds are most similar to a random one of them
        (positions relative to lo; ties broken by position)."""
        fp = self.taskset.spec.structure_part(self.taskset.fingerprints[self.taskset.fp_rows[lo:hi]])
        anchor = int(rng.integers(hi - lo))
        return np.sort(nearest_tanimoto(fp[anchor:anchor + 1], fp, self.local_pool)[1][0])

    @staticmethod
    def _size(size_range: tuple[int, int], cap: int | None, available: int, rng: np.random.Generator) -> int:
        """A size uniform in `size_range`, limited by `cap` and by the `available` rows."""
        hi = min(size_range[1], available, cap if cap is not None else available)
        lo = min(size_range[0], hi)
        return int(rng.integers(lo, hi + 1))

    def episode(self, i: int, rng: np.random.Generator) -> Task:
        """One episode of assay ``i`` drawn with ``rng``."""
        support, query = self.episode_rows(i, rng)
        return self.taskset.episode_task(i, support, query)

    def sample_rows(self, n_tasks: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``n_tasks`` episodes as (assay index, support rows, query rows) of random eligible assays
        (uniform, or by ``weights``; own seeded rng)."""
        if not self._eligible:
            raise ValueError("no assay is big enough to form an episode")
        if self._p is None:
            picks = self._rng.integers(0, len(self._eligible), size=n_tasks)
        else:
            picks = self._rng.choice(len(self._eligible), size=n_tasks, p=self._p)
        out = []
        for j in picks:
            i = self._eligible[int(j)]
            out.append((i, *self.episode_rows(i, self._rng)))
        return out

    def sample(self, n_tasks: int) -> list[Task]:
        """``n_tasks`` episodes (as `sample_rows`) materialised as Tasks."""
        return [self.taskset.episode_task(i, s, q) for i, s, q in self.sample_rows(n_tasks)]


def _cap(index: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None or len(index) <= cap:
        return index
    return np.sort(rng.choice(index, size=cap, replace=False))


# ------------------------------------------------------------------ building
def taskset_summary(taskset: TaskSet, report: Any | None = None) -> dict[str, Any]:
    """Counts of a task set plus the rejected rows and note counts of a data report."""
    summary: dict[str, Any] = {
        "n_assays": len(taskset),
        "n_compounds": int(len(taskset.fingerprints)),
        "n_measurements": taskset.n_measurements,
        "n_trn": int(np.sum(taskset.split == SPLIT_TRN)),
        "n_tst": int(np.sum(taskset.split == SPLIT_TST)),
        "n_censored": int(np.sum(taskset.censored)),
        "rejected": [],
        "notes": {},
    }
    if report is not None:
        summary["rejected"] = [_report_entry(r) for r in report.rejected]
        summary["notes"] = dict(Counter(_report_entry(n)["reason"] for n in report.notes))
    return summary


def _report_entry(entry: Any) -> dict[str, Any]:
    """A report row ({file,row,reason} dict or object) as a JSON-ready dict."""
    get = entry.get if isinstance(entry, dict) else lambda k, d=None: getattr(entry, k, d)
    row = get("row")
    return {
        "file": str(get("file", "") or ""),
        "row": int(row) if isinstance(row, (int, np.integer)) else row,
        "reason": str(get("reason", "") or ""),
    }


def build_taskset(
    source: Path,
    fmt: str | None = None,
    *,
    spec: FingerprintSpec = FingerprintSpec(),
    standardize: bool = True,
    cache: bool = True,
) -> tuple[TaskSet, dict[str, Any]]:
    """Read, validate and featurize one corpus into a TaskSet; returns it and a summary dict."""
    from assayfew.data.prepare import prepare_corpus
    from assayfew.data.readers import read_corpus

    table, report = read_corpus(Path(source), fmt)
    prepared = prepare_corpus(table, report, spec, standardize=standardize, cache=cache)
    taskset = TaskSet.from_prepared(prepared)
    name = Path(source).name
    taskset.sources = [name.split(".")[0] if Path(source).is_file() else name] * len(taskset)
    summary = taskset_summary(taskset, prepared.report)
    summary["config"] = {
        "source": str(source),
        "format": fmt,
        "spec": spec.to_dict(),
        "standardize": standardize,
    }
    return taskset, summary
