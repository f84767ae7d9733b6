#!/usr/bin/env bash
# Makes reports/pose.md's numbers: the procedural pose data (make-data, seed 0: 60 training + 15 test molecules
# x 50 views, 128x128), then MAML, MAML+MetaMix and ANIL+MetaMix at 10 and 15 shots, seeds 0 and 1, and MAML
# after one meta-iteration at both (a reference for the gap the object sets alone make).
# CPU-sized: default PoseNet (encoder 8,16,16,16 not adapted; two adapted 16-filter blocks), meta-batch 10,
# 10 query views, 5 inner steps (rate 0.01) second order, outer rate 0.001, EPOCHS x ITERS meta-iterations
# (best epoch on 6 held-out training objects, 100 tasks), one thread per run at nice 10, two runs at a time.
# Every model is evaluated on 1,000 tasks (seed 1000, the same tasks for every model) of the test objects and of
# the training objects it was meta-trained on (--trained-objects): test MSE next to train MSE.
# Usage: bash reports/pose.sh [RUNS_DIR]    (EPOCHS, ITERS, SEEDS10, SEEDS15 override the budget)
set -euo pipefail
RUNS=${1:-runs/pose}
EPOCHS=${EPOCHS:-5}
ITERS=${ITERS:-50}
SEEDS10=${SEEDS10:-"0 1"}
SEEDS15=${SEEDS15:-"0 1"}
DATA="$RUNS/data"
mkdir -p "$RUNS"
[ -f "$DATA/train.npz" ] || OMP_NUM_THREADS=1 assayfew pose make-data --out "$DATA" --seed 0 2> "$RUNS/make-data.log"
common=(--data "$DATA/train.npz" --meta-batch 10 --query 10 --inner-steps 5
        --eval-steps 5 --inner-lr 0.01 --outer-lr 0.001 --alpha 0.5 --beta 0.5 --val-episodes 100 --device cpu)
one() {  # name shot algo mix seed [epochs iters]
  local run="$RUNS/$1"
  OMP_NUM_THREADS=1 nice -n 10 assayfew pose train "${common[@]}" --out "$run" --shot "$2" --algo "$3" --mix "$4" \
    --seed "$5" --epochs "${6:-$EPOCHS}" --iters "${7:-$ITERS}" 2> "$run.train.log"
  for split in test train; do
    local flag=(); [ "$split" = train ] && flag=(--trained-objects)
    OMP_NUM_THREADS=1 nice -n 10 assayfew pose evaluate --model "$run/model" --data "$DATA/$split.npz" --shot "$2" \
      --query 10 --episodes 1000 --seed 1000 --device cpu "${flag[@]}" --out "$run.$split.json" > /dev/null 2>> "$run.train.log"
  done
}
todo=("k10_init_s0 10 maml none 0 1 1" "k15_init_s0 15 maml none 0 1 1")
for shot in 10 15; do
  seeds=$SEEDS10; [ "$shot" = 15 ] && seeds=$SEEDS15
  for seed in $seeds; do
    todo+=("k${shot}_maml_s$seed $shot maml none $seed" "k${shot}_maml_metamix_s$seed $shot maml metamix $seed"
           "k${shot}_anil_metamix_s$seed $shot anil metamix $seed")
  done
done
lane() {  # i: runs i, i+2, i+4, ... of the list, one after another
  for ((j = $1; j < ${#todo[@]}; j += 2)); do one ${todo[$j]}; done
}
start=$(date +%s)
lane 0 & lane 1 &
wait
echo "wall $(( $(date +%s) - start )) s" > "$RUNS/wall.txt"
python - "$RUNS" <<'EOF'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
print("| K | method | seed | test MSE ± 95% CI | train MSE ± 95% CI | gap (test - train) | best epoch | train min |")
print("|---|---|---|---|---|---|---|---|")
for shot in (10, 15):
    for method, label in (("init", "MAML, 1 iteration"), ("maml", "MAML"), ("maml_metamix", "MAML+MetaMix"),
                          ("anil_metamix", "ANIL+MetaMix")):
        for f in sorted(runs.glob(f"k{shot}_{method}_s*.test.json")):
            name = f.name[: -len(".test.json")]
            if not (runs / f"{name}.train.json").exists():  # unfinished
                continue
            te, tr = json.loads(f.read_text()), json.loads((runs / f"{name}.train.json").read_text())
            state = json.loads((runs / name / "state" / "state.json").read_text())
            minutes = sum(r["seconds"] for r in state["history"]) / 60
            print(f"| {shot} | {label} | {name.rsplit('_s', 1)[1]} | {te['mse']:.3f} ± {te['ci95']:.3f} | "
                  f"{tr['mse']:.3f} ± {tr['ci95']:.3f} | {te['mse'] - tr['mse']:.3f} | {state['best_epoch']} | {minutes:.1f} |")
EOF
cat "$RUNS/wall.txt"
