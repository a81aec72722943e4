"""Gradient fidelity as a metric (eval=grad_check): how far the configured gradient method's
parameter gradient is from direct backpropagation through the same solver (adjoints are exact only
up to tolerances and for smooth fields: Gholami et al., "ANODE", IJCAI 2019). On one fixed batch,
in eval mode, over all trainable parameters together:

    grad/rel_err = ||g_method - g_direct|| / ||g_direct||
    grad/cosine  = <g_method, g_direct> / (||g_method|| ||g_direct||)

and a warning when rel_err exceeds `threshold`. Design notes: docs/design-notes.md,
"odex/evaluate/grad_check.py" (why, `float64`, `solver`).
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from odex.errors import ConfigError
from odex.evaluate.evaluators import first_examples
from odex.ode.grad import Direct
from odex.ode.block import grad_changed, ode_blocks, solver_changed

log = logging.getLogger("odex")


def parameter_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d mean-CE / d (every trainable parameter), flattened into one vector (unused ones: zeros).
    Through torch.autograd.grad: the parameters' .grad fields are left as they are."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def compare(g: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relative error, cosine) of `g` against the reference `ref`."""
    g, ref = g.double(), ref.double()
    rel = (g - ref).norm() / ref.norm().clamp_min(1e-300)
    cos = (g @ ref) / (g.norm() * ref.norm()).clamp_min(1e-300)
    return rel, cos


class GradCheck:
    """eval=grad_check: `grad/rel_err` and `grad/cosine` of the configured gradient method against
    direct backprop through the same solver, every `every` epochs (module docstring)."""

    test_only = True       # one fixed batch, measured once per evaluation (not per split)

    def __init__(self, every: int | None = 1, examples: int = 64, float64: bool = False,
                 threshold: float = 1e-2, solver: dict | None = None):
        # the keys' ranges and the solver's keys: odex/schema.py GradCheck, checked before the run
        self.every, self.examples, self.float64, self.threshold = every, int(examples), bool(float64), threshold
        self.solver = None if solver is None else dict(solver)

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        if not ode_blocks(model):
            raise ConfigError(f"eval=grad_check compares an ODE gradient method with direct backprop: "
                              f"{type(model).__name__} has no ODE block")
        xs, ys = zip(*first_examples(batches, self.examples))
        x, y = torch.cat(xs), torch.cat(ys)
        net = model
        if self.float64:
            net = copy.deepcopy(model).double()
            x = x.double() if x.is_floating_point() else x
        was_training = net.training
        net.eval()
        try:
            with torch.enable_grad(), solver_changed(net, self.solver):
                g_method = parameter_gradient(net, x, y)
                with grad_changed(net, Direct()):
                    g_direct = parameter_gradient(net, x, y)
        finally:
            net.train(was_training)
        rel, cos = compare(g_method, g_direct)
        rel_host = rel.item()     # one read per check, for the warning
        if not rel_host <= self.threshold:
            methods = sorted({b.grad.name for b in ode_blocks(model)})
            log.warning("eval=grad_check: the parameter gradient of grad=%s is %.3g away from direct backprop "
                        "(relative, > %.3g; cosine %.6f): the method is not exact for this model and solver "
                        "(a ReLU field, loose tolerances?)", ",".join(methods), rel_host, self.threshold, cos.item())
        device = g_direct.device
        return {"grad/rel_err": rel.float().to(device), "grad/cosine": cos.float().to(device)}
