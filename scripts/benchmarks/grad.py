"""Benchmark of odex's gradient methods on the GQ paper's MNIST network (model=gq_image).

For each drift width and batch size, every method runs the same training iteration (forward,
cross-entropy, backward, one Adam step) from the same untrained weights on the same random batch:
every gradient method of conf/grad/ and of the --plugins folders' grad/ (those without adaptive
solvers, e.g. anode, on fixed steps), plus the tool's reference block (plain
torchdiffeq.odeint_adjoint, and its seminorm variant, called directly), in the same process, the
iterations of all alternating. Reported: median ms per iteration
(CUDA events on a GPU, perf_counter on the CPU, after warm-up), forward/backward NFE and peak
memory of one iteration: on a GPU the allocator's peak; on the CPU, which keeps no such statistic,
the peak of the running sum of the allocations and frees torch.profiler records (a stand-in: what
an op allocates and frees inside itself does not show). Both count the weights, the batch, the
gradients, Adam's state and the activations. Writes <out>.json and <out>.md (a Markdown table with the gq/adjoint ratios).

    python scripts/bench.py grad --device cuda --widths 50 500 --batches 16 128
    python scripts/bench.py grad --device cpu --widths 50 --batches 16 --iters 5

Only ratios measured in one run mean much: absolute GPU times move by up to 1.7x between machines.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (Marks, PlainODEBlock, command, environment, fmt, median, nfe, report, reset_nfe,
                               resolve_device, side_by_side, table)
from odex.data import DataInfo
from odex.models.gq_image import GQImageNODE
from odex.ode.grad import gradient_method, names
from odex.ode.solver import Solver

MNIST = DataInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,))
FOLDERS: list[str] = []     # --plugins: searchpath folders whose grad/*.yaml add methods (tests/plugins/)
PLAIN_METHODS = ("torchdiffeq-adjoint", "torchdiffeq-seminorm")


def build_model(method: str, width: int, tol: float, anode_solver: Solver) -> nn.Module:
    solver = Solver(method="dopri5", rtol=tol, atol=tol, max_num_steps=None)
    grad = "direct" if method in PLAIN_METHODS else gradient_method(method, folders=FOLDERS)
    if method not in PLAIN_METHODS and not grad.supports.adaptive_solvers:
        solver = anode_solver       # a fixed-step method (anode): the --anode solver
    model = GQImageNODE(MNIST, solver, grad, width=width)
    if method in PLAIN_METHODS:
        model.ode = PlainODEBlock(model.ode.field.field, rtol=tol, atol=tol, adjoint=True,
                                  seminorm=method.endswith("seminorm"))
    return model


def cpu_peak_bytes(fn) -> int:
    """The peak of the running sum of the CPU allocations and frees torch.profiler records while
    `fn()` runs (each op's own, in start order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    now = peak = 0
    for e in events:
        now += e.self_cpu_memory_usage
        peak = max(peak, now)
    return peak


class Case:
    """One method on one (width, batch, tol): the model, its untrained weights, the batch."""

    def __init__(self, method, width, batch, tol, args, device):
        self.method, self.width, self.batch, self.tol, self.device = method, width, batch, tol, device
        torch.manual_seed(args.seed)
        reference = build_model("direct", width, tol, args.anode_solver)   # the same weights for all
        self.model = build_model(method, width, tol, args.anode_solver)
        self.model.load_state_dict(reference.state_dict())
        self.cuda = device.type == "cuda"
        base = torch.cuda.memory_allocated(device) if self.cuda else 0
        self.model.to(device).train()
        self.init = {k: v.clone() for k, v in self.model.state_dict().items()}
        init_bytes = sum(v.numel() * v.element_size() for v in self.init.values())
        g = torch.Generator().manual_seed(args.seed + 1)
        self.x = torch.rand(batch, *MNIST.shape, generator=g).to(device)
        self.y = torch.randint(0, 10, (batch,), generator=g).to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        fixed_steps = method not in PLAIN_METHODS and not gradient_method(method, folders=FOLDERS).supports.adaptive_solvers
        self.solver = f"{args.anode_solver.method}x{args.anode_solver.steps}" if fixed_steps else f"dopri5 {tol:g}"
        self.times: list[float] = []
        for _ in range(args.warmup):
            self.iteration()
        if self.cuda:   # this model's own footprint: weights, grads, Adam state, activations
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.iteration()
            torch.cuda.synchronize(device)
            self.peak_mb = (torch.cuda.max_memory_allocated(device) - base - init_bytes) / 2**20
        else:           # the same, what the iteration allocates plus what it holds from before
            held = init_bytes + sum(t.numel() * t.element_size() for t in (self.x, self.y))
            self.peak_mb = (cpu_peak_bytes(self.iteration) + held) / 2**20
        f, b = nfe(self.model)
        self.nfe = (int(f), int(b))

    def iteration(self) -> float:
        # every iteration starts from the untrained weights and a fresh Adam: all identical
        self.model.load_state_dict(self.init)
        optimizer = torch.optim.Adam(self.params, lr=1e-3)
        reset_nfe(self.model)
        marks = Marks(self.device)
        marks.mark()
        loss = F.cross_entropy(self.model(self.x), self.y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        marks.mark()
        return marks.intervals_ms()[0]

    def row(self) -> dict:
        return {"method": self.method, "width": self.width, "batch": self.batch, "tol": self.tol,
                "solver": self.solver, "ms": median(self.times), "ms_all": self.times,
                "nfe_forward": self.nfe[0], "nfe_backward": self.nfe[1], "peak_mb": self.peak_mb,
                "params": sum(p.numel() for p in self.params)}


def bench(methods, width, batch, tol, args, device) -> list[dict]:
    """Warm-up and peak memory per method, then the timed iterations side by side."""
    cases = [Case(m, width, batch, tol, args, device) for m in methods]
    for c, times in side_by_side(cases, args.iters, Case.iteration).items():
        c.times = times
    rows = [c.row() for c in cases]
    del cases
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    cells = []
    for r in rows:
        ref = {q["method"]: q for q in rows if (q["width"], q["batch"], q["tol"]) == (r["width"], r["batch"], r["tol"])}

        def ratio(key, other):
            if other not in ref or ref[other][key] in (None, 0) or r[key] is None:
                return ""
            return f"{r[key] / ref[other][key]:.2f}"

        cells.append([r["width"], r["batch"], r["method"], r["solver"], f"{r['ms']:.1f}", r["nfe_forward"],
                      r["nfe_backward"], fmt(r["peak_mb"], 0), ratio("ms", "adjoint"),
                      ratio("ms", "torchdiffeq-adjoint"), ratio("peak_mb", "adjoint")])
    header = ["width", "batch", "method", "solver", "ms / iteration", "fNFE", "bNFE", "peak MB", "x adjoint time",
              "x torchdiffeq-adjoint time", "x adjoint memory"]
    return (f"GQ paper's MNIST network, {meta['device_name']}, torch {meta['torch']}, torchdiffeq "
            f"{meta['torchdiffeq']}, {meta['date']}; median of {meta['iters']} iterations after {meta['warmup']} "
            "warm-up; one Adam step, untrained weights, random inputs.\n\n" + table(header, cells))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="scripts/bench.py grad", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--widths", type=int, nargs="+", default=[50, 500])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    p.add_argument("--tols", type=float, nargs="+", default=[1e-3])
    p.add_argument("--methods", nargs="+", help="default: every method of conf/grad/ and --plugins, and "
                   + ", ".join(PLAIN_METHODS))
    p.add_argument("--plugins", nargs="*", default=[], help="folders with grad/<name>.yaml of methods of your own")
    p.add_argument("--anode", default="rk4x4", help="anode's fixed-step solver, METHODxSTEPS")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-tf32", action="store_true", help="odex-train enables TF32 on CUDA by default")
    p.add_argument("--out", default="outputs/bench_grad", help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    FOLDERS[:] = args.plugins
    known = [*names(FOLDERS), *PLAIN_METHODS]
    args.methods = args.methods or known
    if set(args.methods) - set(known):
        p.error(f"--methods: choose from {', '.join(known)}")

    device = resolve_device(args.device, args.threads, tf32=not args.no_tf32)
    method, steps = args.anode.split("x")
    args.anode_solver = Solver(method=method, steps=int(steps))
    cmd = command("grad", argv)
    meta = environment(device, command=cmd, iters=args.iters, warmup=args.warmup,
                       tf32=device.type == "cuda" and not args.no_tf32)
    rows = []
    for tol in args.tols:
        for width in args.widths:
            for batch in args.batches:
                for r in bench(args.methods, width, batch, tol, args, device):
                    rows.append(r)
                    peak = "" if r["peak_mb"] is None else f", peak {r['peak_mb']:.0f} MB"
                    print(f"w={width} B={batch} tol={tol:g} {r['method']:22s} {r['ms']:8.1f} ms  "
                          f"NFE {r['nfe_forward']}/{r['nfe_backward']}{peak}", file=sys.stderr, flush=True)
    result = {"meta": meta, "rows": rows}
    report(cmd, markdown(rows, meta), args.out, result)
    return result
