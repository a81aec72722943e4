#!/usr/bin/env bash
# docs/robustness.md's table: small CPU stand-ins (the augmented default, LyaNet, CPL) trained on the
# digits and on MNIST t10k, then evaluated with odex-eval: clean, PGD, AutoAttack (APGD-CE, APGD-T,
# Square; no FAB-T), Square alone, the solver-transfer audit, certified accuracy (CPL), masking flags.
#
#   scripts/robustness_table.sh T10K_DIR OUT_DIR [digits|t10k ...]
#
# T10K_DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (copied to OUT_DIR/data).
# Budgets (a loaded 2-core CPU): the first $LIMIT test images (default 100), APGD 25 steps, 9
# targets, Square 500 queries, rk4 on 32 steps as the fine grid, PGD l-inf 8/255 step 2/255 10 steps (LyaNet's setting).
set -euo pipefail
t10k=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd); shift 2
sets=${*:-digits t10k}
root="$out/data"; mkdir -p "$root/MNIST/raw"; cp -n "$t10k"/t10k-*-ubyte* "$root/MNIST/raw/"
bin=${BIN:-$(dirname "$(command -v odex-train || echo .venv/bin/odex-train)")}
limit=${LIMIT:-100}
common=(logger=none trainer.progress=false)
declare -A data=([digits]="dataset=digits" [t10k]="dataset=mnist_t10k dataset.root=$root dataset.limit_train=2000")
declare -A model=(
  [augmented]="trainer.max_epochs=5"
  [lyanet]="experiment=lyanet_fmnist model.encoder=small model.hidden=32 trainer.max_epochs=4 schedule.scheduler.step_size=2 callbacks.swa.after_epoch=2 eval.pgd.limit=10"
  [cpl]="model=cpl model.size=tiny model.channels=16 objective=margin trainer.max_epochs=5")
evals=("eval.pgd.l2=null" "eval.pgd.limit=$limit" "eval.autoattack.limit=$limit" "eval.autoattack.steps=25"
       "eval.autoattack.queries=500" "eval.square.limit=$limit" "eval.square.queries=500" "eval.transfer.limit=$limit"
       "eval.transfer.solvers.rk4_fine.steps=32")
for d in $sets; do
  for m in augmented lyanet cpl; do
    run="$out/$d-$m"
    [ -f "$run/checkpoints/last.pt" ] || "$bin/odex-train" "hydra.run.dir=$run" ${data[$d]} ${model[$m]} "${common[@]}"
    ev="[clean,pgd,autoattack,square,transfer]"; [ "$m" = cpl ] && ev="[clean,pgd,autoattack,square,transfer,certified]"
    [ -f "$out/eval-$d-$m/summary.json" ] || "$bin/odex-eval" "ckpt_path=$run/checkpoints/last.pt" "out_dir=$out/eval-$d-$m" \
      "eval=$ev" "${evals[@]}"
  done
done
"${PYTHON:-$bin/python}" - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
cols = ["test/acc", "test/pgd_linf_acc", "test/autoattack_linf_acc", "test/square_linf_acc", "test/cert_acc@36/255",
        "test/pgd_masking_flag", "test/autoattack_linf_masking_flag", "test/transfer_masking_flag"]
print("| run | clean | PGD | AutoAttack | Square | cert. l2 36/255 | masking flag (pgd / autoattack / transfer) | transfer matrix (rows: crafted under; columns: judged under) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for f in sorted(out.glob("eval-*/metrics.jsonl")):
    row = json.loads(f.read_text().splitlines()[-1])
    g = lambda k: f"{row[k]:.3f}" if k in row else "-"
    names = [k.split("@", 1)[1] for k in row if k.startswith("test/transfer_clean_acc@")]
    matrix = "; ".join(f"{a}: " + " / ".join(f"{row[f'test/transfer_acc@{a}->{b}']:.3f}" for b in names) for a in names)
    flags = " / ".join(str(int(row[k])) if k in row else "-" for k in cols[5:])
    print(f"| {f.parent.name.removeprefix('eval-')} | " + " | ".join(g(k) for k in cols[:5]) + f" | {flags} | {matrix} (columns {', '.join(names)}) |")
EOF
