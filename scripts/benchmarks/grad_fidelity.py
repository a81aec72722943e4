"""Gradient fidelity of every gradient method on trained models: for each run folder (an odex-train
run with checkpoints/last.pt), eval=grad_check's grad/rel_err and grad/cosine with every method in
every gradient method of conf/grad/ switched into the model's ODE blocks, at the run's own solver tolerances (float32)
and at tight tolerances in float64 (the method's error without the tolerance's). A method that
refuses the run's solver (anode needs a fixed-step one) is listed as refused.

    python scripts/bench.py grad-fidelity outputs/runs/<date>/<time> [more runs] [--examples 64] [--tight 1e-8]

Used for docs/activation.md (the default activation of the ODE fields). Runs on one thread.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.common import command, report, table
from odex.build import build_run
from odex.data.batches import Batches
from odex.errors import ConfigError
from odex.ode.grad import names
from odex.evaluate.grad_check import GradCheck
from odex.ode.block import grad_changed


def trained_model(run: Path):
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.trainer.device = "cpu"
    built = build_run(cfg, training=False)
    model, data = built.model, built.data
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return cfg, model, data


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(prog="scripts/bench.py grad-fidelity", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--tight", type=float, default=1e-8, help="rtol = atol of the float64 check")
    ap.add_argument("--out", default=None, help="writes <out>.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        cfg, model, data = trained_model(run)
        batches = Batches(data.test, args.examples)
        checks = {"run": GradCheck(examples=args.examples, threshold=float("inf")),
                  "tight": GradCheck(examples=args.examples, threshold=float("inf"), float64=True,
                                     solver={"rtol": args.tight, "atol": args.tight})}
        for name in names():
            cells = []
            try:
                with grad_changed(model, name):
                    for check in checks.values():
                        out = check(model, batches)
                        cells += [f"{out['grad/rel_err'].item():.3g}", f"{out['grad/cosine'].item():.7f}"]
            except ConfigError as e:
                cells = [f"refused: {str(e)[:60]}", "", "", ""]
            rows.append([run.name, cfg.model.get("activation", "-"), name, *cells])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    header = ["run", "activation", "method", "rel_err (run's tol, fp32)", "cosine",
              f"rel_err (tol {args.tight:g}, fp64)", "cosine"]
    report(command("grad-fidelity", argv), table(header, rows), args.out)
    return rows
