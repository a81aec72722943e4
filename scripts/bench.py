#!/usr/bin/env python3
"""odex's benchmark tool: `python scripts/bench.py <subcommand> [options]` (`-h` after a
subcommand for its options).

Each subcommand is a module of scripts/benchmarks/; they share one timer (side by side,
alternating, median), one reference ODE block, one NFE counter and one Markdown writer
(scripts/benchmarks/common.py). Every subcommand prints the command that reproduces its table
above the table; docs/benchmarks.md shows each table with its command.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
SUBCOMMANDS = {
    "iteration": ("iteration", "odex against plain torchdiffeq + DataLoader per training iteration, in one process"),
    "epochs": ("epochs", "odex-train against a plain torchdiffeq script per epoch, alternating processes (CPU)"),
    "plain": ("plain", "the plain torchdiffeq training script `epochs` compares with"),
    "cpu-math": ("cpu_math", "CPU math functions in fresh processes: fresh, after a pow, after odex's mapping"),
    "grad": ("grad", "every gradient method on the GQ MNIST network, torchdiffeq's adjoint beside them"),
    "grad-fidelity": ("grad_fidelity", "every gradient method's grad/rel_err on trained runs"),
    "cpl-epoch": ("cpl_epoch", "epoch time of experiment=cpl_cifar10 on CIFAR-shaped random data"),
    "threads": ("threads", "trainer.threads=auto against threads=1, idle and beside busy processes"),
    "sweeps": ("sweeps", "one sweep grid under several settings (health off/on, sequential/joblib)"),
    "lock": ("lock", "how soon a second odex-train on a folder in use stops"),
    "pgd-masking": ("pgd_masking", "eval=pgd with both losses and the masking checks on trained runs"),
    "runs": ("runs", "a table of finished runs' summary.json (the momentum papers' comparison)"),
}


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        width = max(map(len, SUBCOMMANDS))
        print(__doc__.split("\n\n")[0] + "\n\nsubcommands:\n" +
              "\n".join(f"  {name:{width}}  {help}" for name, (_, help) in SUBCOMMANDS.items()),
              file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    for path in (SCRIPTS, SCRIPTS.parent):      # benchmarks/ and odex from this checkout
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    module = importlib.import_module(f"benchmarks.{SUBCOMMANDS[argv[0]][0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    main()
