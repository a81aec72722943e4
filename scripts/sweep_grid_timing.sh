#!/usr/bin/env bash
# Wall-clock time of the 9-job `sweep=lr_bs_grid` run one job after another and with joblib
# (3 jobs at once, sharing the one GPU), then each sweep's report and best configuration.
#
#   scripts/sweep_grid_timing.sh <folder with MNIST/raw/t10k-*> [extra overrides...]
#   scripts/sweep_grid_timing.sh /tmp/mn                                   # the GPU check
#   scripts/sweep_grid_timing.sh /tmp/mn trainer.max_epochs=1 dataset.limit_train=1024 \
#       model.channels=8 model.hidden=16 trainer.device=cpu              # a quick CPU run
#
# To make the data folder from the repository's shared copy of MNIST's test files:
#   mkdir -p /tmp/mn/MNIST/raw && cp ../shared/data/mnist-t10k/t10k-* /tmp/mn/MNIST/raw/
set -euo pipefail
root=${1:?usage: $0 <data root holding MNIST/raw> [overrides...]}
shift
out=${OUT_DIR:-outputs/multirun/grid_timing_$(date +%Y%m%d-%H%M%S)}
common=(sweep=lr_bs_grid dataset=mnist_t10k "dataset.root=$root" trainer.progress=false "$@")
train=${ODEX_TRAIN:-odex-train}
report=${ODEX_REPORT:-odex-report}

run() {  # name, extra args...
    local name=$1; shift
    local t0=$(date +%s%N)
    $train -m "hydra.sweep.dir=$out/$name" "${common[@]}" "$@" > "$out.$name.log" 2>&1 || true
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    printf '%s: %d.%03d s wall-clock for 9 jobs\n' "$name" $((ms / 1000)) $((ms % 1000)) | tee -a "$out.times"
    tail -n 3 "$out.$name.log"
    $report "$out/$name" | grep -E '^([0-9]+ jobs|Best configuration)'
}

mkdir -p "$(dirname "$out")"
run sequential
run joblib3 hydra/launcher=shared_gpu hydra.launcher.n_jobs=3
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
echo "times in $out.times; reports in $out/*/report/"
