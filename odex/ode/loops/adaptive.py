"""odex's adaptive loop (`solver.loop=odex` with dopri5, bosh3, ... or any adaptive tableau):
torchdiffeq's embedded-pair step-size control (same formulas, constants and defaults, hence the same
steps, NFE and solutions) with one host read per attempted step instead of about nine.
Design notes: docs/design-notes.md, "odex/ode/loops/adaptive.py".
"""
from __future__ import annotations

import torch

from odex.ode.loops.rk_step import StackedSlopes, stages
from odex.ode.tableau import ButcherTableau


class AdaptiveLoop:
    """Steps `tableau` from t[0] through every output time, the step size following the error."""

    def __init__(self, tableau: ButcherTableau, func, y0, rtol, atol, *, times: tuple[float, ...], norm,
                 min_step=0.0, max_step=float("inf"), first_step=None, safety=0.9, ifactor=10.0, dfactor=0.2,
                 max_num_steps=2 ** 31 - 1, dtype=torch.float64, **unused):
        if unused:
            raise ValueError(f"odex's adaptive loop does not take {sorted(unused)} (use solver.loop=torchdiffeq)")
        # time-like values in float64 (or finer), the state in its own dtype
        self.dtype = dtype = torch.promote_types(dtype, y0.real.dtype if y0.is_complex() else y0.dtype)
        as_time = lambda x: torch.as_tensor(x, dtype=dtype, device=y0.device)     # noqa: E731
        self.tableau, self.func, self.y0, self.times, self.norm = tableau, func, y0, times, norm
        # the weights as tensors in the state's dtype, on its device (rounded from float64, as torchdiffeq's)
        as_state = lambda w: torch.tensor(w, dtype=torch.float64).to(device=y0.device, dtype=y0.dtype)  # noqa: E731
        self.a = [as_state(row) for row in tableau.a[1:]]
        self.b, self.b_error, self.mid = as_state(tableau.b), as_state(tableau.b_error), as_state(tableau.mid)
        self.rtol, self.atol = as_time(rtol), as_time(atol)
        self.min_step, self.max_step = as_time(min_step), as_time(max_step)
        self.first_step = None if first_step is None else as_time(first_step)
        self.safety, self.ifactor, self.dfactor = as_time(safety), as_time(ifactor), as_time(dfactor)
        # host copies of the limits, from the options (reading the device copies would sync)
        self.max_num_steps = int(max_num_steps)
        self.min_step_host, self.max_step_host = float(min_step), float(max_step)

    def integrate(self, t: torch.Tensor) -> torch.Tensor:
        solution = torch.empty(len(t), *self.y0.shape, dtype=self.y0.dtype, device=self.y0.device)
        solution[0] = self.y0
        t = t.to(self.dtype)
        f0 = self.func(t[0], self.y0)
        dt = self.first_step
        if dt is None:
            dt = initial_step(self.func, t[0], self.y0, self.tableau.order - 1, self.rtol, self.atol, self.norm, f0)
        # the state after the last accepted step: y, f at t1; the dense output on [t0, t1]
        self.y, self.f, self.t0, self.t1, self.dt, self.coefficients = self.y0, f0, t[0], t[0], dt, [self.y0] * 5
        self.t0_host = self.t1_host = self.times[0]
        for i in range(1, len(t)):
            steps = 0
            while self.times[i] > self.t1_host:
                assert steps < self.max_num_steps, f"max_num_steps exceeded ({steps}>={self.max_num_steps})"
                self._step()
                steps += 1
            assert self.t0_host <= self.times[i] <= self.t1_host, \
                f"invalid interpolation, fails `t0 <= t <= t1`: {self.t0_host}, {self.times[i]}, {self.t1_host}"
            solution[i] = evaluate(self.coefficients, self.t0, self.t1, t[i])
        return solution

    def _step(self) -> None:
        """One attempted step from the last accepted one; everything it decides, from one read."""
        tab, y0, f0, t0 = self.tableau, self.y, self.f, self.t1
        dt = torch.where(torch.isfinite(self.dt), self.dt, self.min_step).clamp(self.min_step, self.max_step)
        t1 = t0 + dt
        state_dtype = y0.real.dtype if y0.is_complex() else y0.dtype
        t0_, dt_, t1_ = t0.to(state_dtype), dt.to(state_dtype), t1.to(state_dtype)
        k = StackedSlopes(f0, tab.stages)
        y_last = stages(self.func, tab.c, self.a, t0_, dt_, t1_, y0, k, perturb_end=True)
        y1 = y_last if tab.fsal else k.combine(self.b, y0, dt_)
        error = k.total(self.b_error, dt_)
        ratio = self.norm(error / (self.atol + self.rtol * torch.max(y0.abs(), y1.abs()))).abs()
        # the one host read
        ratio_host, dt_host, t1_host, advanced, finite = torch.stack([
            ratio.detach().to(self.dtype), dt.detach(), t1.detach(), (t1 > t0).to(self.dtype),
            torch.isfinite(y0).all().to(self.dtype)]).tolist()
        assert advanced, f"underflow in dt {dt_host}"
        assert finite, f"non-finite values in state `y`: {y0}"
        accept = dt_host <= self.min_step_host or (ratio_host <= 1 and not dt_host > self.max_step_host)
        if accept:
            self.coefficients = fit(y0, y1, k.combine(self.mid, y0, dt.type_as(y0)), k[0], k[-1], dt.type_as(y0))
            self.y, self.f, self.t0, self.t1 = y1, k[-1], t0, t1
            self.t0_host, self.t1_host = self.t1_host, t1_host
        self.dt = self._next_step(dt, ratio, ratio_host).clamp(self.min_step, self.max_step)

    @torch.no_grad()
    def _next_step(self, dt: torch.Tensor, ratio: torch.Tensor, ratio_host: float) -> torch.Tensor:
        """h min(ifactor, max(safety ratio^(-1/order), dfactor)), the branches on the host copy."""
        if ratio_host == 0:
            return dt * self.ifactor
        dfactor = torch.ones((), dtype=dt.dtype, device=dt.device) if ratio_host < 1 else self.dfactor
        exponent = torch.tensor(self.tableau.order, dtype=dt.dtype, device=dt.device).reciprocal()
        return dt * torch.min(self.ifactor, torch.max(self.safety / ratio.type_as(dt) ** exponent, dfactor))


def initial_step(func, t0, y0, order, rtol, atol, norm, f0) -> torch.Tensor:
    """The first step size (Hairer, Norsett, Wanner I, II.4, "starting step size"): h0 from the
    sizes of y0 and f0, one Euler step of h0, then h1 from the change of f; min(100 h0, h1).
    Two host reads per solve, each deciding a branch of the book's algorithm."""
    dtype, device = y0.dtype, y0.device
    scale = atol + torch.abs(y0) * rtol
    d0, d1 = norm(y0 / scale).abs(), norm(f0 / scale).abs()
    small = bool((d0 < 1e-5) | (d1 < 1e-5))
    h0 = (torch.tensor(1e-6, dtype=dtype, device=device) if small else 0.01 * d0 / d1).abs()
    f1 = func(t0 + h0, y0 + h0 * f0)
    d2 = torch.abs(norm((f1 - f0) / scale) / h0)
    tiny, d2_larger = torch.stack([(d1 <= 1e-15) & (d2 <= 1e-15), d2 > d1]).tolist()
    if tiny:
        h1 = torch.max(torch.tensor(1e-6, dtype=dtype, device=device), h0 * 1e-3)
    else:
        h1 = (0.01 / (d2 if d2_larger else d1)) ** (1. / float(order + 1))
    return torch.min(100 * h0, h1.abs()).to(t0.dtype)


def fit(y0, y1, y_mid, f0, f1, dt) -> list[torch.Tensor]:
    """Coefficients [e, d, c, b, a] of p(x) = a x^4 + b x^3 + c x^2 + d x + e on x in [0, 1] with
    p(0) = y0, p(1) = y1, p(1/2) = y_mid, p'(0) = dt f0, p'(1) = dt f1."""
    a = 2 * dt * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
    b = dt * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
    c = dt * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
    return [y0, dt * f0, c, b, a]


def evaluate(coefficients: list[torch.Tensor], t0, t1, t) -> torch.Tensor:
    """The dense output at t in [t0, t1] (Horner-free, as torchdiffeq sums it)."""
    x = ((t - t0) / (t1 - t0)).to(coefficients[0].dtype)
    total, x_power = coefficients[0] + x * coefficients[1], x
    for coefficient in coefficients[2:]:
        x_power = x_power * x
        total = total + x_power * coefficient
    return total
