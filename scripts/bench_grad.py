"""Benchmark of odex's gradient methods on the GQ paper's MNIST network (model=gq_image).

For each drift width and batch size, every method runs the same training iteration (forward,
cross-entropy, backward, one Adam step) from the same untrained weights on the same random batch:
Every gradient method of conf/grad/ and of the --plugins folders' grad/ (those without adaptive solvers, e.g. anode, on fixed steps), plus plain torchdiffeq.odeint_adjoint
(and its seminorm variant) called directly, in the same process. Reported: median ms per iteration
(CUDA events on a GPU, perf_counter on the CPU, after warm-up), forward/backward NFE and peak
memory of one iteration: on a GPU the allocator's peak; on the CPU, which keeps no such statistic,
the peak of the running sum of the allocations and frees torch.profiler records (a stand-in: what
an op allocates and frees inside itself does not show). Both count the weights, the batch, the
gradients, Adam's state and the activations. Writes <out>.json and <out>.md (a Markdown table with the gq/adjoint ratios).

    python scripts/bench_grad.py --device cuda --widths 50 500 --batches 16 128
    python scripts/bench_grad.py --device cpu --widths 50 --batches 16 --iters 5

Only ratios measured in one run mean much: absolute GPU times move by up to 1.7x between machines.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
import torchdiffeq
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from odex.data import DataInfo  # noqa: E402
from odex.ode.grad import gradient_method, names  # noqa: E402
from odex.models.gq_image import GQImageNODE  # noqa: E402
from odex.ode.nfe import reset_nfe, total_nfe  # noqa: E402
from odex.ode.solver import Solver  # noqa: E402

MNIST = DataInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,))
FOLDERS: list[str] = []     # --plugins: searchpath folders whose grad/*.yaml add methods (tests/plugins/)
PLAIN_METHODS = ("torchdiffeq-adjoint", "torchdiffeq-seminorm")


class PlainAdjointBlock(nn.Module):
    """The ODE block as a torchdiffeq user writes it: odeint_adjoint on the field, no odex in the
    call. The field stays wrapped in odex's NFE counter (one integer add per evaluation)."""

    def __init__(self, counted_field: nn.Module, t1: float, rtol: float, atol: float, seminorm: bool):
        super().__init__()
        self.field = counted_field
        self.register_buffer("t", torch.tensor([0.0, t1]), persistent=False)
        self.kw = dict(rtol=rtol, atol=atol, method="dopri5")
        if seminorm:
            self.kw["adjoint_options"] = {"norm": "seminorm"}

    def forward(self, y0):
        self.field.backward_phase = False
        ys = torchdiffeq.odeint_adjoint(self.field, y0, self.t, **self.kw)
        self.field.backward_phase = True
        return ys[-1]


def build_model(method: str, width: int, tol: float, anode_solver: Solver) -> nn.Module:
    solver = Solver(method="dopri5", rtol=tol, atol=tol, max_num_steps=None)
    grad = "direct" if method in PLAIN_METHODS else gradient_method(method, folders=FOLDERS)
    if method not in PLAIN_METHODS and not grad.supports.adaptive_solvers:
        solver = anode_solver       # a fixed-step method (anode): the --anode solver
    model = GQImageNODE(MNIST, solver, grad, width=width)
    if method in PLAIN_METHODS:
        model.ode = PlainAdjointBlock(model.ode.field, 1.0, tol, tol, seminorm=method.endswith("seminorm"))
    return model


class Clock:
    """Milliseconds of a region: CUDA events on a GPU (no host sync inside the region), else
    perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
        else:
            self.ms = (time.perf_counter() - self.t0) * 1e3

    def elapsed_ms(self) -> float:
        if self.cuda:
            self.end.synchronize()
            return self.start.elapsed_time(self.end)
        return self.ms


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
        f, b = total_nfe(self.model)
        self.nfe = (int(f), int(b))

    def iteration(self) -> float:
        # every iteration starts from the untrained weights and a fresh Adam: all identical
        self.model.load_state_dict(self.init)
        optimizer = torch.optim.Adam(self.params, lr=1e-3)
        reset_nfe(self.model)
        with Clock(self.device) as clock:
            loss = F.cross_entropy(self.model(self.x), self.y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return clock.elapsed_ms()

    def row(self) -> dict:
        return {"method": self.method, "width": self.width, "batch": self.batch, "tol": self.tol,
                "solver": self.solver, "ms": statistics.median(self.times), "ms_all": self.times,
                "nfe_forward": self.nfe[0], "nfe_backward": self.nfe[1], "peak_mb": self.peak_mb,
                "params": sum(p.numel() for p in self.params)}


def bench(methods, width, batch, tol, args, device) -> list[dict]:
    """Warm-up and peak memory per method, then the timed iterations interleaved across methods
    (round-robin), so drift in clocks or in the machine's load hits every method alike."""
    cases = [Case(m, width, batch, tol, args, device) for m in methods]
    for _ in range(args.iters):
        for c in cases:
            c.times.append(c.iteration())
    rows = [c.row() for c in cases]
    del cases
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# bench_grad: GQ paper's MNIST network, {meta['device']}",
           "", f"torch {meta['torch']}, torchdiffeq {meta['torchdiffeq']}, {meta['date']}; "
           f"median of {meta['iters']} iterations after {meta['warmup']} warm-up; one Adam step, "
           "untrained weights, random inputs.", ""]
    out += ["| width | batch | method | solver | ms / iteration | fNFE | bNFE | peak MB "
            "| x adjoint time | x torchdiffeq-adjoint time | x adjoint memory |",
            "| --- " * 11 + "|"]
    for r in rows:
        same = [q for q in rows if (q["width"], q["batch"], q["tol"]) == (r["width"], r["batch"], r["tol"])]
        ref = {q["method"]: q for q in same}

        def ratio(key, other):
            if other not in ref or ref[other][key] in (None, 0) or r[key] is None:
                return ""
            return f"{r[key] / ref[other][key]:.2f}"

        peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        out.append(f"| {r['width']} | {r['batch']} | {r['method']} | {r['solver']} | {r['ms']:.1f} | "
                   f"{r['nfe_forward']} | {r['nfe_backward']} | {peak} | {ratio('ms', 'adjoint')} | "
                   f"{ratio('ms', 'torchdiffeq-adjoint')} | {ratio('peak_mb', 'adjoint')} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
        torch.backends.cudnn.allow_tf32 = not args.no_tf32
    method, steps = args.anode.split("x")
    args.anode_solver = Solver(method=method, steps=int(steps))

    cpu = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
            "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "iters": args.iters, "warmup": args.warmup, "tf32": device.type == "cuda" and not args.no_tf32}
    rows = []
    for tol in args.tols:
        for width in args.widths:
            for batch in args.batches:
                for r in bench(args.methods, width, batch, tol, args, device):
                    rows.append(r)
                    peak = "" if r["peak_mb"] is None else f", peak {r['peak_mb']:.0f} MB"
                    print(f"w={width} B={batch} tol={tol:g} {r['method']:22s} {r['ms']:8.1f} ms  "
                          f"NFE {r['nfe_forward']}/{r['nfe_backward']}{peak}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    table = markdown(rows, meta)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
