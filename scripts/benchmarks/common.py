"""What every subcommand of scripts/bench.py shares: one timer, one reference ODE block, one NFE
counter, one Markdown writer.

torch and torchdiffeq only (no odex at import): the plain torchdiffeq training script
(`scripts/bench.py plain`) uses the same reference block and counter without loading odex.
"""
from __future__ import annotations

import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench.py"


# ---------------------------------------------------------------------------------------------
# The timer

def side_by_side(names, rounds: int, measure) -> dict:
    """{name: [measure(name) of each round]}: every round measures each name once, the order
    reversed every other round (ABBA), so drift in a shared machine's speed hits all alike.
    Report medians (`median`): one slow round moves a median least."""
    out = {name: [] for name in names}
    for r in range(rounds):
        for name in (list(names) if r % 2 == 0 else list(reversed(names))):
            out[name].append(measure(name))
    return out


def median(values) -> float:
    """The median of `values`, flattened one level where they are lists (a round's samples)."""
    flat = [v for x in values for v in (x if isinstance(x, (list, tuple)) else [x])]
    return statistics.median(flat)


class Marks:
    """Time stamps between consecutive operations: CUDA events on a GPU (recorded in the stream,
    so no host sync between them), perf_counter on the CPU."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.stamps: list = []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.stamps.append(e)
        else:
            self.stamps.append(time.perf_counter())

    def intervals_ms(self) -> list[float]:
        if self.cuda:
            self.stamps[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.stamps, self.stamps[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.stamps, self.stamps[1:])]


def timed_ms(fn, calls: int, device="cpu") -> list[float]:
    """Milliseconds of each of `calls` consecutive calls of `fn()` (stamps between them)."""
    marks = Marks(device)
    marks.mark()
    for _ in range(calls):
        fn()
        marks.mark()
    return marks.intervals_ms()


def us_per_call(fn, repeats: int = 200, warmup: int = 10) -> float:
    """Median microseconds of `fn()` on the CPU, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return median(timed_ms(fn, repeats)) * 1e3


def log1p_us(repeats: int = 200) -> float:
    """The float32 log1p state probe: median us of `torch.log1p` on 256x64 (about 14 us with the
    kernel constants mapped, 140-170 us in the slow state; docs/benchmarks.md)."""
    x = torch.linspace(-3.0, 3.0, 256 * 64, dtype=torch.float32).view(256, 64)
    return us_per_call(lambda: torch.log1p(x), repeats)


def minor_faults() -> int:
    """Minor page faults of this process so far (a page mapped on first touch counts one)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ---------------------------------------------------------------------------------------------
# The NFE counter and the reference block

class HostCounted(nn.Module):
    """`field(t, y)` counted with Python ints, as a torchdiffeq user counts NFE (no kernel, no
    sync). Same attributes as odex's device-side CountedField (odex/ode/nfe.py), so `nfe` and
    `reset_nfe` read both."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.nfe_forward = self.nfe_backward = 0
        self.backward_phase = False

    def forward(self, t, y):
        if self.backward_phase:
            self.nfe_backward += 1
        else:
            self.nfe_forward += 1
        return self.field(t, y)

    def reset(self) -> None:
        self.nfe_forward = self.nfe_backward = 0
        self.backward_phase = False


def counters(model: nn.Module) -> list[nn.Module]:
    """Every NFE counter in `model`: the reference's HostCounted and odex's CountedField."""
    return [m for m in model.modules() if hasattr(m, "nfe_forward") and hasattr(m, "reset")]


def nfe(model: nn.Module) -> tuple[float, float]:
    """(forward, backward) evaluations since the last reset, over every counter (one host read)."""
    found = counters(model)
    return (float(sum(m.nfe_forward for m in found)), float(sum(m.nfe_backward for m in found)))


def reset_nfe(model: nn.Module) -> None:
    for m in counters(model):
        m.reset()


class PlainODEBlock(nn.Module):
    """The reference: y(t1) from `torchdiffeq.odeint` (or `odeint_adjoint`, with the seminorm on
    request) called directly on the field, as a torchdiffeq user writes it."""

    def __init__(self, field: nn.Module, *, method: str = "dopri5", rtol: float = 1e-3, atol: float = 1e-3,
                 t1: float = 1.0, step_size: float | None = None, adjoint: bool = False, seminorm: bool = False):
        super().__init__()
        self.field = HostCounted(field)
        self.register_buffer("t", torch.tensor([0.0, float(t1)]), persistent=False)
        options = {"step_size": step_size} if step_size else None
        self.kw = dict(method=method, rtol=rtol, atol=atol, options=options)
        self.adjoint = adjoint or seminorm
        if seminorm:
            # the backward solve takes adjoint_options instead of options: keep the step size
            self.kw["adjoint_options"] = {**(options or {}), "norm": "seminorm"}

    def forward(self, y0):
        import torchdiffeq

        self.field.backward_phase = False
        solve = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
        ys = solve(self.field, y0, self.t, **self.kw)
        self.field.backward_phase = True
        return ys[-1]


# ---------------------------------------------------------------------------------------------
# The writer

def command(subcommand: str, argv=None) -> str:
    """The command line that reproduces a run (printed above its table and written with it)."""
    return " ".join(["python scripts/bench.py", subcommand, *map(shlex.quote, sys.argv[2:] if argv is None else argv)])


def metrics(run_dir: str | Path) -> list[dict]:
    """The rows of an odex run's metrics.jsonl (one per epoch, then the final evaluation)."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def environment(device: torch.device | str = "cpu", **extra) -> dict:
    """Where a figure was measured: date, device, torch and torchdiffeq versions."""
    import torchdiffeq

    device = torch.device(device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device),
            "device_name": name, "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
            "python": platform.python_version(), **extra}


def fmt(v, digits: int = 2) -> str:
    """A table cell: '-' for None, floats to `digits` places (whole numbers from 10,000)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (cells already formatted, or formatted by `fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def report(cmd: str, text: str, out: str | Path | None = None, result: dict | None = None) -> None:
    """Print the command and below it the table(s); with `out`, write <out>.md (the same) and
    <out>.json (`result`, with the command)."""
    md = f"`{cmd}`\n\n{text}"
    print(md, flush=True)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(md)
        if result is not None:
            out.with_suffix(".json").write_text(json.dumps({"command": cmd, **result}, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# Devices and processes

def resolve_device(name: str = "auto", threads: int | None = None, tf32: bool = True) -> torch.device:
    """The device to measure on (auto: CUDA when present), torch's CPU threads, and TF32 on CUDA
    as odex-train has it."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available()
                          else "cpu" if name == "auto" else name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = False
    return device


def bench_command(*args: str) -> list[str]:
    """A child process of this tool: `python scripts/bench.py ARGS...` with this interpreter."""
    return [sys.executable, str(BENCH), *args]


def run_child(cmd: list[str], env: dict | None = None, result: Path | None = None) -> dict:
    """Run a measuring child process; its JSON result (the file `result`, else its last stdout
    line) with `process_wall_s` added. A failing child stops the benchmark, with its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or (result is not None and not result.exists()):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(result.read_text() if result is not None else proc.stdout.splitlines()[-1])
    if isinstance(out, dict):
        out["process_wall_s"] = wall
    return out
