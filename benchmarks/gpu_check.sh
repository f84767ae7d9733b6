#!/usr/bin/env bash
# The device checks for a session that is lent a CUDA machine (issue 10, issue 8's image_step on GPU):
# CUDA tests, the GPU training benchmark, the image step benchmark and a two-rank torchrun run.
# Needs a CUDA build of torch and the task cache (`assayfew tasks ../shared/data/simpd_chembl32_ki
# ../shared/data/chembl28_ycu ../shared/data/kiba/kiba_long.csv.gz --out cache/shared_tasks`, 11 MB).
# Prints each step's JSON line; stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python -m pytest -q -rs tests/unit/test_train_device.py tests/unit/test_meta_device.py tests/unit/test_distributed.py
python benchmarks/gpu_train.py --device cuda
python benchmarks/meta_step.py --device cuda
python benchmarks/image_step.py --device cuda
torchrun --standalone --nproc-per-node 2 -m assayfew train --corpus cache/shared_tasks \
    --split assays/shared_heldout.json --epochs 1 --iters 50 --device cuda --out "${TMPDIR:-/tmp}/gpu_check_run"
