#!/usr/bin/env bash
# LyaNet (experiment=lyanet_fmnist) against its backprop baseline (experiment=backprop_fmnist) on
# the real MNIST test images split 8,000 / 2,000 (dataset=mnist_t10k), the same model and epochs:
# prints clean accuracy, PGD l-inf 8/255 accuracy, the test solve's NFE, the NFE of both under the
# same dopri5 solve (eval=dynamics) and the share of test examples whose V decays at rate >= kappa.
#
#   scripts/lyanet_vs_backprop.sh T10K_DIR OUT_DIR [EPOCHS] [extra overrides...]
#
# T10K_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (e.g. ../shared/data/mnist-t10k).
# EPOCHS (default 120, the paper's): lr x0.1 and stochastic weight averaging after half of them.
# Extra overrides go to both runs, e.g. model.encoder=small model.hidden=32 (the quick CPU check)
# or eval.pgd.limit=500.
set -euo pipefail
t10k=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd); epochs=${3:-120}; shift $(( $# < 3 ? $# : 3 ))
root="$out/data"
mkdir -p "$root/MNIST/raw"
cp -n "$t10k"/t10k-*-ubyte* "$root/MNIST/raw/"
half=$(( epochs / 2 ))
python=${PYTHON:-python}
for exp in lyanet_fmnist backprop_fmnist; do
  "$python" -m odex.train "hydra.run.dir=$out/$exp" "experiment=$exp" dataset=mnist_t10k "dataset.root=$root" \
    "trainer.max_epochs=$epochs" "schedule.scheduler.step_size=$half" "callbacks.swa.after_epoch=$half" \
    logger=none trainer.progress=false "$@"
done
"$python" "$(dirname "$0")/bench.py" runs "$out/lyanet_fmnist" "$out/backprop_fmnist" --keys status test/acc \
  test/pgd_linf_acc test/nfe test/dynamics_nfe test/lyapunov_decay best/epoch best/test/acc time/total_s
