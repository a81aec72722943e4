"""`trainer.compile: auto`: compile the vector fields only where a start-up probe says it repays its
cold compile within this run. A probe, not a rule: the gain depends on the field, the batch, the
machine and the run's length (0.81x to 1.13x per evaluation on the development CPU). The choice and
its figures are recorded in the summary (`compile`, `compile_reason`).
Design notes: docs/design-notes.md, "odex/training/compile_choice.py" (the probe's steps).
"""
from __future__ import annotations

import copy
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from odex.ode.field_options import FieldOptions
from odex.ode.nfe import CountedField, counted_fields

log = logging.getLogger("odex")

PRIOR_COMPILE_S = 20.0   # a typical cold inductor compile of a small field (about 30 s on the dev CPU)
MAX_GAIN = 0.5           # no compile is expected to more than halve a field's time
MARGIN = 0.95            # the compiled field must be at least 5 % faster to count as a gain
REPEATS = 5              # timed evaluations per side (after one untimed warm-up)
COMPILES_PER_RUN = 3     # training graph, partial-last-batch recompile, evaluation's no-grad graph


@dataclass
class CompileChoice:
    compile: bool
    reason: str                            # with the probe's figures
    evaluations: int = 0                   # n_f x iterations: expected evaluations in the run
    backend: str = "inductor"

    def summary(self) -> dict:
        return {"compile": self.backend if self.compile else "eager", "compile_reason": self.reason}


def decide(eager_s: float, evaluations: int, compiled_s: float | None = None,
           compile_s: float | None = None, *, prior_compile_s: float = PRIOR_COMPILE_S) -> tuple[bool | None, str]:
    """The rule of steps 3 and 5 (docs/design-notes.md). Returns (True|False, reason), or (None, reason) when the
    compiled timings are needed (step 4) and not given."""
    work = eager_s * evaluations
    if compiled_s is None:
        if work * MAX_GAIN < prior_compile_s:
            return False, (f"run too short to repay a compile: {evaluations} field evaluations x "
                           f"{eager_s * 1e3:.2f} ms = {work:.1f} s of field work, at most "
                           f"{work * MAX_GAIN:.1f} s to save against ~{prior_compile_s:.0f} s of cold compile")
        return None, "probe the compiled field"
    saving = (eager_s - compiled_s) * evaluations
    ratio = compiled_s / eager_s
    if compiled_s > MARGIN * eager_s:
        return False, f"compiled field not faster: {ratio:.2f}x eager per evaluation"
    cost = COMPILES_PER_RUN * (compile_s or 0.0)
    if saving <= cost:
        return False, (f"compiled field {ratio:.2f}x eager, but saves {saving:.1f} s over "
                       f"{evaluations} evaluations, less than {COMPILES_PER_RUN} x its {compile_s:.1f} s "
                       f"cold compile")
    return True, (f"compiled field {ratio:.2f}x eager: saves ~{saving:.1f} s over {evaluations} "
                  f"evaluations against {COMPILES_PER_RUN} x {compile_s:.1f} s of cold compile")


def _field_inputs(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple], list[int]]:
    """(t, y) of each vector field's first call and its forward NFE, from one forward pass of a
    copy of `model` on `x` (the copy's BatchNorm statistics move; the model's do not)."""
    shadow = copy.deepcopy(model)
    fields = counted_fields(shadow)
    inputs: list = [None] * len(fields)

    def recorder(i):
        def hook(module, args):
            if inputs[i] is None:
                t, y = args
                inputs[i] = (t.detach().clone(), _map(y, lambda v: v.detach().clone()))
        return hook

    handles = [f.register_forward_pre_hook(recorder(i)) for i, f in enumerate(fields)]
    for f in fields:
        f.reset()
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
        shadow(x)
    for h in handles:
        h.remove()
    nfe = [int(f.nfe_forward) for f in fields]
    return inputs, nfe


def _eval_and_vjp(field: CountedField, t: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    params = [p for p in field.parameters() if p.requires_grad]

    def run():
        yy = _map(y, lambda v: v.detach().requires_grad_(True))
        out = field(t, yy)
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if o.requires_grad]
        ins = [v for v in (yy if isinstance(yy, (tuple, list)) else [yy])]
        if outs:       # a part of the state the field leaves constant has no VJP to take
            torch.autograd.grad(outs, [*ins, *params], [torch.ones_like(o) for o in outs], allow_unused=True)
    return run


def _map(y, fn):
    """`fn` on a state: a tensor, or a tuple of tensors (the momentum models' (x, v) states)."""
    return type(y)(fn(v) for v in y) if isinstance(y, (tuple, list)) else fn(y)


def measure(fn: Callable[[], None], repeats: int, device: torch.device, label: str) -> tuple[float, float]:
    """(seconds of the first call, median seconds of the next `repeats`)."""
    def timed():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0
    first = timed()
    return first, statistics.median(timed() for _ in range(repeats))


def choose_compile(model: nn.Module, x: torch.Tensor, *, iterations: int, backend: str = "inductor",
                   measure: Callable = measure, prior_compile_s: float = PRIOR_COMPILE_S) -> CompileChoice:
    """Probe and decide whether the vector fields of `model` are to be compiled (with `backend`);
    `model` itself is left as it was (its fields, statistics and counters).
    `measure(fn, repeats, device, label) -> (first_s, median_s)` times a probe (label "eager" or
    "compiled"); tests pass one with scripted timings, the compile itself stays real."""
    fields = counted_fields(model)
    if not fields:
        return CompileChoice(False, "no vector field to compile", backend=backend)
    inputs, nfe = _field_inputs(model, x)
    evaluations = sum(nfe) * iterations
    # through CountedField (a copy of each, as the run builds it), so a bf16 field is timed under
    # its autocast and the model's own counters are not touched
    eager = [measure(_eval_and_vjp(_built_as(f, f.options.backend), *inp), REPEATS, x.device, "eager")[1]
             for f, inp in zip(fields, inputs) if inp is not None]
    eager_s = sum(eager) / len(eager) if eager else 0.0     # per evaluation, averaged over the fields
    ok, reason = decide(eager_s, evaluations, prior_compile_s=prior_compile_s)
    if ok is not None:
        return CompileChoice(ok, reason, evaluations, backend)

    compile_s, compiled = 0.0, []
    for f, inp in zip(fields, inputs):
        if inp is not None:
            first, med = measure(_eval_and_vjp(_built_as(f, backend), *inp), REPEATS, x.device, "compiled")
            compile_s += max(first - med, 0.0)
            compiled.append(med)
    compiled_s = sum(compiled) / len(compiled) if compiled else eager_s
    ok, reason = decide(eager_s, evaluations, compiled_s, compile_s, prior_compile_s=prior_compile_s)
    return CompileChoice(bool(ok), reason, evaluations, backend)


def _built_as(counted: CountedField, backend: str | None) -> CountedField:
    """A copy of `counted`'s field wrapped as a block built with `backend` (None: eager) would
    wrap it, with the same dtype."""
    return CountedField(copy.deepcopy(counted.field), FieldOptions(counted.options.dtype, backend))
