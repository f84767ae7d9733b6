"""Prediction speed: adapt + predict for 32 measured and 1,000 unmeasured compounds, in process and via the CLI.

    python benchmarks/predict.py [--model models/default] [--repeats 5]

Ends with one JSON line: adapt_predict_s (median, in process, ensemble and cross-validation included),
featurize_s (its featurization part), cli_s (median wall time of `assayfew predict` end to end, start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from assayfew.chem import featurize_smiles
from assayfew.paths import default_model_dir
from assayfew.predict import adapt_and_predict, example_assay, load_default_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=default_model_dir())
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    table, _ = example_assay(n_measured=32, seed=0)
    measured = table[table["pIC50"].notna()]
    unmeasured = table[table["pIC50"].isna()]
    unmeasured = pd.concat([unmeasured, unmeasured]).iloc[:1000]  # the example has 985: top up to 1,000
    assay = pd.concat([measured, unmeasured]).reset_index(drop=True)
    model = load_default_model(args.model)
    adapt_and_predict(assay, model)  # warm-up (imports, allocator)

    inproc, feat = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        featurize_smiles(assay["smiles"].tolist(), model.spec)
        feat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        adapt_and_predict(assay, model)
        inproc.append(time.perf_counter() - t0)

    cli = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "assay.csv"
        assay.to_csv(src, index=False)
        exe = Path(sys.executable).with_name("assayfew")
        for _ in range(max(2, args.repeats // 2)):
            t0 = time.perf_counter()
            subprocess.run([str(exe), "predict", str(src), "--model", str(args.model), "--out",
                            str(Path(tmp) / "out.csv")], check=True, capture_output=True, env=os.environ.copy())
            cli.append(time.perf_counter() - t0)
    result = {"n_measured": len(measured), "n_unmeasured": len(unmeasured),
              "adapt_predict_s": round(statistics.median(inproc), 4),
              "featurize_s": round(statistics.median(feat), 4), "cli_s": round(statistics.median(cli), 3),
              "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
