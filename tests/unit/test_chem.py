"""Tests for assayfew.chem: parsing, fingerprints (bit-equal to RDKit), cache, Tanimoto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem, DataStructs, RDConfig
from rdkit.Chem import rdFingerprintGenerator

from assayfew import chem
from assayfew.chem import FingerprintSpec, featurize_smiles, max_tanimoto, parse_smiles

#: SMILES that exercise the fast parse path's edges: explicit/isotopic H atoms, stereo, CXSMILES,
#: surrounding whitespace, charges, dative bonds, organometallics, and several kinds of failure.
_TRICKY = [
    "[H]C([H])([H])O", "[2H]C([2H])([2H])O", "[H][H]", "[H+]", "B1([H])OC(C)O1", "C[C@H](N)C(=O)O",
    "C[C@@H](C)C", "[C@@H]", "F/C=C/F", "F/C=C\\F", "C/C=C/C=C/C", "C[S@](=O)CC", "C1CC[C@@H]2CCCC[C@H]2C1",
    "OC[C@@H](O)[C@@H](O)[C@H](O)[C@H](O)C=O", "C1=CC=CC=C1 |c:0,2,4|", "CCO ethanol", " CCO", "CCO\t",
    "[NH4+].[Cl-]", "c1ccc2[nH]ccc2c1", "O=[N+]([O-])c1ccccc1", "[O-][n+]1ccccc1", "CC[Hg]CC", "[Na]Cl",
    "N->[Fe]", "[13CH3]C", "*C", "C%10CC%10", "[CH2]C", "c1cccc1", "C1CC", "CN(C)(C)(C)C", "Nope", "[Zz]C", "",
]


def _nci_smiles(n: int) -> list[str]:
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    return [line.split()[0] for line in path.read_text().splitlines()[:n]]


@pytest.mark.parametrize("spec", [FingerprintSpec(), FingerprintSpec(radius=3, bits=2048)])
def test_fingerprints_bit_equal_to_rdkit_reference(spec: FingerprintSpec) -> None:
    smiles = _nci_smiles(200)
    result = featurize_smiles(smiles, spec)
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=spec.radius, fpSize=spec.bits)
    checked = 0
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            assert not result.valid[i] and result.reasons[i]
            assert not result.fingerprints[i].any()
            continue
        ref = np.zeros(spec.bits, dtype=np.uint8)
        DataStructs.ConvertToNumpyArray(gen.GetFingerprint(mol), ref)
        assert np.array_equal(result.fingerprints[i], ref), smi
        assert result.canonical[i] == Chem.MolToSmiles(mol)
        checked += 1
    assert checked > 180
    assert result.fingerprints.dtype == np.uint8 and result.fingerprints.shape == (200, spec.bits)


@pytest.mark.parametrize("spec", [FingerprintSpec(), FingerprintSpec(radius=1, bits=1000)])
def test_without_canonical_matches_reference_parser(spec: FingerprintSpec) -> None:
    """canonical=False takes a cheaper parse; bits and reasons must equal MolFromSmiles + generator."""
    smiles = _nci_smiles(300) + _TRICKY
    fast = featurize_smiles(smiles, spec, canonical=False)
    assert fast.canonical is None
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=spec.radius, fpSize=spec.bits)
    for i, smi in enumerate(smiles):
        mol, reason = parse_smiles(smi)
        assert fast.reasons[i] == reason, smi
        assert bool(fast.valid[i]) == (mol is not None), smi
        expected = gen.GetFingerprintAsNumPy(mol) if mol is not None else np.zeros(spec.bits, np.uint8)
        assert np.array_equal(fast.fingerprints[i], expected), smi
    assert not fast.valid[-6:].any() and fast.valid[:-6].all()  # only the failures ending _TRICKY
    full = featurize_smiles(smiles, spec)
    assert np.array_equal(full.fingerprints, fast.fingerprints) and full.reasons == fast.reasons


@pytest.mark.parametrize("canonical", [True, False])
def test_parallel_equals_serial(monkeypatch: pytest.MonkeyPatch, canonical: bool) -> None:
    smiles = _nci_smiles(600) * 3  # with duplicates
    smiles = [f"{s}.C" if i % 7 == 0 else s for i, s in enumerate(smiles)] + _TRICKY
    monkeypatch.setattr(chem, "_PARALLEL_MIN", 200)  # ~900 unique SMILES: make sure the pool runs
    started = []
    real_pool = chem.ProcessPoolExecutor
    monkeypatch.setattr(chem, "ProcessPoolExecutor", lambda *a, **k: started.append(1) or real_pool(*a, **k))
    parallel = featurize_smiles(smiles, n_jobs=2, canonical=canonical)
    assert started
    serial = featurize_smiles(smiles, n_jobs=1, canonical=canonical)
    assert len(started) == 1
    assert np.array_equal(parallel.fingerprints, serial.fingerprints)
    assert np.array_equal(parallel.valid, serial.valid)
    assert parallel.reasons == serial.reasons and parallel.canonical == serial.canonical


def test_invalid_rows_keep_position_and_reason() -> None:
    result = featurize_smiles(["CCO", "", "not_a_smiles", "c1cccc1", "CN(C)(C)(C)C", "CCO"])
    assert result.valid.tolist() == [True, False, False, False, False, True]
    assert result.reasons[1] == "empty SMILES"
    assert result.reasons[2] == "unparsable SMILES"
    assert result.reasons[3].startswith("sanitization failed")
    assert result.reasons[4].startswith("sanitization failed")
    assert not result.fingerprints[1:5].any()
    assert np.array_equal(result.fingerprints[0], result.fingerprints[5])
    assert result.canonical[2] == ""


def test_parse_smiles_standardize() -> None:
    mol, reason = parse_smiles("CC(=O)[O-].[Na+]", standardize=True)
    assert reason == "" and Chem.MolToSmiles(mol) == "CC(=O)O"
    mol, reason = parse_smiles("CC(=O)[O-].[Na+]")
    assert "." in Chem.MolToSmiles(mol)
    assert parse_smiles("C1CC") == (None, "unparsable SMILES")


def test_empty_input() -> None:
    result = featurize_smiles([])
    assert result.fingerprints.shape == (0, 1024) and result.valid.shape == (0,)


def test_cache_identical_and_robust(tmp_path: Path) -> None:
    smiles = _nci_smiles(300) + ["bad(", ""]
    spec = FingerprintSpec(radius=2, bits=512)
    first = featurize_smiles(smiles, spec, cache=tmp_path)
    shards = list(tmp_path.glob("*.npz"))
    assert len(shards) == 1
    again = featurize_smiles(smiles, spec, cache=tmp_path)
    for a, b in ((first, again), (first, featurize_smiles(smiles, spec))):
        assert np.array_equal(a.fingerprints, b.fingerprints)
        assert np.array_equal(a.valid, b.valid)
        assert a.reasons == b.reasons and a.canonical == b.canonical
    # a different spec or standardize flag is a different shard
    featurize_smiles(smiles, spec, standardize=True, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    # corruption is detected and rebuilt
    shards[0].write_bytes(b"garbage")
    rebuilt = featurize_smiles(smiles, spec, cache=tmp_path)
    assert np.array_equal(rebuilt.fingerprints, first.fingerprints)
    with np.load(shards[0], allow_pickle=False) as data:
        assert data["packed"].shape == (len(smiles), 64)


def test_cache_adds_canonical_when_asked(tmp_path: Path) -> None:
    smiles = _nci_smiles(100) + ["bad(", "CCO", "CCO"]
    bits_only = featurize_smiles(smiles, cache=tmp_path, canonical=False)
    assert bits_only.canonical is None
    (shard,) = tmp_path.glob("*.npz")
    with np.load(shard, allow_pickle=False) as data:
        assert "canonical" not in data.files
    with_canonical = featurize_smiles(smiles, cache=tmp_path)  # shard lacks them: computed, shard rewritten
    assert with_canonical.canonical == featurize_smiles(smiles).canonical
    assert with_canonical.canonical[-1] == "CCO" and with_canonical.canonical[-3] == ""
    assert [p.name for p in tmp_path.glob("*.npz")] == [shard.name]
    with np.load(shard, allow_pickle=False) as data:
        assert data["canonical"].tolist()[-1] == "CCO"
    again = featurize_smiles(smiles, cache=tmp_path, canonical=False)
    assert again.canonical is None
    assert np.array_equal(again.fingerprints, bits_only.fingerprints) and again.reasons == bits_only.reasons


def test_max_tanimoto_matches_rdkit() -> None:
    smiles = _nci_smiles(60)
    fp = featurize_smiles(smiles).fingerprints
    query, ref = fp[:20], fp[20:]
    got = max_tanimoto(query, ref)
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    bvs = [gen.GetFingerprint(Chem.MolFromSmiles(s)) if Chem.MolFromSmiles(s) else None for s in smiles]
    for i in range(20):
        sims = [DataStructs.TanimotoSimilarity(bvs[i], b) for b in bvs[20:] if b is not None and bvs[i] is not None]
        if sims:
            assert got[i] == pytest.approx(max(sims), abs=1e-6)
    assert np.array_equal(max_tanimoto(query, ref[:0]), np.zeros(20))
    assert max_tanimoto(query[:1], query[:1])[0] == pytest.approx(1.0)


def _ecfp_then_fcfp(mol: Chem.Mol, spec: FingerprintSpec) -> np.ndarray:
    """Independent reference for a spec with feature bits: ECFP bits, then FCFP bits, each from RDKit."""
    ecfp = rdFingerprintGenerator.GetMorganGenerator(radius=spec.radius, fpSize=spec.bits - spec.feature_bits)
    fcfp = rdFingerprintGenerator.GetMorganGenerator(
        radius=spec.radius, fpSize=spec.feature_bits,
        atomInvariantsGenerator=rdFingerprintGenerator.GetMorganFeatureAtomInvGen())
    return np.concatenate([ecfp.GetFingerprintAsNumPy(mol), fcfp.GetFingerprintAsNumPy(mol)]).astype(np.uint8)


@pytest.mark.parametrize("spec", [FingerprintSpec(radius=2, bits=4096, feature_bits=2048),  # raw bytes, joined
                                  FingerprintSpec(radius=1, bits=100, feature_bits=37)])  # unaligned: numpy route
@pytest.mark.parametrize("canonical", [True, False])
def test_feature_bits_are_ecfp_then_fcfp(spec: FingerprintSpec, canonical: bool) -> None:
    smiles = _nci_smiles(150) + _TRICKY
    result = featurize_smiles(smiles, spec, canonical=canonical)
    assert result.fingerprints.shape == (len(smiles), spec.bits)
    checked = 0
    for i, smi in enumerate(smiles):
        mol, reason = parse_smiles(smi)
        assert result.reasons[i] == reason, smi
        if mol is None:
            assert not result.fingerprints[i].any()
            continue
        assert np.array_equal(result.fingerprints[i], _ecfp_then_fcfp(mol, spec)), smi
        checked += 1
    assert checked > 150
    # the feature part is not a copy of the structure part: FCFP merges atoms ECFP tells apart
    fcfp_part = result.fingerprints[:, spec.structure_bits:]
    assert fcfp_part.any(axis=1)[result.valid].all()


def test_on_bits_first_columns_equal_dense_slice() -> None:
    x = (np.random.default_rng(0).random((7, 40)) < 0.3).astype(np.uint8)
    x[3] = 0
    bits = chem.OnBits.from_dense(x)
    for width in (0, 1, 17, 40, 50):
        got = bits.first_columns(width)
        assert np.array_equal(got.dense(), x[:, :width]) and got.n == 7
        assert np.array_equal(np.diff(got.starts()), x[:, :width].sum(axis=1))


def test_feature_bits_spec_checks_and_serialises() -> None:
    with pytest.raises(ValueError, match="feature_bits"):
        FingerprintSpec(bits=64, feature_bits=64)
    with pytest.raises(ValueError, match="feature_bits"):
        FingerprintSpec(bits=64, feature_bits=-1)
    assert FingerprintSpec(bits=2048).to_dict() == {"radius": 2, "bits": 2048}  # ECFP-only specs unchanged
    spec = FingerprintSpec(radius=3, bits=4096, feature_bits=1024)
    assert spec.to_dict() == {"radius": 3, "bits": 4096, "feature_bits": 1024} and spec.structure_bits == 3072
    assert FingerprintSpec.from_dict(spec.to_dict()) == spec
    assert FingerprintSpec.from_dict({"radius": 2, "bits": 512}) == FingerprintSpec(bits=512)
