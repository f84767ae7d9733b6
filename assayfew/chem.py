"""Chemistry: SMILES parsing, Morgan fingerprints (bulk, parallel, cached), Tanimoto similarity."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize

from assayfew import paths

__all__ = [
    "FingerprintSpec",
    "Featurized",
    "featurize_smiles",
    "max_tanimoto",
    "parse_smiles",
]

#: Inputs smaller than this are featurized in-process (a pool costs more than it saves).
_PARALLEL_MIN = 4000
_CACHE_VERSION = 1


@dataclass(frozen=True)
class FingerprintSpec:
    """Morgan (ECFP-like) bit fingerprint settings."""

    radius: int = 2
    bits: int = 1024

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Featurized:
    """Result of featurizing a list of SMILES, one entry per input, in input order."""

    fingerprints: np.ndarray  # (n, bits) uint8 of 0/1, zeros for invalid rows
    valid: np.ndarray  # (n,) bool
    reasons: list[str]  # "" when valid, else why not
    canonical: list[str]  # canonical SMILES, "" when invalid


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
        mol = Chem.MolFromSmiles(smiles.strip(), sanitize=False)
        if mol is None:
            return None, "unparsable SMILES"
        try:
            Chem.SanitizeMol(mol)
        except Exception as exc:  # RDKit raises several sanitisation exception types
            return None, f"sanitization failed: {_first_line(exc)}"
    if mol.GetNumAtoms() == 0:
        return None, "empty SMILES"
    if standardize:
        try:
            mol = _standardizer().standardize(mol)
        except Exception as exc:
            return None, f"standardization failed: {_first_line(exc)}"
        if mol is None or mol.GetNumAtoms() == 0:
            return None, "standardization failed: no atoms left"
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


def _featurize_chunk(
    smiles: Sequence[str], radius: int, bits: int, standardize: bool
) -> tuple[np.ndarray, list[str], list[str]]:
    """Featurize unique SMILES serially: (packed bits (n, bits/8), reasons, canonical)."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    n = len(smiles)
    unpacked = np.zeros((n, bits), dtype=np.uint8)
    reasons = [""] * n
    canonical = [""] * n
    with rdBase.BlockLogs():
        for i, smi in enumerate(smiles):
            mol, reason = _parse(smi, standardize)
            if mol is None:
                reasons[i] = reason
                continue
            unpacked[i] = generator.GetFingerprintAsNumPy(mol)
            canonical[i] = Chem.MolToSmiles(mol)
    return np.packbits(unpacked, axis=1), reasons, canonical


def _pool_context() -> mp.context.BaseContext:
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _featurize_unique(
    smiles: list[str], spec: FingerprintSpec, standardize: bool, n_jobs: int | None
) -> tuple[np.ndarray, list[str], list[str]]:
    jobs = n_jobs if n_jobs is not None else (os.cpu_count() or 1)
    jobs = max(1, min(jobs, len(smiles) // (_PARALLEL_MIN // 2) or 1))
    if jobs == 1 or len(smiles) < _PARALLEL_MIN:
        return _featurize_chunk(smiles, spec.radius, spec.bits, standardize)
    n_chunks = jobs * 4
    bounds = np.linspace(0, len(smiles), n_chunks + 1).astype(int)
    chunks = [smiles[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=_pool_context()) as pool:
        results = list(
            pool.map(
                _featurize_chunk,
                chunks,
                [spec.radius] * n_chunks,
                [spec.bits] * n_chunks,
                [standardize] * n_chunks,
            )
        )
    packed = np.concatenate([r[0] for r in results], axis=0)
    reasons = [x for r in results for x in r[1]]
    canonical = [x for r in results for x in r[2]]
    return packed, reasons, canonical


# --------------------------------------------------------------------------- cache


def _cache_key(unique: list[str], spec: FingerprintSpec, standardize: bool) -> str:
    digest = hashlib.sha256()
    header = {"v": _CACHE_VERSION, "rdkit": rdBase.rdkitVersion, "std": standardize, **spec.to_dict()}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for smi in unique:
        digest.update(smi.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def _cache_dir(cache: bool | Path) -> Path | None:
    if cache is False or cache is None:
        return None
    return paths.cache_dir() / "fingerprints" if cache is True else Path(cache)


def _cache_load(
    path: Path, unique: list[str], bits: int
) -> tuple[np.ndarray, list[str], list[str]] | None:
    """Load a shard; None (and remove it) when missing, corrupt or not matching the input."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = data["smiles"]
            packed = data["packed"]
            reasons = data["reasons"].tolist()
            canonical = data["canonical"].tolist()
        ok = (
            stored.shape == (len(unique),)
            and packed.shape == (len(unique), (bits + 7) // 8)
            and packed.dtype == np.uint8
            and len(reasons) == len(canonical) == len(unique)
            and stored.tolist() == unique
        )
    except Exception:
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
        return None
    return packed, reasons, canonical


def _cache_store(
    path: Path, unique: list[str], packed: np.ndarray, reasons: list[str], canonical: list[str]
) -> None:
    """Write a shard atomically (temp file + rename); cache failures never break featurization."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    smiles=np.array(unique, dtype=str),
                    packed=packed,
                    reasons=np.array(reasons, dtype=str),
                    canonical=np.array(canonical, dtype=str),
                )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


# --------------------------------------------------------------------------- public API


def featurize_smiles(
    smiles: Sequence[str],
    spec: FingerprintSpec = FingerprintSpec(),
    *,
    standardize: bool = False,
    n_jobs: int | None = None,
    cache: bool | Path = False,
) -> Featurized:
    """SMILES → Morgan bit matrix, one row per input (duplicates featurized once).

    n_jobs: worker processes (None = all cores; small inputs run in-process).
    cache: False, True (paths.cache_dir()/"fingerprints") or a directory for on-disk shards.
    """
    items = ["" if s is None or (isinstance(s, float) and s != s) else str(s) for s in smiles]
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(s, len(index)) for s in items), dtype=np.int64, count=len(items))
    unique = list(index)

    directory = _cache_dir(cache)
    shard = directory / f"{_cache_key(unique, spec, standardize)}.npz" if directory else None
    loaded = _cache_load(shard, unique, spec.bits) if shard is not None else None
    if loaded is None:
        loaded = (
            _featurize_unique(unique, spec, standardize, n_jobs)
            if unique
            else (np.zeros((0, (spec.bits + 7) // 8), np.uint8), [], [])
        )
        if shard is not None:
            _cache_store(shard, unique, *loaded)
    packed, reasons_u, canonical_u = loaded

    fingerprints = np.unpackbits(packed, axis=1, count=spec.bits)[inverse] if len(items) else np.zeros(
        (0, spec.bits), np.uint8
    )
    reasons = [reasons_u[i] for i in inverse]
    canonical = [canonical_u[i] for i in inverse]
    valid = np.array([r == "" for r in reasons], dtype=bool)
    return Featurized(fingerprints=fingerprints, valid=valid, reasons=reasons, canonical=canonical)


def max_tanimoto(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Max Tanimoto similarity of each query bit row to any reference row (0 when reference is empty)."""
    query = np.asarray(query)
    reference = np.asarray(reference)
    if query.ndim != 2:
        raise ValueError(f"query must be 2-D (n, bits), got shape {query.shape}")
    if reference.size == 0 or len(query) == 0:
        return np.zeros(len(query), dtype=np.float64)
    if reference.ndim != 2 or reference.shape[1] != query.shape[1]:
        raise ValueError(f"reference shape {reference.shape} does not match query bits {query.shape[1]}")
    q = (query != 0).astype(np.float32)
    r = (reference != 0).astype(np.float32)
    q_count = q.sum(axis=1)
    r_count = r.sum(axis=1)
    best = np.zeros(len(q), dtype=np.float64)
    step = max(1, 2_000_000 // max(1, len(r)))  # bound the (step, n_ref) intermediate
    for start in range(0, len(q), step):
        inter = q[start : start + step] @ r.T
        union = q_count[start : start + step, None] + r_count[None, :] - inter
        sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        best[start : start + step] = sim.max(axis=1)
    return best
