"""Which CPU math functions run slowly in a fresh torch process until their constants' pages are
mapped (odex/training/cpu_math.py): every function a field may use, float32 and float64,
forward and the activations' backward, each timed in its own fresh process in three states.

    python scripts/bench.py cpu-math --out docs/bench/cpu-math      # about 7 minutes, 2 cores

- fresh: nothing run before the timing (the state a plain torch script starts in);
- pow: after one float32 `torch.pow(v, 0.2)` on a vector, the one-line fix the report found;
- mapped: after odex's start-up `map_kernel_constants()` (what odex-train runs).
One process per function and state, because timing one function can map the page another one
reads. Median microseconds of 200 calls on a 256x64 tensor (linspace over [-3, 3]; log, log2, pow
and sqrt on |x| + 0.1), after 10 untimed calls; one thread. Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import json
import os

from benchmarks.common import bench_command, command, report, run_child, table, us_per_call
STATES = ("fresh", "pow", "mapped")
FORWARD = ("exp", "expm1", "log", "log1p", "log2", "sin", "cos", "tan", "tanh", "sigmoid", "softplus", "elu",
           "selu", "gelu", "gelu_tanh", "silu", "mish", "logsigmoid", "erf", "erfc", "atan", "sinh", "cosh",
           "asinh", "pow0.2", "sqrt", "relu", "reciprocal")
BACKWARD = ("softplus", "tanh", "sigmoid", "elu")
NAMES = FORWARD + tuple(f"{name}_backward" for name in BACKWARD)


def function(name: str, x):
    import torch
    import torch.nn.functional as F

    positive = x.abs() + 0.1
    forward = {
        "exp": torch.exp, "expm1": torch.expm1, "log": lambda v: torch.log(positive), "log1p": torch.log1p,
        "log2": lambda v: torch.log2(positive), "sin": torch.sin, "cos": torch.cos, "tan": torch.tan,
        "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus, "elu": F.elu, "selu": F.selu,
        "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "silu": F.silu, "mish": F.mish,
        "logsigmoid": F.logsigmoid, "erf": torch.erf, "erfc": torch.erfc, "atan": torch.atan, "sinh": torch.sinh,
        "cosh": torch.cosh, "asinh": torch.asinh, "pow0.2": lambda v: torch.pow(positive, 0.2),
        "sqrt": lambda v: torch.sqrt(positive), "relu": F.relu, "reciprocal": torch.reciprocal,
    }
    if not name.endswith("_backward"):
        return forward[name]
    leaf = x.clone().requires_grad_(True)
    y = forward[name[:-len("_backward")]](leaf)
    grad = torch.ones_like(y)
    return lambda v: torch.autograd.grad(y, leaf, grad, retain_graph=True)


def child(name: str, state: str, dtype: str) -> float:
    import torch
    torch.set_num_threads(1)
    x = torch.linspace(-3, 3, 256 * 64, dtype=getattr(torch, dtype)).view(256, 64)
    fn = function(name, x)
    if state == "pow":
        torch.pow(torch.linspace(0.5, 1.5, 256, dtype=torch.float32), 0.2)
    elif state == "mapped":
        from odex.training.cpu_math import map_kernel_constants
        map_kernel_constants()
    return us_per_call(lambda: fn(x), repeats=200, warmup=10)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="scripts/bench.py cpu-math", description=__doc__.splitlines()[0])
    p.add_argument("--functions", nargs="+", default=list(NAMES), choices=NAMES)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs=3, metavar=("NAME", "STATE", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return {}

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    us: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.functions:
        for dtype in args.dtypes:
            for state in STATES:
                us.setdefault(name, {}).setdefault(dtype, {})[state] = run_child(
                    bench_command("cpu-math", "--child", name, state, dtype), env)
    import torch
    cmd = command("cpu-math", argv)
    meta = {"command": cmd, "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "kernel": os.uname().release}
    header = ["function", *(f"{d} {s}" for d in args.dtypes for s in STATES)]
    rows = [[name, *(f"{by_dtype[d][s]:.1f}" for d in args.dtypes for s in STATES)] for name, by_dtype in us.items()]
    result = {"meta": meta, "us": us}
    report(cmd, f"CPU, 1 thread, torch {meta['torch']} ({meta['cpu_capability']}), Linux {meta['kernel']}: "
                "median us per call on 256x64, each cell a fresh process.\n\n" + table(header, rows), args.out, result)
    return result
