"""Featurization throughput: featurize_smiles vs a plain serial RDKit loop, and a cached re-run.

Run: python benchmarks/featurize.py [--n 20000] [--repeats 5] [--jobs N]
Timed: featurize_smiles without canonical SMILES (what the benchmark target is about), the plain serial
RDKit loop (interleaved with it), one run with canonical SMILES, and cold/warm on-disk cache runs.
The machine may be shared: medians of repeats, CPU time per SMILES and the load average are reported.
Prints progress to stderr, then one JSON line with n, smiles_per_s, serial_smiles_per_s, ratio,
cached_ratio, load_avg_1m (before, after) and more.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
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


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children)."""
    before = os.times()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = os.times()
    cpu = sum(after[:4]) - sum(before[:4])
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=None, help="featurize_smiles n_jobs (default: all cores)")
    args = parser.parse_args()
    spec = FingerprintSpec()
    smiles, source = load_smiles(args.n)
    n = len(smiles)
    load_before = os.getloadavg()[0]
    print(f"{n} SMILES from {source}; load average {load_before:.2f} on {os.cpu_count()} cores", file=sys.stderr)

    # correctness first: the fast path must give the reference bits
    check = featurize_smiles(smiles, spec, n_jobs=args.jobs, canonical=False)
    if not np.array_equal(check.fingerprints, serial(smiles, spec)):
        raise SystemExit("featurize_smiles disagrees with the serial RDKit reference")

    fast, slow = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        fast.append(timed(lambda: featurize_smiles(smiles, spec, n_jobs=args.jobs, canonical=False)))
        slow.append(timed(lambda: serial(smiles, spec)))
    with_canonical = timed(lambda: featurize_smiles(smiles, spec, n_jobs=args.jobs))
    with tempfile.TemporaryDirectory() as tmp:
        run = lambda: featurize_smiles(smiles, spec, n_jobs=args.jobs, cache=Path(tmp), canonical=False)  # noqa: E731
        cold = timed(run)
        warm = [timed(run) for _ in range(args.repeats)]
    load_after = os.getloadavg()[0]

    fast_s = statistics.median(w for w, _ in fast)
    slow_s = statistics.median(w for w, _ in slow)
    warm_s = statistics.median(w for w, _ in warm)
    fast_cpu = statistics.median(c for _, c in fast)
    slow_cpu = statistics.median(c for _, c in slow)
    print(
        f"featurize_smiles (no canonical) walls {[round(w, 2) for w, _ in fast]} s, median {fast_s:.2f} s, "
        f"CPU {fast_cpu / n * 1e6:.0f} us/SMILES\n"
        f"serial RDKit loop walls {[round(w, 2) for w, _ in slow]} s, median {slow_s:.2f} s, "
        f"CPU {slow_cpu / n * 1e6:.0f} us/SMILES\n"
        f"with canonical SMILES {with_canonical[0]:.2f} s; cold cache {cold[0]:.2f} s, warm median {warm_s:.3f} s\n"
        f"load average {load_before:.2f} before, {load_after:.2f} after",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "n": n,
                "source": source,
                "smiles_per_s": round(n / fast_s, 1),
                "serial_smiles_per_s": round(n / slow_s, 1),
                "ratio": round(slow_s / fast_s, 3),
                "cached_ratio": round(fast_s / warm_s, 1),
                "canonical_smiles_per_s": round(n / with_canonical[0], 1),
                "cpu_us_per_smiles": round(fast_cpu / n * 1e6, 1),
                "serial_cpu_us_per_smiles": round(slow_cpu / n * 1e6, 1),
                "repeats": args.repeats,
                "cores": os.cpu_count(),
                "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
