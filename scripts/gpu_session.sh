#!/usr/bin/env bash
# Every GPU measurement the issues' "Done when" lists ask for, in parts that each fit one call of
# the device tool (10 minutes), most important first. Results (JSON, Markdown, logs, a summary per
# part) go to OUT; paste them into docs/benchmarks.md and the closing note.
#
#   scripts/gpu_session.sh PART [OUT]        OUT defaults to outputs/gpu_session
#
#   part      issue  what                                                           about
#   tests     3,8    pytest -m gpu (CUDA graphs vs eager, no host sync, bf16, ...)  2 min
#   speed     8      bench.py iteration, batch 16 and 128, every grad/solver/path   8 min
#   grad      3      bench.py grad: gq against odex and torchdiffeq adjoint         5 min
#   mnist     2,8    3 epochs on real MNIST 8,000/2,000: fp32, bf16, rk4, rk4+graph  4 min
#   compile   8      bench.py iteration with torch.compile (inductor) variants      8 min
#   momentum  4      the five momentum/first-order models, 10 epochs, and the table    8 min
#   cpl       5      one cpl_cifar10 size S epoch on random CIFAR-shaped images        3 min
#   lyanet    6      LyaNet against backprop on real MNIST, 10 epochs                  6 min
#
# On the device machine (../shared/device/README.md), from the repository root, with .device-wheels
# and the MNIST test files carried (here, once: mkdir -p .mnist/MNIST/raw && cp
# ../shared/data/mnist-t10k/t10k-* .mnist/MNIST/raw/ (ignored by git)):
#
#   python3 -m pip install -q --no-index --find-links .device-wheels hydra-core omegaconf wandb \
#       pytorch-optimizer && export PYTHONPATH=$PWD WANDB_MODE=offline && scripts/gpu_session.sh speed $OUT
#
# DEVICE=cpu QUICK=1 scripts/gpu_session.sh PART runs a part's commands tiny on the CPU (a check of
# the script, not a measurement).
set -uo pipefail
part=${1:?usage: $0 tests|speed|grad|mnist|compile|momentum|cpl|lyanet [OUT]}
out=${2:-outputs/gpu_session}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mnist=$(cd "${MNIST_ROOT:-.mnist}" 2>/dev/null && pwd || echo "${MNIST_ROOT:-.mnist}")
quick=${QUICK:-}
mkdir -p "$out"

# QUICK: the same commands, tiny
if [ -n "$quick" ]; then
  bench_size=(--widths 8 --batches 4 --iters 2 --rounds 1 --warmup 1 --eval-calls 2 --threads 1)
  grad_size=(--widths 8 --batches 4 --iters 2 --warmup 1 --threads 1)
  epochs=1; small=(dataset.limit_train=256 dataset.limit_test=128)
else
  bench_size=(); grad_size=(); epochs=; small=()
fi

train() {  # run folder, overrides...: one odex-train run with its log beside it
  local dir=$1; shift
  "$py" -m odex.train "hydra.run.dir=$dir" logger=none trainer.progress=false "trainer.device=$device" \
    "${small[@]}" "$@" > "$dir.log" 2>&1 || echo "failed: $dir (see $dir.log)"
}

summary() {  # run folders...: a table row each from summary.json
  "$py" scripts/bench.py runs "$@" --keys status test/acc train/loss nfe/forward nfe/backward time/epoch_s \
    time/total_s mem/peak_mb cuda_graph/captures test/pgd_linf_acc
}

case $part in
  tests)
    "$py" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$out/gpu_tests.txt" | tail -n 30
    ;;
  speed)    # every "Done when" ratio comes from these two runs
    "$py" scripts/bench.py iteration --device "$device" --widths 50 500 --batches 16 \
      --grads direct adjoint seminorm gq --solvers dopri5 rk4:10 --precision fp32 bf16 \
      --loop torchdiffeq odex --cuda-graph "${bench_size[@]}" \
      --out "$out/bench_b16" > "$out/bench_b16.log" 2>&1
    tail -n 80 "$out/bench_b16.log"
    "$py" scripts/bench.py iteration --device "$device" --widths 500 --batches 128 --grads direct \
      --solvers rk4:10 dopri5 --precision fp32 bf16 --loop odex --cuda-graph \
      "${bench_size[@]}" \
      --out "$out/bench_b128" > "$out/bench_b128.log" 2>&1
    tail -n 12 "$out/bench_b128.log"
    ;;
  compile)  # does inductor pay, with and without a graph
    "$py" scripts/bench.py iteration --device "$device" --widths 50 500 --batches 16 --grads direct adjoint \
      --solvers dopri5 rk4:10 --compile none inductor --loop odex --cuda-graph "${bench_size[@]}" \
      --out "$out/bench_compile" > "$out/bench_compile.log" 2>&1
    tail -n 40 "$out/bench_compile.log"
    ;;
  grad)     # gq <= 0.9x odex adjoint time, <= 0.5x its memory, <= 0.85x torchdiffeq adjoint
    "$py" scripts/bench.py grad --device "$device" --widths 50 500 --batches 16 128 --tols 1e-3 1e-5 \
      "${grad_size[@]}" --out "$out/bench_grad" > "$out/bench_grad.log" 2>&1
    tail -n 40 "$out/bench_grad.log"
    ;;
  mnist)    # (>= 0.97 after 3 epochs; bf16 and the graph lose < 0.3 points)
    common=(dataset=mnist_t10k "dataset.root=$mnist" "trainer.max_epochs=${epochs:-3}")
    train "$out/mnist_fp32" "${common[@]}"
    train "$out/mnist_bf16" "${common[@]}" trainer.precision=bf16
    rk4=(solver=rk4 solver.steps=10)
    train "$out/mnist_rk4" "${common[@]}" "${rk4[@]}"
    if [ "$device" = cuda ]; then train "$out/mnist_rk4_graph" "${common[@]}" "${rk4[@]}" trainer.cuda_graph=true; fi
    summary "$out"/mnist_*/ | tee "$out/mnist_summary.txt"
    ;;
  momentum) # loss, accuracy and NFE of the five models (HBNODE paper's MNIST setting)
    "$py" -m odex.train -m "hydra.sweep.dir=$out/momentum" experiment=hbnode_mnist dataset=mnist_t10k \
      "dataset.root=$mnist" model=pixel_node,pixel_augmented,heavy_ball,ghbnode,adam_node \
      "trainer.max_epochs=${epochs:-10}" "trainer.device=$device" logger=none trainer.progress=false \
      ${quick:+model.preset=tiny} "${small[@]}" > "$out/momentum.log" 2>&1 || echo "failed: see $out/momentum.log"
    "$py" scripts/bench.py runs "$out/momentum" | tee "$out/momentum_table.md"
    ;;
  cpl)      # epoch time of cpl_cifar10 size S (random CIFAR-shaped images)
    if [ -n "$quick" ]; then args=(--size tiny --epochs 1 --train 512); else args=(--size S --epochs 2); fi
    "$py" scripts/bench.py cpl-epoch --device "$device" "${args[@]}" 2>&1 | tee "$out/cpl_epoch.txt" | tail -n 20
    ;;
  lyanet)   # LyaNet vs backprop (clean, PGD, NFE) on real MNIST
    # (no QUICK form: a LyaNet trained on a few hundred images has stiff inference dynamics, tens
    # of thousands of NFE per batch)
    [ -n "$quick" ] && { echo "lyanet: no quick form; run it on the GPU"; exit 0; }
    extra=(trainer.device="$device" eval.pgd.limit=1000)
    PYTHON="$py" scripts/lyanet_vs_backprop.sh "$mnist/MNIST/raw" "$out/lyanet" "${epochs:-10}" "${extra[@]}" \
      2>&1 | tail -n 20 | tee "$out/lyanet_summary.txt"
    ;;
  *)
    echo "unknown part $part" >&2; exit 2
    ;;
esac
