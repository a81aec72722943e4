#!/usr/bin/env bash
# docs/robustness.md's table: small CPU stand-ins (the augmented default, LyaNet, CPL) trained on the
# digits and on MNIST t10k, then evaluated with odex-eval: clean, PGD, AutoAttack (APGD-CE, APGD-T,
# FAB-T, Square), Square alone, the solver-transfer audit, certified accuracy (CPL), masking flags.
#
#   [PHASE=train|eval|table|all] scripts/robustness_table.sh T10K_DIR OUT_DIR [digits|t10k ...]
#
# T10K_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (copied to OUT_DIR/data).
# PHASE=train only trains (skips finished runs), eval only evaluates saved checkpoints, table only prints.
# Budgets (a loaded 2-core CPU), per model, each an environment option:
#   augmented, CPL: the first LIMIT test images (100), STEPS=25 APGD and FAB-T steps, TARGETS=9 target
#   classes (APGD-T and FAB-T), Square QUERIES=500 queries;
#   LyaNet (dopri5, ~1,000 NFE per test solve): LYA_LIMIT=40 images, LYA_STEPS=10, LYA_TARGETS=3,
#   LYA_QUERIES=200, and Square alone again at LYA_LONG_QUERIES=1000 (eval-<data>-lyanet-square1000).
# MODELS="augmented lyanet cpl" (the default) picks and orders the stand-ins; lyanet_rk4 is LyaNet
#   under its reference's attack setting (the model's solver rk4, step 0.1), with LyaNet's budgets.
# Everywhere: l-inf 8/255, PGD step 2/255 10 steps (LyaNet's setting), rk4 on 32 steps as the fine grid.
set -euo pipefail
t10k=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd); shift 2
sets=${*:-digits t10k}
phase=${PHASE:-all}
root="$out/data"; mkdir -p "$root/MNIST/raw"; cp -n "$t10k"/t10k-*-ubyte* "$root/MNIST/raw/"
bin=${BIN:-$(dirname "$(command -v odex-train || echo .venv/bin/odex-train)")}
common=(logger=none trainer.progress=false)
declare -A data=([digits]="dataset=digits" [t10k]="dataset=mnist_t10k dataset.root=$root dataset.limit_train=2000")
declare -A model=(
  [augmented]="trainer.max_epochs=5"
  [lyanet]="experiment=lyanet_fmnist model.encoder=small model.hidden=32 trainer.max_epochs=4 schedule.scheduler.step_size=2 callbacks.swa.after_epoch=2 eval.pgd.limit=10"
  [cpl]="model=cpl model.size=tiny model.channels=16 objective=margin trainer.max_epochs=5"
  # LyaNet as its reference attacks it: the model switched to rk4 with step 0.1 (no dopri5 solve in
  # training's evaluations, where the digits recipe's dopri5 gives up on t10k)
  [lyanet_rk4]="experiment=lyanet_fmnist model.encoder=small model.hidden=32 trainer.max_epochs=4 schedule.scheduler.step_size=2 callbacks.swa.after_epoch=2 eval.pgd.limit=10 solver=rk4 solver.step_size=0.1 eval=[clean,pgd]")
budget() {  # limit steps targets queries
  if [[ "$1" = lyanet* ]]; then echo "${LYA_LIMIT:-40} ${LYA_STEPS:-10} ${LYA_TARGETS:-3} ${LYA_QUERIES:-200}"
  else echo "${LIMIT:-100} ${STEPS:-25} ${TARGETS:-9} ${QUERIES:-500}"; fi
}
for d in $sets; do
  for m in ${MODELS:-augmented lyanet cpl}; do
    run="$out/$d-$m"
    if [ "$phase" = train ] || [ "$phase" = all ]; then
      [ -f "$run/checkpoints/last.pt" ] || "$bin/odex-train" "hydra.run.dir=$run" ${data[$d]} ${model[$m]} "${common[@]}"
    fi
    if [ "$phase" = eval ] || [ "$phase" = all ]; then
      read -r limit steps targets queries <<<"$(budget "$m")"
      ev="[clean,pgd,autoattack,square,transfer]"; [ "$m" = cpl ] && ev="[clean,pgd,autoattack,square,transfer,certified]"
      [ -f "$out/eval-$d-$m/summary.json" ] || "$bin/odex-eval" "ckpt_path=$run/checkpoints/last.pt" "out_dir=$out/eval-$d-$m" \
        "eval=$ev" eval.pgd.l2=null "eval.pgd.limit=$limit" "eval.autoattack.limit=$limit" "eval.autoattack.steps=$steps" \
        "eval.autoattack.targets=$targets" "eval.autoattack.queries=$queries" \
        "eval.square.limit=$limit" "eval.square.queries=$queries" "eval.transfer.limit=$limit" \
        "eval.transfer.solvers.rk4_fine.steps=32"
      # LyaNet: Square alone once more at a larger budget (LYA_LONG_QUERIES, 0 = skip), beside PGD
      long=${LYA_LONG_QUERIES:-1000}
      if [[ "$m" = lyanet* ]] && [ "$long" -gt 0 ] && [ ! -f "$out/eval-$d-$m-square$long/summary.json" ]; then
        "$bin/odex-eval" "ckpt_path=$run/checkpoints/last.pt" "out_dir=$out/eval-$d-$m-square$long" "eval=[clean,pgd,square]" \
          eval.pgd.l2=null "eval.pgd.limit=$limit" "eval.square.limit=$limit" "eval.square.queries=$long"
      fi
    fi
  done
done
[ "$phase" = train ] && exit 0
"${PYTHON:-$bin/python}" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
cols = ["test/acc", "test/autoattack_n", "test/autoattack_clean_acc", "test/pgd_linf_acc", "test/autoattack_linf_acc",
        "stages", "test/square_linf_acc", "test/cert_acc@36/255",
        "test/pgd_masking_flag", "test/autoattack_linf_masking_flag", "test/transfer_masking_flag"]
print("| run | clean (test set) | N attacked | clean (the N) | PGD | AutoAttack | after APGD-CE / APGD-T / FAB-T / Square "
      "| Square alone | cert. l2 36/255 | masking flag (pgd / autoattack / transfer) | transfer matrix (rows: crafted under; columns: judged under) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for f in sorted(out.glob("eval-*/metrics.jsonl")):
    row = json.loads(f.read_text().splitlines()[-1])
    for k in ("n", "clean_acc"):                      # a Square-only run: its own N and clean figure
        if f"test/square_{k}" in row:
            row.setdefault(f"test/autoattack_{k}", row[f"test/square_{k}"])
    g = lambda k: (f"{row[k]:.0f}" if k.endswith("_n") else f"{row[k]:.3f}") if k in row else "-"
    stages = " / ".join(g(f"test/autoattack_linf_acc_{a}") for a in ("apgd_ce", "apgd_t", "fab_t", "square"))
    names = [k.split("@", 1)[1] for k in row if k.startswith("test/transfer_clean_acc@")]
    matrix = "; ".join(f"{a}: " + " / ".join(f"{row[f'test/transfer_acc@{a}->{b}']:.3f}" for b in names) for a in names)
    flags = " / ".join(str(int(row[k])) if k in row else "-" for k in cols[8:])
    cells = [stages if k == "stages" else g(k) for k in cols[:8]]
    print(f"| {f.parent.name.removeprefix('eval-')} | " + " | ".join(cells) + f" | {flags} | " + (f"{matrix} (columns {', '.join(names)})" if names else "-") + " |")
PY
