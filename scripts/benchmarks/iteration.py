"""Training-iteration speed of odex against plain torchdiffeq fed by a DataLoader, side by side.

Per model, width, batch, gradient method and solver, the same network from the same weights trains
along two paths in this process, timed side by side: the reference (common.PlainODEBlock,
batches from a DataLoader moved to the device per batch, eager float32) and odex as odex-train
builds it (device-resident `Batches`, the trainer's TrainStep / GraphedTrainStep) in each variant
asked for: the trainer's fast paths (--precision, --compile, --channels-last, --cuda-graph) and
the solver's loop (--loop). Per path: median ms per iteration and per field evaluation, NFE, host
reads (odex.ode.loops.host_reads.HostReads), peak GPU memory, images/s and TFLOP/s (FlopCounterMode
on one field call and its VJP, times the evaluations), each with its ratio to the reference.
Adam runs at lr 0 so an adaptive solver's NFE stays that of the initial weights on both paths.
The model: model=gq_image (or --models, width key --width-key) on random MNIST-shaped images.
What the figures mean: docs/benchmarks.md.

    python scripts/bench.py iteration --device cuda --widths 50 500 --batches 16 128 \\
        --grads direct adjoint seminorm gq --solvers dopri5 rk4:10 --precision fp32 bf16 --out docs/bench/h100
    python scripts/bench.py iteration --device cpu --widths 8 --batches 4 --iters 2 --rounds 1 --warmup 1
"""
from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import astuple, dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (PlainODEBlock, command, environment, fmt, median, nfe, report, reset_nfe,
                               resolve_device, side_by_side, table, timed_ms)
from odex.config import build, config_dir
from odex.data import DataInfo
from odex.data.batches import Batches
from odex.data.bundle import Split
from odex.errors import OdexError
from odex.ode.block import ODEBlock
from odex.ode.loops import check as check_loop
from odex.ode.loops.host_reads import HostReads
from odex.ode.solver import Solver
from odex.objectives.classification import CrossEntropy
from odex.training.cuda_graph import graph_blockers
from odex.training.fast_paths import FastPaths
from odex.ode.field_options import building

MNIST = DataInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,))

# What a torchdiffeq user calls in place of each odex gradient method.
REFERENCE_CALL = {"direct": "odeint", "anode": "odeint", "adjoint": "odeint_adjoint",
                  "seminorm": "odeint_adjoint+seminorm", "gq": "odeint_adjoint"}


def model_config(name: str, width: int, width_key: str | None):
    """The composed conf/model/<name>.yaml with its width set, or None where it does not exist."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        try:
            cfg = compose("train", overrides=[f"model={name}"]).model
        except MissingConfigException:
            return None
    key = width_key or ("width" if "width" in cfg else "hidden")
    cfg[key] = width
    return cfg


def build_model(name: str, width: int, solver: Solver, grad: str, width_key: str | None) -> tuple[nn.Module, str]:
    cfg = model_config(name, width, width_key)
    if cfg is not None:
        from odex.ode.grad import gradient_method
        return build(cfg, info=MNIST, solver=solver, grad=gradient_method(grad)), f"conf/model/{name}.yaml"
    raise OdexError(f"no model config {name!r} in {config_dir()}/model")


# ---------------------------------------------------------------------------------------------
# The reference path

def _replace_ode_blocks(model: nn.Module, make) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ODEBlock):
                setattr(parent, name, make(child))


def _fields(model: nn.Module) -> list[nn.Module]:
    """The bare vector fields (inside odex's CountedField or the reference's counter)."""
    return [m.field for m in model.modules() if hasattr(m, "nfe_forward")]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(eq=False)      # hashed by identity: the timer's key
class TrainPath:
    label: str
    kind: str                    # "reference" | "odex"
    model: nn.Module
    step: object                 # () -> None, one training iteration
    fast: FastPaths | None = None
    loop: str = "torchdiffeq"    # the ODE blocks' solver.loop (the reference: torchdiffeq's own)
    # calls before the step is steady: a CUDA graph's eager warm-up; its next call captures (the
    # call whose peak memory is measured, since a replay allocates nothing)
    warmup_calls: int | None = None


def _endless(loader):
    """The loader's batches, epoch after epoch (each pass reshuffles)."""
    while True:
        yield from loader


def _reference_path(base: nn.Module, solver: Solver, grad: str, x, y, batch: int, device) -> TrainPath:
    model = copy.deepcopy(base)
    call = REFERENCE_CALL.get(grad, "odeint_adjoint")
    _replace_ode_blocks(model, lambda blk: PlainODEBlock(
        blk.field.field, method=solver.method, rtol=solver.rtol, atol=solver.atol, t1=float(solver.t1),
        step_size=solver.h if solver.fixed else None, adjoint=call.startswith("odeint_adjoint"),
        seminorm=call.endswith("seminorm")))
    model.to(device).train()
    loader = DataLoader(TensorDataset(x.float().div(255), y), batch_size=batch, shuffle=True, drop_last=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    batches = _endless(loader)

    def step():
        xb, yb = next(batches)
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return TrainPath(f"torchdiffeq {call} + DataLoader", "reference", model, step)


def with_loop(model: nn.Module, loop: str) -> nn.Module:
    """`model` with every ODE block's solver stepped by `loop` (solver.loop), in place."""
    for block in model.modules():
        if isinstance(block, ODEBlock):
            block.solver = replace(block.solver, loop=loop)
    return model


def _odex_path(model: nn.Module, fast: FastPaths, loop: str, x, y, batch: int, device) -> TrainPath:
    """The trainer's iteration (odex/training/trainer.py, Trainer.fit) on odex's device-resident
    batches, with `model` built as a run with `fast` and solver.loop=`loop` builds it."""
    model = fast.to_device(model, device).train()
    split = Split(x.to(device), y.to(device))
    gen = torch.Generator(device=device).manual_seed(0)
    loader = Batches(split, batch, shuffle=True, generator=gen, drop_last=True)
    objective = CrossEntropy()
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    train_step = fast.train_step(model, objective, opt, device=device)
    zero = torch.zeros((), device=device)
    sums = {"loss": zero.clone(), "correct": zero.clone()}
    batches = _endless(loader)

    def step():
        xb, yb = next(batches)
        out = train_step(xb, yb)
        sums["loss"] += out.loss.detach() * len(yb)
        sums["correct"] += (out.logits.detach().argmax(1) == yb).sum()

    label = "odex " + fast.precision + (f" compile={fast.backend}" if fast.backend else "") + \
        (" channels_last" if fast.channels_last else "") + \
        (f" loop={loop}" if loop != "torchdiffeq" and not fast.cuda_graph else "") + \
        (" cuda_graph" if fast.cuda_graph else "")       # a graph implies solver.loop=odex
    return TrainPath(label, "odex", model, step, fast, loop, getattr(train_step, "warmup", None))


def _field_call(path: TrainPath):
    """One forward vector-field evaluation through the path's own wrapper (odex: CountedField,
    with its autocast/compile settings; reference: the bare field)."""
    counter = next(m for m in path.model.modules() if hasattr(m, "nfe_forward"))
    return counter.field if path.kind == "reference" else counter


def _state(base: nn.Module, x: torch.Tensor, device) -> torch.Tensor:
    """The ODE block's input for a batch (the encoder's output, in training mode, as the solver
    sees it), to time and count one field call."""
    captured = {}
    model = copy.deepcopy(base).to(device).train()
    block = next(m for m in model.modules() if isinstance(m, ODEBlock))
    block.register_forward_pre_hook(lambda mod, args: captured.setdefault("y0", args[0].detach()))
    with torch.no_grad():
        model(x.to(device))
    return captured["y0"]


def field_flops(field: nn.Module, y0: torch.Tensor) -> tuple[int, int]:
    """FLOPs of one call f(t, y) and of one VJP (with respect to y and every parameter)."""
    t = torch.zeros((), device=y0.device)
    y = y0.detach().clone().requires_grad_(True)
    params = [p for p in field.parameters() if p.requires_grad]
    with FlopCounterMode(display=False) as fwd:
        out = field(t, y)
    with FlopCounterMode(display=False) as vjp:
        torch.autograd.grad(out, [y, *params], torch.ones_like(out), allow_unused=True)
    return fwd.get_total_flops(), vjp.get_total_flops()


def iteration_flops(nfe_f: float, nfe_b: float, f_call: int, f_vjp: int) -> float:
    if nfe_b == 0:        # backprop through the solver: one VJP per recorded evaluation
        return nfe_f * (f_call + f_vjp)
    return nfe_f * f_call + nfe_b * (f_call + f_vjp)


# ---------------------------------------------------------------------------------------------

def parse_solver(spec: str, tol: float) -> Solver:
    """"dopri5" (rtol = atol = --tol) or "rk4:10" (10 fixed steps on [0, 1])."""
    method, _, steps = spec.partition(":")
    if steps:
        return Solver(method=method, steps=int(steps), max_num_steps=None)
    return Solver(method=method, rtol=tol, atol=tol)


def bench_case(args, model_name, width, batch, grad, solver_spec, device) -> list[dict]:
    solver = parse_solver(solver_spec, args.tol)
    torch.manual_seed(args.seed)
    base, source = build_model(model_name, width, solver, grad, args.width_key)
    n_images = batch * args.dataset_batches
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randint(0, 256, (n_images, *MNIST.shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, MNIST.num_classes, (n_images,), generator=g)
    y0 = _state(base, x[:batch].float().div(255), device)
    bare = copy.deepcopy(_fields(base)[0]).to(device)
    f_call, f_vjp = field_flops(bare, y0)
    del bare

    def built(fast: FastPaths, loop: str) -> nn.Module:
        """The model as a run with these settings builds it (odex.build.build_run), base's weights."""
        with torch.random.fork_rng(devices=[]), building(fast.field_options()):
            model, _ = build_model(model_name, width, replace(solver, loop=loop), grad, args.width_key)
        model.load_state_dict(base.state_dict())
        return model

    paths = [_reference_path(base, solver, grad, x, y, batch, device)]
    for fast, loop in case_variants(variants(args), base, solver, device):
        paths.append(_odex_path(built(fast, loop), fast, loop, x, y, batch, device))

    for p in paths:                    # warm-up: allocator, cuDNN choice, compilation
        for _ in range(args.warmup if p.warmup_calls is None else p.warmup_calls):
            p.step()
    _sync(device)

    t0 = torch.zeros((), device=device)
    with torch.no_grad():
        for p in paths:
            for _ in range(3):
                _field_call(p)(t0, y0)
        eval_ms = side_by_side(paths, args.rounds,      # the call looked up before the clock starts
                               lambda p: timed_ms(partial(_field_call(p), t0, y0), args.eval_calls, device))

    peak = {}
    for p in paths:
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            held = torch.cuda.memory_allocated(device)
            p.step()
            _sync(device)
            peak[p.label] = (torch.cuda.max_memory_allocated(device) - held) / 2**20
        else:
            peak[p.label] = None

    reads = {}
    for p in paths:   # after the peak step (a graph's capture): what one steady iteration reads
        with HostReads(None if device.type == "cpu" else device.type) as counter:
            p.step()
        reads[p.label] = counter.n
    _sync(device)

    for p in paths:
        reset_nfe(p.model)
    iter_ms = side_by_side(paths, args.rounds, lambda p: timed_ms(p.step, args.iters, device))
    n_timed = args.rounds * args.iters

    rows = []
    for p in paths:
        nfe_f, nfe_b = (v / n_timed for v in nfe(p.model))
        ms, ev = median(iter_ms[p]), median(eval_ms[p])
        rows.append({
            "model": model_name, "model_source": source, "width": width, "batch": batch,
            "grad": grad, "solver": solver_spec, "tol": args.tol if solver.adaptive else None,
            "path": p.kind, "label": p.label,
            "precision": p.fast.precision if p.fast else "fp32",
            "compile": p.fast.backend if p.fast else None,
            "channels_last": bool(p.fast.channels_last) if p.fast else False,
            "loop": p.loop,
            "cuda_graph": bool(p.fast.cuda_graph) if p.fast else False,
            "host_reads": reads[p.label],
            "ms_iter": ms, "ms_iter_all": [t for r in iter_ms[p] for t in r], "ms_eval": ev,
            "nfe_forward": nfe_f, "nfe_backward": nfe_b, "peak_mb": peak[p.label],
            "images_per_s": batch / ms * 1e3,
            "flops_call": f_call, "flops_vjp": f_vjp,
            "tflops_iter": iteration_flops(nfe_f, nfe_b, f_call, f_vjp) / (ms * 1e-3) / 1e12,
            "tflops_eval": f_call / (ev * 1e-3) / 1e12,
            "params": sum(q.numel() for q in p.model.parameters()),
        })
    ref = rows[0]
    for r in rows:
        r["ratio_ms_iter"] = r["ms_iter"] / ref["ms_iter"]
        r["ratio_ms_eval"] = r["ms_eval"] / ref["ms_eval"]
        r["ratio_peak_mb"] = (r["peak_mb"] / ref["peak_mb"]) if ref["peak_mb"] else None
    return rows


def variants(args) -> list[tuple[FastPaths, str]]:
    """The odex variants asked for: (the trainer's fast paths, the solver's loop)."""
    out = []
    for precision in args.precision:
        for backend in args.compile:
            for cl in args.channels_last:
                compiled = None if backend in ("none", "eager") else backend
                for loop in args.loop:
                    out.append((FastPaths(precision, compiled, cl), loop))
                if args.cuda_graph:       # a graph needs solver.loop=odex (and a fixed-step solver)
                    out.append((FastPaths(precision, compiled, cl, cuda_graph=True), "odex"))
    return out


def case_variants(asked: list[tuple[FastPaths, str]], base: nn.Module, solver: Solver,
                  device: torch.device) -> list[tuple[FastPaths, str]]:
    """The variants that apply to one case, each once: a loop that cannot step the solver's method
    falls back to torchdiffeq's (the variant without it covers it); a CUDA graph only on CUDA and
    where odex.training.cuda_graph accepts the model (fixed-step solver, solver.loop=odex, a
    gradient method that supports a graph, as grad=direct)."""
    out, seen = [], set()
    for fast, loop in asked:
        try:
            check_loop(loop, solver.method)
        except OdexError:
            loop = "torchdiffeq"
        if fast.cuda_graph and (device.type != "cuda" or graph_blockers(with_loop(copy.deepcopy(base), loop))):
            continue
        if (astuple(fast), loop) not in seen:
            seen.add((astuple(fast), loop))
            out.append((fast, loop))
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    header = ["model", "w", "batch", "grad", "solver", "path", "ms/iter", "x ref", "ms/eval", "x ref", "NFE f/b",
              "host reads", "peak MB", "img/s", "TFLOP/s"]
    cells = []
    for r in rows:
        case = [r["model"], r["width"], r["batch"], r["grad"], r["solver"]]
        if "error" in r:
            cells.append(case + [f"skipped: {r['error']}"] + [""] * 9)
            continue
        ref = r["path"] == "reference"
        cells.append(case + [r["label"], fmt(r["ms_iter"]), "1" if ref else fmt(r["ratio_ms_iter"]),
                             fmt(r["ms_eval"], 3), "1" if ref else fmt(r["ratio_ms_eval"]),
                             f"{fmt(r['nfe_forward'], 1)}/{fmt(r['nfe_backward'], 1)}", r["host_reads"],
                             fmt(r["peak_mb"], 0), fmt(r["images_per_s"], 0), fmt(r["tflops_iter"], 3)])
    return (f"Device: {meta['device_name']} ({meta['device']}), torch {meta['torch']}, torchdiffeq "
            f"{meta['torchdiffeq']}, TF32 {'on' if meta['tf32'] else 'off'}.\n\n" + table(header, cells))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--models", nargs="+", default=["gq_image"])
    p.add_argument("--width-key", default=None, help="the model config's width key (default: width, else hidden)")
    p.add_argument("--widths", nargs="+", type=int, default=[50, 500])
    p.add_argument("--batches", nargs="+", type=int, default=[16])
    p.add_argument("--grads", nargs="+", default=["direct", "adjoint", "seminorm"])
    p.add_argument("--solvers", nargs="+", default=["dopri5", "rk4:10"],
                   help="adaptive by name (tolerance --tol) or fixed as method:steps")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--precision", nargs="+", default=["fp32"], help="odex variants: fp32 bf16")
    p.add_argument("--compile", nargs="+", default=["none"],
                   help="odex variants: none, inductor, aot_eager, ... (torch.compile backends)")
    p.add_argument("--channels-last", nargs="+", default=[False], type=lambda s: s.lower() in ("1", "true", "on"),
                   help="odex variants: off on")
    p.add_argument("--loop", nargs="+", default=["torchdiffeq"], choices=["torchdiffeq", "odex"],
                   help="odex variants: the solver's loop (solver.loop): torchdiffeq's stepping or odex's "
                        "(every gradient method; fixed-step solvers on a sync-free grid, adaptive ones "
                        "with one host read per step)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="add, per variant, one replaying the whole training step as a CUDA graph, with "
                        "solver.loop=odex (CUDA; grad=direct with a fixed-step solver only)")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="TF32 is on by default, as in odex-train")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per round and path")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eval-calls", type=int, default=20, help="timed field evaluations per round and path")
    p.add_argument("--dataset-batches", type=int, default=8, help="random images = batch x this")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    args = p.parse_args(argv)

    device = resolve_device(args.device, args.threads, args.tf32)
    cmd = command("iteration", argv)
    meta = environment(device, command=cmd, tf32=bool(args.tf32 and device.type == "cuda"),
                       iters=args.iters, rounds=args.rounds, warmup=args.warmup)
    rows = []
    for model_name in args.models:
        for width in args.widths:
            for batch in args.batches:
                for grad in args.grads:
                    for solver_spec in args.solvers:
                        case = dict(model=model_name, width=width, batch=batch, grad=grad, solver=solver_spec)
                        print(f"bench iteration: {case}", file=sys.stderr, flush=True)
                        try:
                            rows += bench_case(args, model_name, width, batch, grad, solver_spec, device)
                        except (OdexError, torch.cuda.OutOfMemoryError) as e:
                            rows.append({**case, "error": str(e).split(";")[0]})
                            if device.type == "cuda":
                                torch.cuda.empty_cache()
    result = {"meta": meta, "rows": rows}
    report(cmd, markdown(rows, meta), args.out, result)
    return result
