#!/usr/bin/env bash
# Makes reports/omniglot_nme.md's numbers: Omniglot, non-mutually-exclusive 5-way and 20-way 1-shot,
# MAML vs MAML+MetaMix vs ANIL+MetaMix. Meta-train on images_background_small1 (15% of its characters held
# out for choosing the epoch), meta-test on images_background_small2 (600 mutually exclusive episodes).
# CPU-sized: 64-filter Conv-4, 1 inner step (rate 0.4) at meta-training, 3 at meta-test, second order.
# Usage: bash reports/omniglot_nme.sh [RUNS_DIR] [SEED]   (the six trainings in parallel, one thread each)
set -euo pipefail
RUNS=${1:-runs/omniglot_nme}
SEED=${2:-0}
DATA=${ASSAYFEW_SHARED_DATA:-../shared/data}/omniglot
mkdir -p "$RUNS"
common=(--data "$DATA/images_background_small1.zip" --test-data "$DATA/images_background_small2.zip"
        --nme --shot 1 --query 1 --inner-steps 1 --eval-steps 3 --inner-lr 0.4 --outer-lr 0.001
        --alpha 2 --beta 2 --layers 0,1,2,3,4 --episodes 600 --seed "$SEED" --device cpu)
run() {  # name way epochs iters meta_batch test_query val_episodes algo mix
  OMP_NUM_THREADS=1 assayfew images train "${common[@]}" --out "$RUNS/$1" --way "$2" --epochs "$3" --iters "$4" \
    --meta-batch "$5" --test-query "$6" --val-episodes "$7" --algo "$8" --mix "$9" > "$RUNS/$1.json" 2> "$RUNS/$1.log"
}
run w5_maml 5 3 50 4 15 30 maml none &
run w5_maml_metamix 5 3 50 4 15 30 maml metamix &
run w5_anil_metamix 5 3 50 4 15 30 anil metamix &
run w20_maml 20 2 40 2 5 20 maml none &
run w20_maml_metamix 20 2 40 2 5 20 maml metamix &
run w20_anil_metamix 20 2 40 2 5 20 anil metamix &
wait
for f in "$RUNS"/*.json; do echo "$(basename "$f" .json) $(cat "$f")"; done
