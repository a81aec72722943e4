"""eval=pgd (cross-entropy and DLR losses, the masking checks) on trained runs' checkpoints: for
each run folder (an odex-train run with checkpoints/last.pt), the clean accuracy and the PGD
figures of odex.evaluate.evaluators.PGDAccuracy on the first `--limit` test examples, one table row per run.

    python scripts/bench.py pgd-masking RUN [RUN ...] [--limit 200] [--linf 8/255] [--alpha 2/255]
        [--steps 10] [--solver '{method: rk4, step_size: 0.1}']

Used for the LyaNet / backprop comparison on MNIST t10k (README, "Robustness"). One thread.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.common import command, report, table
from benchmarks.grad_fidelity import trained_model
from odex.data.batches import Batches
from odex.evaluate.evaluators import PGDAccuracy

KEYS = ["test/pgd_clean_acc", "test/pgd_linf_acc_ce", "test/pgd_linf_acc_dlr", "test/pgd_linf_acc",
        "test/pgd_linf_acc@2eps", "test/pgd_zero_grad", "test/pgd_masking_flag", "test/pgd_linf_time_s"]


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(prog="scripts/bench.py pgd-masking", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--linf", default="8/255")
    ap.add_argument("--alpha", default="2/255")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--solver", default=None, help="attack solver as a YAML mapping")
    ap.add_argument("--out", default=None, help="writes <out>.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    solver = None if args.solver is None else OmegaConf.to_container(OmegaConf.create(args.solver))
    ev = PGDAccuracy(linf={"eps": args.linf, "alpha": args.alpha, "steps": args.steps}, l2=None,
                     limit=args.limit, solver=solver)
    rows = []
    for run in args.runs:
        _, model, data = trained_model(run)
        out = ev(model, Batches(data.test, 100))
        rows.append([run.name, *(f"{out[k].item():.4g}" for k in KEYS)])
    report(command("pgd-masking", argv),
           table(["run", *(k.removeprefix("test/") for k in KEYS)], rows), args.out)
    return rows
