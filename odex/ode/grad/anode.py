"""ANODE's checkpointed gradient (Gholami, Keutzer, Biros, "ANODE: Unconditionally Accurate
Memory-Efficient Gradients for Neural ODEs", IJCAI 2019): the forward keeps only the block's input,
the backward recomputes the fixed-step solve with its graph and backpropagates it (the exact
gradient of the discretised map). Design notes: docs/design-notes.md, "odex/ode/grad/anode.py".
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from odex.errors import ConfigError
from odex.ode.loops import integrate
from odex.ode.solver import Solver
from odex.ode.tableau import is_adaptive
from odex import schema
from odex.ode.grad.base import GradientMethod

_ADAPTIVE_MSG = ("grad=anode recomputes a fixed-step solve; solver.method={} is adaptive. Use "
                 "solver=euler, midpoint or rk4 with solver.steps=N (ANODE: midpoint, steps 2)")


class CheckpointedANODE(GradientMethod):
    name = "anode"
    schema = schema.CheckpointedANODE

    def check(self, solver: Solver, field: nn.Module) -> None:
        if solver.adaptive and not self.supports.adaptive_solvers:
            raise ConfigError(_ADAPTIVE_MSG.format(solver.method))

    def solve(self, func, y0, t, *, method, rtol, atol, options, loop="torchdiffeq", times=None):
        if is_adaptive(method):
            raise ConfigError(_ADAPTIVE_MSG.format(method))
        block = partial(integrate, func, method=method, loop=loop, rtol=rtol, atol=atol, options=options, times=times)
        params = tuple(p for p in func.parameters() if p.requires_grad)
        return _RecomputedSolve.apply(block, func, y0, t, *params)


class _RecomputedSolve(torch.autograd.Function):
    """forward: ys = block(y0, t) without a graph, keeping y0, t and the RNG state.
    backward: the same solve again with the graph (same RNG state, BatchNorm statistics restored
    afterwards), then one backward pass through it."""

    @staticmethod
    def forward(ctx, block, func, y0, t, *params):
        ctx.block, ctx.func = block, func
        ctx.rng = torch.get_rng_state(), torch.cuda.get_rng_state(y0.device) if y0.device.type == "cuda" else None
        ctx.save_for_backward(y0, t, *params)
        return block(y0, t)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):
        y0, t, *params = ctx.saved_tensors
        devices = [y0.device] if y0.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _restored_batchnorm_stats(ctx.func), torch.enable_grad():
            torch.set_rng_state(ctx.rng[0])
            if devices:
                torch.cuda.set_rng_state(ctx.rng[1], y0.device)
            y0_ = y0.detach().requires_grad_(ctx.needs_input_grad[2])
            t_ = t.detach().requires_grad_(ctx.needs_input_grad[3])
            ys = ctx.block(y0_, t_)
            # inside the context: the graph saved the running statistics, so they are restored
            # (modified in place) only once it has been used
            wanted = [x for x, need in zip((y0_, t_, *params), ctx.needs_input_grad[2:]) if need]
            grads = iter(torch.autograd.grad(ys, wanted, grad_ys, allow_unused=True) if wanted else ())
        return (None, None, *(next(grads) if need else None for need in ctx.needs_input_grad[2:]))


@contextmanager
def _restored_batchnorm_stats(module: nn.Module):
    """BatchNorm running statistics in `module` are the same on exit as on entry."""
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)
