"""The continuous adjoint (Chen et al., "Neural Ordinary Differential Equations", NeurIPS 2018) and
`SeminormAdjoint` (Kidger, Chen, Lyons, "Hey, that's not an ODE", ICML 2021): z, a = dL/dz and
dL/dtheta solved backwards per output interval; memory O(1) in the steps. torchdiffeq's algorithm,
with both solves through `odex.ode.loops.integrate`. Design notes: docs/design-notes.md, "odex/ode/grad/adjoint.py".
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from odex import schema
from odex.ode.grad.base import GradientMethod
from odex.ode.loops import integrate
from odex.ode.loops.inputs import mixed_norm, prepare


class Adjoint(GradientMethod):
    schema = schema.Adjoint
    name = "adjoint"
    seminorm: bool = False

    def __init__(self, rtol: float | None = None, atol: float | None = None):
        self.rtol = rtol
        self.atol = atol

    def solve(self, func, y0, t, *, method, rtol, atol, options, loop="torchdiffeq", times=None):
        params = tuple(p for p in func.parameters() if p.requires_grad)
        options = dict(options or {})       # the backward solve's: without the forward's norm
        # A tuple state is flattened into one tensor (and decreasing times negated) once, here, so
        # the autograd function sees one tensor; the solves inside it see a plain solve.
        flat = prepare(func, y0, t, rtol, atol, options.pop("norm", None), times)
        setup = SimpleNamespace(method=method, loop=loop, rtol=flat.rtol, atol=flat.atol,
                                options={**options, "norm": flat.norm}, times=flat.times,
                                backward_rtol=rtol if self.rtol is None else self.rtol,
                                backward_atol=atol if self.atol is None else self.atol, backward_options=options,
                                backward_norm=_augmented_norm(flat.norm, self.seminorm))
        return flat.solution(_AdjointFn.apply(setup, flat.func, flat.y0, flat.t, *params))


class SeminormAdjoint(Adjoint):
    schema = schema.Seminorm
    name = "seminorm"
    seminorm = True


def _augmented_norm(state_norm, seminorm: bool):
    """The backward solve's error measure of (dL/dt, z, a, *dL/dtheta): max of |dL/dt|, the forward
    norm of z and of a, and (unless `seminorm`) the RMS of each parameter integral."""
    def norm(aug):
        vjp_t, z, a, *vjp_params = aug
        out = max(vjp_t.abs(), state_norm(z), state_norm(a))
        return out if seminorm else max(out, mixed_norm(vjp_params))
    return norm


class _AdjointFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, setup: SimpleNamespace, func, y0: torch.Tensor, t: torch.Tensor, *params):
        with torch.no_grad():
            ys = integrate(func, y0, t, method=setup.method, loop=setup.loop, rtol=setup.rtol,
                           atol=setup.atol, options=setup.options, times=setup.times)
        ctx.setup, ctx.func = setup, func
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):
        setup, func = ctx.setup, ctx.func
        t, ys, *params = ctx.saved_tensors
        want_t = ctx.needs_input_grad[3]

        def augmented(s, aug):
            _, z, a, *_ = aug
            with torch.enable_grad():
                # The field always sees a time that requires grad, so dL/dt's integrand is computed
                # (and measured by the step-size control) even when t needs no gradient: torchdiffeq's
                # odeint_adjoint does the same (its `t_` and `t` are one tensor), and doing as it does
                # keeps the steps, NFE and gradients identical to it.
                s_ = s.detach().requires_grad_(True)
                z = z.detach().requires_grad_(True)
                f = func(s_, z)
                vjps = torch.autograd.grad(f, (s_, z, *params), -a, retain_graph=True, allow_unused=True,
                                           materialize_grads=True)      # zeros for what f does not depend on
            return (vjps[0], f, *vjps[1:])

        with torch.no_grad():
            aug = [torch.zeros((), dtype=ys.dtype, device=ys.device), ys[-1], grad_ys[-1],
                   *(torch.zeros_like(p) for p in params)]
            grad_t = torch.empty(len(t), dtype=t.dtype, device=t.device) if want_t else None
            options = {**setup.backward_options, "norm": setup.backward_norm}
            for i in range(len(t) - 1, 0, -1):
                if want_t:   # moving t_i moves y_i along f: dL/dt_i = dL/dy_i . f(t_i, y_i)
                    dl_dti = func(t[i], ys[i]).reshape(-1).dot(grad_ys[i].reshape(-1))
                    aug[0] = aug[0] - dl_dti
                    grad_t[i] = dl_dti
                states = integrate(augmented, tuple(aug), t[i - 1:i + 1].flip(0), method=setup.method,
                                   loop=setup.loop, rtol=setup.backward_rtol, atol=setup.backward_atol,
                                   options=options)
                aug = [s[1] for s in states]
                aug[1] = ys[i - 1]                    # restart z from the forward solution
                aug[2] = aug[2] + grad_ys[i - 1]
            if want_t:
                grad_t[0] = aug[0]
        grad_y0 = aug[2] if ctx.needs_input_grad[2] else None
        return (None, None, grad_y0, grad_t, *aug[3:])
