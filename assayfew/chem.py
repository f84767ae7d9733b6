"""Chemistry: SMILES parsing, Morgan fingerprints (bulk, parallel, cached), Tanimoto similarity.

Speed notes (see benchmarks/featurize.py): canonical SMILES are optional (they cost about as much as
the fingerprint); without them and without standardisation, SMILES that cannot hold hydrogen atoms
are parsed without sanitisation and then sanitised (this skips the stereo perception and H removal
that `Chem.MolFromSmiles` adds, neither of which changes a non-chiral Morgan fingerprint); bits are
taken from the bit vector's raw bytes; large inputs are split over forked worker processes that
receive SMILES strings and return packed bits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize

from assayfew import paths
from assayfew.io import atomic_write

__all__ = [
    "FingerprintSpec",
    "Featurized",
    "featurize_chunks",
    "featurize_smiles",
    "OnBits",
    "max_tanimoto",
    "max_tanimoto_from_counts",
    "nearest_tanimoto",
    "tanimoto_from_counts",
    "top_similarities",
    "may_change_on_standardizing",
    "parse_molblock",
    "parse_smiles",
]

#: Inputs smaller than this are featurized in-process (a pool costs more than it saves).
_PARALLEL_MIN = 3000
#: Work is handed to the pool in chunks of this many SMILES (bounds), so busy cores balance out.
_CHUNK_MIN, _CHUNK_MAX = 200, 1000
#: v2: packed bits are little-endian within each byte (RDKit's raw bit-vector layout).
_CACHE_VERSION = 2
#: SMILES that may hold explicit hydrogen atoms (removed by MolFromSmiles), a CXSMILES extension or
#: surrounding text take the reference parser; all others may take the fast path.
_NEEDS_FULL_PARSE = re.compile(r"[\s|]|\[\d*H")
#: SMILES that standardisation may change: several fragments or a charged atom. Standardising any other
#: SMILES (largest fragment + neutralisation) is a no-op, so it skips the standardizer.
_MAY_NEED_STANDARDIZING = re.compile(r"\.|\[[^\]]*[+-]")


@dataclass(frozen=True)
class FingerprintSpec:
    """Morgan bit fingerprint settings: `bits` columns in all. With `feature_bits` > 0 the last `feature_bits`
    columns are a second Morgan fingerprint of the same radius on pharmacophoric atom features (FCFP-like:
    donor, acceptor, aromatic, halogen, basic, acidic) and the first `bits - feature_bits` the usual ECFP-like
    one; 0 = ECFP only."""

    radius: int = 2
    bits: int = 1024
    feature_bits: int = 0

    def __post_init__(self) -> None:
        if self.radius < 0 or self.bits < 1:
            raise ValueError(f"fingerprint: radius must be >= 0 and bits >= 1, got {self.radius} and {self.bits}")
        if not 0 <= self.feature_bits < self.bits:
            raise ValueError(f"fingerprint: feature_bits must be in [0, bits), got {self.feature_bits} of {self.bits}")

    @property
    def structure_bits(self) -> int:
        """Width of the ECFP-like part (the first columns)."""
        return self.bits - self.feature_bits

    def structure_part(self, x: np.ndarray) -> np.ndarray:
        """The ECFP-like columns of fingerprint rows x (n, bits): what similarity to the measured compounds
        reads, so that it is the usual ECFP Tanimoto whatever else the model's input holds."""
        return x[:, : self.structure_bits]

    def to_dict(self) -> dict:
        """radius and bits, plus feature_bits when used (so ECFP-only specs read and hash as before)."""
        out = asdict(self)
        if not self.feature_bits:
            del out["feature_bits"]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FingerprintSpec:
        return cls(radius=int(data["radius"]), bits=int(data["bits"]), feature_bits=int(data.get("feature_bits", 0)))


@dataclass
class Featurized:
    """Result of featurizing a list of SMILES, one entry per input, in input order."""

    fingerprints: np.ndarray  # (n, bits) uint8 of 0/1, zeros for invalid rows
    valid: np.ndarray  # (n,) bool
    reasons: list[str]  # "" when valid, else why not
    canonical: list[str] | None  # canonical SMILES, "" when invalid; None when not requested


def parse_smiles(smiles: str, standardize: bool = False) -> tuple[Chem.Mol | None, str]:
    """Parse and sanitise one SMILES; return (mol, "") or (None, reason). RDKit logging is silenced."""
    with rdBase.BlockLogs():
        return _parse(smiles, standardize)


def _parse(smiles: str, standardize: bool) -> tuple[Chem.Mol | None, str]:
    """parse_smiles without the log block (callers hold one for a whole batch)."""
    if not isinstance(smiles, str) or not smiles.strip():
        return None, "empty SMILES"
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:  # slow path only for failures: find out why
        mol, reason = _parse_then_sanitize(smiles.strip())
        if mol is None:
            return None, reason
    if mol.GetNumAtoms() == 0:
        return None, "empty SMILES"
    if standardize and may_change_on_standardizing(smiles):
        try:
            mol = _standardizer().standardize(mol)
        except Exception as exc:
            return None, f"standardization failed: {_first_line(exc)}"
        if mol is None or mol.GetNumAtoms() == 0:
            return None, "standardization failed: no atoms left"
    return mol, ""


def may_change_on_standardizing(smiles: str) -> bool:
    """Whether standardisation (largest fragment + neutralisation) can change this SMILES' structure."""
    return isinstance(smiles, str) and _MAY_NEED_STANDARDIZING.search(smiles) is not None


def parse_molblock(block: str) -> tuple[Chem.Mol | None, str]:
    """Parse and sanitise one MDL mol block (V2000/V3000); return (mol, "") or (None, reason)."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromMolBlock(block)
        if mol is None:
            mol, reason = _sanitized(Chem.MolFromMolBlock(block, sanitize=False), "unreadable connection table")
            if mol is None:
                return None, reason
    if mol.GetNumAtoms() == 0:
        return None, "no atoms"
    return mol, ""


def _parse_for_fingerprint(smiles: str) -> tuple[Chem.Mol | None, str]:
    """Like _parse(smiles, False) but cheaper: same graph, aromaticity, ring and H-count perception,
    hence the same non-chiral Morgan fingerprint and the same reasons, without stereo perception."""
    if not isinstance(smiles, str) or not smiles or _NEEDS_FULL_PARSE.search(smiles):
        return _parse(smiles, False)
    mol, reason = _parse_then_sanitize(smiles)
    if mol is not None and mol.GetNumAtoms() == 0:
        return None, "empty SMILES"
    return mol, reason


def _parse_then_sanitize(smiles: str) -> tuple[Chem.Mol | None, str]:
    """Parse without sanitising, then sanitise: tells an unparsable SMILES from a chemically invalid one."""
    return _sanitized(Chem.MolFromSmiles(smiles, sanitize=False), "unparsable SMILES")


def _sanitized(mol: Chem.Mol | None, unparsable: str) -> tuple[Chem.Mol | None, str]:
    """Sanitise an unsanitised parse; (None, `unparsable`) when there was nothing to sanitise."""
    if mol is None:
        return None, unparsable
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises several sanitisation exception types
        return None, f"sanitization failed: {_first_line(exc)}"
    return mol, ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Standardizer:
    """Largest fragment + neutralisation (rdMolStandardize), built once per process."""

    def __init__(self) -> None:
        self._fragment = rdMolStandardize.LargestFragmentChooser()
        self._uncharger = rdMolStandardize.Uncharger()

    def standardize(self, mol: Chem.Mol) -> Chem.Mol:
        mol = self._fragment.choose(mol)
        return self._uncharger.uncharge(mol)


_STANDARDIZER: _Standardizer | None = None


def _standardizer() -> _Standardizer:
    global _STANDARDIZER
    if _STANDARDIZER is None:
        _STANDARDIZER = _Standardizer()
    return _STANDARDIZER


# --------------------------------------------------------------------------- fingerprints


@lru_cache(maxsize=8)
def _generator(radius: int, bits: int, features: bool = False) -> rdFingerprintGenerator.FingerprintGenerator64:
    if features:
        invariants = rdFingerprintGenerator.GetMorganFeatureAtomInvGen()
        return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits, atomInvariantsGenerator=invariants)
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)


def _fingerprint_numpy(mol: Chem.Mol, spec: FingerprintSpec) -> np.ndarray:
    """The reference fingerprint of `spec`: (bits,) uint8 of 0/1 (ECFP part, then FCFP part)."""
    parts = [_generator(spec.radius, spec.structure_bits).GetFingerprintAsNumPy(mol)]
    if spec.feature_bits:
        parts.append(_generator(spec.radius, spec.feature_bits, features=True).GetFingerprintAsNumPy(mol))
    return np.concatenate(parts).astype(np.uint8)


@lru_cache(maxsize=8)
def _fingerprint_bytes(spec: FingerprintSpec) -> Callable[[Chem.Mol], bytes]:
    """mol → ceil(bits/8) bytes, bit i at byte i//8, position i%8 (little-endian bit order).

    Uses the bit vectors' raw serialisation when a self-check shows it has exactly that layout (and the
    ECFP part fills whole bytes), else a slower numpy route.
    """
    bits = spec.bits
    nbytes = (bits + 7) // 8

    def via_numpy(mol: Chem.Mol) -> bytes:
        return np.packbits(_fingerprint_numpy(mol, spec).astype(bool), bitorder="little").tobytes()

    if spec.feature_bits:
        if spec.structure_bits % 8:
            return via_numpy
        structure = _fingerprint_bytes(FingerprintSpec(spec.radius, spec.structure_bits))
        features = _generator(spec.radius, spec.feature_bits, features=True)
        probe = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1C(F)(F)F")
        if len(DataStructs.BitVectToBinaryText(features.GetFingerprint(probe))) != (spec.feature_bits + 7) // 8:
            return via_numpy

        def joined(mol: Chem.Mol) -> bytes:
            return structure(mol) + DataStructs.BitVectToBinaryText(features.GetFingerprint(mol))

        ok = np.array_equal(np.unpackbits(np.frombuffer(joined(probe), np.uint8), count=bits, bitorder="little"),
                            _fingerprint_numpy(probe, spec))
        return joined if ok else via_numpy
    generator = _generator(spec.radius, bits)

    def raw(mol: Chem.Mol) -> bytes:
        return DataStructs.BitVectToBinaryText(generator.GetFingerprint(mol))

    probe = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1C(F)(F)F")
    data = raw(probe)
    expected = generator.GetFingerprintAsNumPy(probe).astype(np.uint8)
    ok = len(data) == nbytes and np.array_equal(
        np.unpackbits(np.frombuffer(data, np.uint8), count=bits, bitorder="little"), expected
    )
    return raw if ok else via_numpy


_Chunk = tuple[np.ndarray, list[str], list[str] | None]


def _featurize_chunk(
    smiles: Sequence[str], spec: FingerprintSpec, standardize: bool, canonical: bool
) -> _Chunk:
    """Featurize unique SMILES serially: (packed bits (n, ceil(bits/8)) little-endian, reasons,
    canonical SMILES or None)."""
    to_bytes = _fingerprint_bytes(spec)
    n = len(smiles)
    zero = bytes((spec.bits + 7) // 8)
    rows: list[bytes] = []
    reasons = [""] * n
    canon: list[str] | None = [""] * n if canonical else None
    fast = not canonical  # canonical SMILES need the reference parser's stereo
    with rdBase.BlockLogs():
        for i, smi in enumerate(smiles):
            if fast and not (standardize and may_change_on_standardizing(smi)):
                mol, reason = _parse_for_fingerprint(smi)
            else:
                mol, reason = _parse(smi, standardize)
            if mol is None:
                reasons[i] = reason
                rows.append(zero)
                continue
            rows.append(to_bytes(mol))
            if canon is not None:
                canon[i] = Chem.MolToSmiles(mol)
    packed = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(n, len(zero))
    return packed, reasons, canon


def _pool_context() -> mp.context.BaseContext:
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: this process gets SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`), so a
    killed `assayfew` command leaves no featurising workers behind; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _pool(jobs: int, context: mp.context.BaseContext) -> ProcessPoolExecutor:
    """A featurising worker pool whose workers exit when this process dies."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_exit_with_parent,
                               initargs=(os.getpid(),))


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _featurize_unique(
    smiles: list[str], spec: FingerprintSpec, standardize: bool, canonical: bool, n_jobs: int | None
) -> _Chunk:
    work = partial(_featurize_chunk, spec=spec, standardize=standardize, canonical=canonical)
    n = len(smiles)
    jobs = n_jobs if n_jobs is not None else _available_cores()
    jobs = max(1, min(jobs, n // (_PARALLEL_MIN // 2) or 1))
    if jobs == 1 or n < _PARALLEL_MIN:
        return work(smiles)
    size = max(_CHUNK_MIN, min(_CHUNK_MAX, -(-n // (jobs * 16))))
    chunks = [smiles[a : a + size] for a in range(0, n, size)]
    with _pool(jobs, _pool_context()) as pool:
        results = list(pool.map(work, chunks))
    packed = np.concatenate([r[0] for r in results], axis=0)
    reasons = [x for r in results for x in r[1]]
    canon = [x for r in results for x in r[2]] if canonical else None
    return packed, reasons, canon


# --------------------------------------------------------------------------- cache


def _cache_key(text: str, spec: FingerprintSpec, standardize: bool) -> str:
    """text: json.dumps(unique SMILES) (ASCII, unambiguous)."""
    header = {"v": _CACHE_VERSION, "rdkit": rdBase.rdkitVersion, "std": standardize, **spec.to_dict()}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    digest.update(text.encode("ascii"))
    return digest.hexdigest()


def _cache_dir(cache: bool | Path) -> Path | None:
    if cache is False or cache is None:
        return None
    return paths.cache_dir() / "fingerprints" if cache is True else Path(cache)


def _cache_load(path: Path, text: str, n: int, bits: int, canonical: bool) -> _Chunk | None:
    """Load a shard; None when missing or lacking requested canonical SMILES; corrupt or
    mismatching shards are removed."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if canonical and "canonical" not in data.files:
                return None  # featurized without canonical SMILES: redo, then overwrite
            stored = data["smiles"]
            packed = data["packed"]
            reasons = data["reasons"].tolist()
            canon = data["canonical"].tolist() if canonical else None
        ok = (
            packed.shape == (n, (bits + 7) // 8)
            and packed.dtype == np.uint8
            and len(reasons) == n
            and (canon is None or len(canon) == n)
            and stored.dtype == np.uint8
            and stored.tobytes() == text.encode("ascii")
        )
    except Exception:
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
        return None
    return packed, reasons, canon


def _cache_store(path: Path, text: str, packed: np.ndarray, reasons: list[str], canon: list[str] | None) -> None:
    """Write a shard atomically (temp file + rename); cache failures never break featurization."""
    arrays = {
        "smiles": np.frombuffer(text.encode("ascii"), dtype=np.uint8),
        "packed": packed,
        "reasons": np.array(reasons, dtype=str),
    }
    if canon is not None:
        arrays["canonical"] = np.array(canon, dtype=str)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    try:
        atomic_write(path, write)
    except OSError:
        pass  # a cache that cannot be written only costs speed


# --------------------------------------------------------------------------- public API


def featurize_smiles(
    smiles: Sequence[str],
    spec: FingerprintSpec = FingerprintSpec(),
    *,
    standardize: bool = False,
    n_jobs: int | None = None,
    cache: bool | Path = False,
    canonical: bool = True,
) -> Featurized:
    """SMILES → Morgan bit matrix, one row per input (duplicates featurized once).

    n_jobs: worker processes (None = all available cores; small inputs run in-process).
    cache: False, True (paths.cache_dir()/"fingerprints") or a directory for on-disk shards.
    canonical: also compute canonical SMILES (costs about as much as the fingerprint); when False,
    `Featurized.canonical` is None and fingerprints and reasons are unchanged.
    """
    items = _as_smiles(smiles)
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(s, len(index)) for s in items), dtype=np.int64, count=len(items))
    unique = list(index)
    nbytes = (spec.bits + 7) // 8

    directory = _cache_dir(cache)
    text = json.dumps(unique) if directory is not None else ""
    shard = directory / f"{_cache_key(text, spec, standardize)}.npz" if directory is not None else None
    loaded = _cache_load(shard, text, len(unique), spec.bits, canonical) if shard is not None else None
    if loaded is None:
        loaded = (
            _featurize_unique(unique, spec, standardize, canonical, n_jobs)
            if unique
            else (np.zeros((0, nbytes), np.uint8), [], [] if canonical else None)
        )
        if shard is not None:
            _cache_store(shard, text, *loaded)
    packed_u, reasons_u, canonical_u = loaded

    if len(unique) == len(items):  # no duplicates: inverse is the identity
        packed, reasons, canon = packed_u, list(reasons_u), canonical_u
    else:
        packed = packed_u[inverse]
        reasons = [reasons_u[i] for i in inverse]
        canon = [canonical_u[i] for i in inverse] if canonical_u is not None else None
    fingerprints = np.unpackbits(packed, axis=1, count=spec.bits, bitorder="little")
    valid = np.fromiter((not r for r in reasons), dtype=bool, count=len(reasons))
    return Featurized(fingerprints=fingerprints, valid=valid, reasons=reasons, canonical=canon)


@dataclass(frozen=True)
class OnBits:
    """A 0/1 fingerprint matrix (n, width) as the positions of its set bits, row by row (rows ascending,
    columns ascending within a row): what sparse products need, without the dense matrix."""

    rows: np.ndarray  # (nnz,) int64
    cols: np.ndarray  # (nnz,) int64
    n: int
    width: int

    @staticmethod
    def from_dense(x: np.ndarray) -> OnBits:
        x = np.ascontiguousarray(x)
        flat = np.flatnonzero(x.view(bool) if x.dtype == np.uint8 else x)  # a bool view: ~3x faster
        rows, cols = np.divmod(flat, x.shape[1])
        return OnBits(rows, cols, len(x), x.shape[1])

    @staticmethod
    def from_packed(packed: np.ndarray, width: int) -> OnBits:
        """From packed little-endian bits (as `featurize_chunks` yields them)."""
        return OnBits.from_dense(np.unpackbits(packed, axis=1, count=width, bitorder="little"))

    def first_columns(self, width: int) -> OnBits:
        """The same rows with only their columns < width (all of them when width covers the matrix)."""
        if width >= self.width:
            return self
        keep = self.cols < width
        return OnBits(self.rows[keep], self.cols[keep], self.n, width)

    def starts(self) -> np.ndarray:
        """(n + 1,) int64: row i's columns are cols[starts[i]:starts[i + 1]]."""
        return np.searchsorted(self.rows, np.arange(self.n + 1))

    def dense(self) -> np.ndarray:
        x = np.zeros((self.n, self.width), dtype=np.uint8)
        x[self.rows, self.cols] = 1
        return x


def max_tanimoto(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Max Tanimoto similarity of each query bit row to any reference row (0 when reference is empty)."""
    query = np.asarray(query)
    reference = np.asarray(reference)
    if query.ndim != 2:
        raise ValueError(f"query must be 2-D (n, bits), got shape {query.shape}")
    best = np.zeros(len(query), dtype=np.float64)
    if reference.size == 0 or len(query) == 0:
        return best
    for rows, similarity in _tanimoto_blocks(query, reference):
        best[rows] = similarity.max(axis=1)
    return best


def _tanimoto_blocks(query: np.ndarray, reference: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """(query rows, their (rows, n_ref) float32 Tanimoto similarities) in blocks of ~2M entries."""
    if reference.ndim != 2 or reference.shape[1] != query.shape[1]:
        raise ValueError(f"reference shape {reference.shape} does not match query bits {query.shape[1]}")
    q = (query != 0).astype(np.float32)
    r = (reference != 0).astype(np.float32)
    q_count, r_count = q.sum(axis=1), r.sum(axis=1)
    step = max(1, 2_000_000 // max(1, len(r)))  # bound the (step, n_ref) intermediate
    for start in range(0, len(q), step):
        rows = slice(start, start + step)
        yield rows, tanimoto_from_counts(q[rows] @ r.T, q_count[rows], r_count)


def tanimoto_from_counts(inter: np.ndarray, q_count: np.ndarray, r_count: np.ndarray) -> np.ndarray:
    """(n, m) Tanimoto similarities given the intersection counts and each side's bit counts (float32, as
    `max_tanimoto` computes them; 0 where both are empty)."""
    union = q_count[:, None] + r_count[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def max_tanimoto_from_counts(inter: np.ndarray, q_count: np.ndarray, r_count: np.ndarray) -> np.ndarray:
    """Row maxima of `tanimoto_from_counts`."""
    return tanimoto_from_counts(inter, q_count, r_count).max(axis=1)


def top_similarities(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of an (n, m) similarity matrix, descending, and their columns
    (k capped at m; ties go to the lower column): k passes of argmax, whose first maximum wins ties."""
    k = min(k, similarity.shape[1])
    work = similarity.astype(np.float64, copy=True)
    rows = np.arange(len(work))
    cols = np.empty((len(work), k), dtype=np.int64)
    for j in range(k):
        cols[:, j] = work.argmax(axis=1)
        work[rows, cols[:, j]] = -np.inf
    return np.take_along_axis(similarity, cols, axis=1), cols


def nearest_tanimoto(query: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each query bit row, its k most similar reference rows: (similarities (n, k), descending, and their
    reference rows (n, k)); k capped at the number of reference rows. The first column is `max_tanimoto`."""
    query = np.asarray(query)
    reference = np.asarray(reference)
    if query.ndim != 2 or reference.ndim != 2:
        raise ValueError(f"query {query.shape} and reference {reference.shape} must be (n, bits)")
    k = min(k, len(reference))
    sims = np.zeros((len(query), k), dtype=np.float64)
    cols = np.zeros((len(query), k), dtype=np.int64)
    for rows, similarity in _tanimoto_blocks(query, reference):
        sims[rows], cols[rows] = top_similarities(similarity, k)
    return sims, cols


def featurize_chunks(
    chunks: Iterable[Sequence[str]],
    spec: FingerprintSpec = FingerprintSpec(),
    *,
    standardize: bool = False,
    n_jobs: int | None = None,
    ahead: int = 4,
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Featurize a stream of SMILES chunks, in order: yields (packed bits, reasons) per chunk.

    packed: (n, ceil(bits/8)) uint8, bit i of a row at byte i//8, position i%8 (little-endian; unpack with
    `np.unpackbits(packed, axis=1, count=bits, bitorder="little")`), zeros for invalid rows; reasons: ""
    when valid, else why not (the same as `featurize_smiles`). Work runs in one pool of `n_jobs` worker
    processes (None = all available cores; 1, or a stream of one chunk = in-process) that lives as long as
    the stream; at most `ahead` chunks are in flight beyond the one the caller holds, so memory stays
    bounded however long the stream. Workers are spawned (not forked) and import only this module: they do
    not hold copies of the caller's memory (a loaded model, torch).
    """
    work = partial(_featurize_chunk, spec=spec, standardize=standardize, canonical=False)
    jobs = n_jobs if n_jobs is not None else _available_cores()
    source = iter(chunks)
    peeked = list(itertools.islice(source, 2))
    source = itertools.chain(peeked, source)
    if jobs <= 1 or len(peeked) < 2:  # one chunk (a small library): starting workers costs more than it saves
        for chunk in source:
            packed, reasons, _ = work(_as_smiles(chunk))
            yield packed, reasons
        return
    pending: deque[list[Future]] = deque()
    with _pool(jobs, mp.get_context("spawn")) as pool:
        try:
            while True:
                while len(pending) <= max(1, ahead):
                    chunk = next(source, None)
                    if chunk is None:
                        break
                    items = _as_smiles(chunk)
                    pieces = [items[a : a + _CHUNK_MAX] for a in range(0, len(items), _CHUNK_MAX)] or [[]]
                    pending.append([_submit(pool, work, piece) for piece in pieces])
                if not pending:
                    return
                results = [future.result() for future in pending.popleft()]
                yield (np.concatenate([r[0] for r in results], axis=0), [x for r in results for x in r[1]])
        finally:
            for futures in pending:
                for future in futures:
                    future.cancel()


def _submit(pool: ProcessPoolExecutor, fn: Callable, arg: object) -> Future:
    """pool.submit, with the parent's main script hidden from any worker spawned meanwhile: a spawned worker
    re-runs the main script's imports (for the `assayfew` command: torch, pandas, every subcommand), which
    the featurisation functions (in this module) do not need. Also spares scripts the `__main__` guard."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
    if path is None:
        return pool.submit(fn, arg)
    del main.__file__  # type: ignore[union-attr]
    try:
        return pool.submit(fn, arg)
    finally:
        main.__file__ = path  # type: ignore[union-attr]


def _as_smiles(chunk: Sequence[str]) -> list[str]:
    return ["" if s is None or (isinstance(s, float) and s != s) else str(s) for s in chunk]
