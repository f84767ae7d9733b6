"""Featurization throughput: featurize_smiles vs a plain serial RDKit loop, and a cached re-run.

Run: python benchmarks/featurize.py [--n 20000] [--repeats 3]
Prints progress, then one JSON line with smiles_per_s, serial_smiles_per_s, ratio, cached_ratio, n.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import rdFingerprintGenerator

from assayfew import paths
from assayfew.chem import FingerprintSpec, featurize_smiles


def _shared_smiles(root: Path) -> list[str]:
    """SMILES from the shared corpora, in a fixed order."""
    out: list[str] = []
    for csv in sorted((root / "simpd_chembl32_ki").glob("*.csv")):
        out += [line.split(",", 1)[0] for line in csv.read_text().splitlines()[1:]]
    for csv in sorted((root / "chembl28_ycu").glob("*.csv")):
        out += [line.rsplit(",", 1)[0] for line in csv.read_text().splitlines()[1:]]
    for name in ("kiba/kiba_long.csv.gz", "davis/davis_long.csv.gz"):
        path = root / name
        if path.exists():
            with gzip.open(path, "rt") as handle:
                next(handle)
                out += [line.split(",")[2] for line in handle]
    return out


def load_smiles(n: int) -> tuple[list[str], str]:
    nci = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    smiles = [line.split()[0] for line in nci.read_text().splitlines() if line.strip()]
    root = paths.shared_data_dir()
    source = "RDKit first_5K.smi + shared corpora"
    if root.is_dir():
        smiles += _shared_smiles(root)
    else:
        source = "RDKit first_5K.smi only (shared data absent)"
        print(f"NOTE: shared data not found at {root}; using only what RDKit ships", file=sys.stderr)
    unique = list(dict.fromkeys(s for s in smiles if s))
    return unique[:n], source


def serial(smiles: list[str], spec: FingerprintSpec) -> np.ndarray:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=spec.radius, fpSize=spec.bits)
    out = np.zeros((len(smiles), spec.bits), dtype=np.uint8)
    with rdBase.BlockLogs():
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi)
            if mol is not None:
                out[i] = gen.GetFingerprintAsNumPy(mol)
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = FingerprintSpec()
    smiles, source = load_smiles(args.n)
    print(f"{len(smiles)} SMILES from {source}", file=sys.stderr)

    fast = statistics.median(timed(lambda: featurize_smiles(smiles, spec)) for _ in range(args.repeats))
    slow = statistics.median(timed(lambda: serial(smiles, spec)) for _ in range(args.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        cold = timed(lambda: featurize_smiles(smiles, spec, cache=Path(tmp)))
        warm = statistics.median(
            timed(lambda: featurize_smiles(smiles, spec, cache=Path(tmp))) for _ in range(args.repeats)
        )
    print(f"featurize_smiles {fast:.2f}s, serial {slow:.2f}s, cold cache {cold:.2f}s, warm {warm:.3f}s", file=sys.stderr)
    n = len(smiles)
    print(
        json.dumps(
            {
                "n": n,
                "source": source,
                "smiles_per_s": round(n / fast, 1),
                "serial_smiles_per_s": round(n / slow, 1),
                "ratio": round(slow / fast, 3),
                "cached_ratio": round(fast / warm, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
