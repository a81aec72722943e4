"""The Gauss–Legendre quadrature adjoint ("GQ"; Norcliffe & Deisenroth, "Faster Training of Neural
ODEs Using Gauss–Legendre Quadrature", TMLR 2023): only [z, a] is solved backwards, and the parameter
gradient int a^T df/dtheta dt is a Gauss–Legendre sum over nodes of the backward solve's dense output.
Design notes: docs/design-notes.md, "odex/ode/grad/gq.py".
"""
from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from odex.errors import ConfigError
from odex.ode.loops import integrate
from odex.ode.solver import Solver
from odex.ode.tableau import is_adaptive
from odex import schema
from odex.ode.grad.base import GradientMethod


class GaussLegendreAdjoint(GradientMethod):
    name = "gq"
    schema = schema.GaussLegendre

    def __init__(self, c: float = 0.1, max_nodes: int = 64, rtol: float | None = None,
                 atol: float | None = None):
        # c > 0, max_nodes >= 1: odex/schema.py GaussLegendre, checked before the run
        self.c = float(c)
        self.max_nodes = int(max_nodes)
        self.rtol = rtol
        self.atol = atol

    def check(self, solver: Solver, field: nn.Module) -> None:
        if field.training and _batchnorms(field):
            raise ConfigError(_BATCHNORM_MSG)

    def solve(self, func, y0, t, *, method, rtol, atol, options, loop="torchdiffeq", times=None):
        if any(m.training for m in _batchnorms(func)):
            raise ConfigError(_BATCHNORM_MSG)
        if not isinstance(y0, torch.Tensor):
            raise ConfigError("grad=gq takes a tensor state y0, not a tuple")
        params = tuple(p for p in func.parameters() if p.requires_grad)
        setup = SimpleNamespace(method=method, loop=loop, times=times, rtol=rtol, atol=atol,
                                options=dict(options or {}), c=self.c, max_nodes=self.max_nodes,
                                backward_rtol=rtol if self.rtol is None else self.rtol,
                                backward_atol=atol if self.atol is None else self.atol)
        return _GaussLegendreAdjointFn.apply(setup, func, y0, t, *params)


_BATCHNORM_MSG = ("grad=gq is not valid with BatchNorm in training mode inside the vector field "
                  "(every backward and quadrature evaluation would update its running statistics "
                  "and it couples the batch); use grad=adjoint, grad=anode or grad=direct")


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def node_count(c: float, nfe_forward: int, fraction: float, max_nodes: int) -> int:
    """n = min(ceil(C * NFE_forward * fraction), max_nodes), at least 1. The product is rounded to
    9 decimals first so that, e.g., 0.1 * 30 gives 3 nodes rather than ceil(3.0000000000000004)."""
    return max(1, min(math.ceil(round(c * nfe_forward * fraction, 9)), max_nodes))


@lru_cache(maxsize=256)
def _legendre(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre nodes (ascending) and weights on [-1, 1] in float64, cached per device so a
    backward pass costs no host-to-device copy after the first."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (torch.as_tensor(x, dtype=torch.float64, device=device),
            torch.as_tensor(w, dtype=torch.float64, device=device))


def gauss_legendre(n: int, t0: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the n-point Gauss–Legendre rule on [t0, t1] (float64 scalars), nodes in
    decreasing time (the order the backward solve visits them)."""
    x, w = _legendre(n, t0.device)
    half, mid = (t1 - t0) / 2, (t1 + t0) / 2
    return (mid + half * x).flip(0), (half * w).flip(0)


def _pair_rms_norm(state: torch.Tensor) -> torch.Tensor:
    """max(rms z, rms a) for the stacked backward state [z, a] (the GQ paper's backward norm; the
    parameter gradient takes no part in the step-size control)."""
    return state.reshape(2, -1).square().mean(1).max().sqrt()


class _GaussLegendreAdjointFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, setup: SimpleNamespace, func: nn.Module, y0: torch.Tensor, t: torch.Tensor, *params):
        nfe = 0

        def counted(tt, y):       # a host-side count: the node count needs no device sync
            nonlocal nfe
            nfe += 1
            return func(tt, y)

        ys = integrate(counted, y0, t, method=setup.method, loop=setup.loop, rtol=setup.rtol,
                       atol=setup.atol, options=setup.options, times=setup.times)
        ctx.setup, ctx.func, ctx.nfe_forward = setup, func, nfe
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):
        setup, func = ctx.setup, ctx.func
        t, ys, *params = ctx.saved_tensors
        want_y0, want_t = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        n_int = len(t) - 1
        tt = t.detach().to(torch.float64)
        if n_int == 1:
            fractions = [1.0]
        else:   # one host read of the output times (the adaptive solves sync far more often)
            th = tt.tolist()
            fractions = [(th[i] - th[i - 1]) / (th[-1] - th[0]) for i in range(1, n_int + 1)]
        options = {**setup.options, "norm": _pair_rms_norm}
        if not is_adaptive(setup.method):     # node values from a cubic, not a linear, interpolant
            options = {**setup.options, "interp": "cubic"}

        def dynamics(s, state):
            # [z, a] in reversed time s = -t, so the solve runs forwards in s:
            # dz/ds = -f(-s, z),  da/ds = a^T df/dz(-s, z).
            z, a = state[0], state[1]
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                f = func(-s, z)
                vjp = _vjp(f, (z,), a)[0]
            return torch.stack((f.detach().neg(), torch.zeros_like(z) if vjp is None else vjp))

        grad_params: list[torch.Tensor | None] = [None] * len(params)
        grad_t = torch.zeros_like(t) if want_t else None
        z, a = ys[-1], grad_ys[-1]
        for i in range(n_int, 0, -1):
            if want_t:
                grad_t[i] = (grad_ys[i] * func(t[i].to(ys.dtype), ys[i])).sum()
            taus, weights = gauss_legendre(node_count(setup.c, ctx.nfe_forward, fractions[i - 1],
                                                      setup.max_nodes), tt[i - 1], tt[i])
            times = torch.cat((tt[i:i + 1], taus, tt[i - 1:i]))
            states = integrate(dynamics, torch.stack((z, a)), -times, method=setup.method, loop=setup.loop,
                               rtol=setup.backward_rtol, atol=setup.backward_atol, options=options)
            if params:
                taus, weights = taus.to(ys.dtype), weights.to(ys.dtype)
                for k in range(len(taus)):
                    z_k, a_k = states[1 + k]
                    with torch.enable_grad():
                        f = func(taus[k], z_k)
                        g = _vjp(f, params, a_k * weights[k])
                    _accumulate(grad_params, g)
            a = states[-1][1]
            z = ys[i - 1]
            if i > 1:
                a = a + grad_ys[i - 1]
        if want_t:   # moving t_0 with y(t_0) = y0 fixed shifts the whole solution by -f(t_0, y0)
            grad_t[0] = -(a * func(t[0].to(ys.dtype), ys[0])).sum()
        grad_y0 = a + grad_ys[0] if want_y0 else None
        return (None, None, grad_y0, grad_t, *grad_params)


def _vjp(f: torch.Tensor, inputs: tuple[torch.Tensor, ...], cotangent: torch.Tensor):
    """cotangent^T df/d(inputs); None for an input f does not depend on."""
    if not f.requires_grad:
        return (None,) * len(inputs)
    return torch.autograd.grad(f, inputs, cotangent, allow_unused=True)


def _accumulate(total: list[torch.Tensor | None], new) -> None:
    if all(g is not None for g in (*total, *new)):
        torch._foreach_add_(total, list(new))      # one fused launch on a GPU
        return
    for j, g in enumerate(new):
        if g is not None:
            total[j] = g if total[j] is None else total[j].add_(g)
