"""Screening-library speed and memory: `assayfew predict assay.csv --library lib.smi --out scored.csv`.

    python benchmarks/screen.py [--size 1000000] [--repeats 1] [--model models/default]

The library: real SMILES from ../shared/data (every distinct SMILES of the SIMPD, ChEMBL28, KIBA, Davis and
ChEMBL33 sets), then randomised SMILES of the same molecules (RDKit `doRandom`; every row a different string,
so nothing is parsed once for many rows) up to `--size` rows, plus a few invalid rows; written once to a
temporary directory (reused by later runs). The assay: RDKit's CHEMBL2321810 example, 32 measured compounds.

Measured back to back in the same run: the featurisation rate of `chem.featurize_smiles` on the same SMILES
with the same number of worker processes (the floor: scoring needs every SMILES parsed), then the command end
to end (start-up, adaptation, reading, featurising, scoring, writing), its peak memory (resident set of the
command and its workers together, bounded above by the sum of each process's peak RSS, VmHWM, sampled every 0.25 s from the process tree only) and a check of the output (every row, in input order,
invalid rows kept). Ends with one JSON line; `ratio` = scored per second / featurised per second (goal
>= 0.8, peak memory <= 1 GB at 1,000,000 compounds).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from assayfew.chem import featurize_smiles
from assayfew.paths import default_model_dir, shared_data_dir
from assayfew.predict import example_assay

SAMPLE_S = 0.25  # memory sampling interval (seconds)
INVALID = ("not_a_smiles", "", "C1CC", "c1cccc1X", "CC(C)(C)(C)(C)C")
SOURCES = ("simpd_chembl32_ki/*.csv", "chembl28_ycu/*.csv", "kiba/kiba_long.csv.gz", "davis/davis_long.csv.gz",
           "chembl33_organism/chembl33_organism_long.csv.gz")


def real_smiles(data: Path) -> list[str]:
    """Distinct SMILES of the shared sets, in a fixed order."""
    seen: dict[str, None] = {}
    for pattern in SOURCES:
        for path in sorted(data.glob(pattern)):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", newline="") as handle:
                reader = csv.DictReader(handle)
                column = next((c for c in reader.fieldnames or [] if c.lower() in ("smiles", "canonical_smiles")),
                              None)
                if column is not None:
                    for row in reader:
                        if row[column]:
                            seen.setdefault(row[column], None)
    return list(seen)


def _randomised(args: tuple[list[str], int]) -> list[str]:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    smiles, seed = args
    out = []
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi)
        out.append(smi if mol is None else Chem.MolToSmiles(mol, doRandom=True, canonical=False))
    return out


def build_library(size: int, data: Path, cache: Path, jobs: int) -> Path:
    """A .smi library of `size` rows (SMILES, id), cached in `cache`."""
    path = cache / f"library_{size}.smi"
    if path.exists():
        return path
    base = real_smiles(data)
    rows: list[str] = list(base[:size])
    rounds = 0
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        while len(rows) < size:
            rounds += 1
            need = min(len(base), size - len(rows))
            parts = [(base[a:min(a + 5000, need)], rounds) for a in range(0, need, 5000)]
            for part in pool.map(_randomised, parts):
                rows.extend(part)
    step = max(1, size // (len(INVALID) * 4))
    for k, i in enumerate(range(step // 2, size, step)):  # a few invalid rows, spread through the file
        rows[i] = INVALID[k % len(INVALID)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        for i, smi in enumerate(rows):
            handle.write(f"{smi or ''} C{i}\n" if smi else f"  C{i}\n")
    os.replace(tmp, path)
    return path


def featurize_rate(smiles_file: Path, jobs: int, bits_spec, standardize: bool) -> float:
    """SMILES per second of featurize_smiles over the library's SMILES (in slices of 50,000: bounded memory),
    with the model's standardisation setting (the command featurises the library the same way)."""
    smiles = [line.split(None, 1)[0] if not line[:1].isspace() else "" for line in open(smiles_file)]
    start = time.perf_counter()
    for a in range(0, len(smiles), 50_000):
        featurize_smiles(smiles[a:a + 50_000], bits_spec, n_jobs=jobs, canonical=False, standardize=standardize)
    return len(smiles) / (time.perf_counter() - start)


def _children(pid: int) -> list[int]:
    """Direct children of `pid` from /proc/<pid>/task/*/children (no scan of every process)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def _tree_memory(root: int) -> tuple[int, int]:
    """(sum of the peak RSS (VmHWM) of `root` and its descendants, their current PSS) in bytes. Summed
    per-process peaks bound the tree's peak from above, so a sample every SAMPLE_S seconds misses nothing
    the limit cares about; reading only the tree keeps the sampler's own CPU use small (scanning all of /proc
    every 50 ms took ~25% of the command's wall time on 2 cores)."""
    rss = pss = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(_children(pid))
        for name, key in ((f"/proc/{pid}/status", "VmHWM:"), (f"/proc/{pid}/smaps_rollup", "Pss:")):
            try:
                with open(name) as f:
                    for line in f:
                        if line.startswith(key):
                            value = int(line.split()[1]) * 1024
                            if key == "Pss:":
                                pss += value
                            else:
                                rss += value
                            break
            except OSError:
                pass
    return rss, pss


def run_screen(assay: Path, library: Path, out: Path, model: Path) -> tuple[float, float, float]:
    """(seconds, peak RSS MB, peak PSS MB) of the command end to end."""
    exe = Path(sys.executable).with_name("assayfew")
    start = time.perf_counter()
    proc = subprocess.Popen([str(exe), "predict", str(assay), "--model", str(model), "--library", str(library),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"assayfew predict --library failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return seconds, peak[0] / 2**20, peak[1] / 2**20


def check_output(out: Path, size: int) -> int:
    """Every row, in input order; returns the number of rows not scored (invalid)."""
    invalid = 0
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        for i, row in enumerate(reader):
            if row["name"] != f"C{i}":
                sys.exit(f"output row {i} is {row['name']}, expected C{i}: order not preserved")
            invalid += row["status"] != "ok"
    if i + 1 != size:
        sys.exit(f"output has {i + 1} rows, the library {size}")
    return invalid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000, help="library rows (default 1,000,000)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each measurement (median reported)")
    ap.add_argument("--model", type=Path, default=default_model_dir())
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "assayfew-bench-screen",
                    help="where the generated library is kept between runs (never the repository)")
    args = ap.parse_args()
    args.jobs = len(os.sched_getaffinity(0))  # the command's pool: all available cores

    data = shared_data_dir()
    if not (data / "README.md").exists():
        print(f"skipped: shared data not found at {data} (the library is built from its SMILES)", file=sys.stderr)
        print(json.dumps({"skipped": f"shared data not found at {data}"}))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    library = build_library(args.size, data, args.cache, args.jobs)
    table, _ = example_assay(n_measured=32, seed=0)
    from assayfew.checkpoint import load_model

    loaded = load_model(args.model)
    spec, standardize = loaded.spec, loaded.standardize
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        assay = Path(tmp) / "assay.csv"
        table[table["pIC50"].notna()].to_csv(assay, index=False)
        rates, runs = [], []
        for _ in range(args.repeats):
            rates.append(featurize_rate(library, args.jobs, spec, standardize))
            runs.append(run_screen(assay, library, Path(tmp) / "scored.csv", args.model))
        invalid = check_output(Path(tmp) / "scored.csv", args.size)
    seconds = statistics.median(r[0] for r in runs)
    rate = statistics.median(rates)
    result = {"compounds": args.size, "seconds": round(seconds, 1),
              "compounds_per_s": round(args.size / seconds), "featurize_smiles_per_s": round(rate),
              "ratio": round(args.size / seconds / rate, 3),
              "peak_rss_mb": round(max(r[1] for r in runs)), "peak_pss_mb": round(max(r[2] for r in runs)),
              "standardize": standardize, "invalid_rows_kept": invalid,
              "order_preserved": True, "jobs": args.jobs, "repeats": args.repeats,
              "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
