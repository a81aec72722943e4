"""Gradient fidelity of every gradient method on trained models: for each run folder (an odex-train
run with checkpoints/last.pt), eval=grad_check's grad/rel_err and grad/cosine with every method in
every gradient method of conf/grad/ switched into the model's ODE blocks, at the run's own solver tolerances (float32)
and at tight tolerances in float64 (the method's error without the tolerance's). A method that
refuses the run's solver (anode needs a fixed-step one) is listed as refused.

    python scripts/grad_fidelity.py outputs/runs/<date>/<time> [more runs] [--examples 64] [--tight 1e-8]

Used for docs/activation.md (the default activation of the ODE fields). Runs on one thread.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from odex.config import build
from odex.data.batches import Batches
from odex.errors import ConfigError
from odex.ode.grad import names
from odex.evaluate.grad_check import GradCheck
from odex.ode.block import grad_changed


def trained_model(run: Path):
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    data = build(cfg.dataset)
    model = build(cfg.model, info=data.info, solver=build(cfg.solver), grad=build(cfg.grad))
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return cfg, model, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--tight", type=float, default=1e-8, help="rtol = atol of the float64 check")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"| run | activation | method | rel_err (run's tol, fp32) | cosine | rel_err (tol {args.tight:g}, fp64) | cosine |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
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
            act = cfg.model.get("activation", "-")
            print(f"| {run.name} | {act} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
