#!/usr/bin/env bash
# The committed held-out benchmark: run from the repository root (resumable: re-running skips finished cells).
# The task cache is built once as in models/default/RECIPE.md:
#   assayfew tasks ../shared/data/simpd_chembl32_ki ../shared/data/chembl28_ycu \
#       ../shared/data/kiba/kiba_long.csv.gz --out cache/shared_tasks
set -euo pipefail
OMP_NUM_THREADS=1 nice -n 10 assayfew bench drug --grid reports/heldout_bench/GRID.toml --out runs/heldout_bench \
    --corpus cache/shared_tasks --split assays/shared_heldout.json
# what is committed: the report, its plots and the results CSV
mkdir -p reports/heldout_bench/plots
cp runs/heldout_bench/report.md runs/heldout_bench/results.csv reports/heldout_bench/
cp runs/heldout_bench/plots/*.png reports/heldout_bench/plots/
