"""odex's adaptive loop (`solver.loop=odex` with dopri5, bosh3, ... or any adaptive tableau):
Runge-Kutta solves with one host read per step.

torchdiffeq's adaptive solvers (dopri5, bosh3, ...) read GPU values back to the host about nine
times per attempted step: the `while next_t > t1` loop test, `isfinite(dt)`, the underflow and the
non-finite-state assertions, `dt > max_step`, `dt <= min_step`, `if accept_step`, `error_ratio ==
0` and `error_ratio < 1` in the step-size update, and `n_steps < max_num_steps` against a device
integer. Each read stalls the CPU until the GPU has drained its queue.

Its Runge-Kutta step itself reads too: `if alpha_i == 1.` per stage and the FSAL test of the
tableau per step compare device tensors. Here every step is torchdiffeq's arithmetic -- its
`_runge_kutta_step` with the tableau's tests made once on the host copy, its `_compute_error_ratio`,
`_interp_fit`, `_interp_evaluate`, `_select_initial_step` for the first step size and the formula of
`_optimal_step_size` -- in the same order, with the same branches, but the branches are taken on
host values: after the step's stages are queued, one small tensor (error ratio, step size, the
underflow and non-finite flags, the new time) comes back in one transfer, and everything the step
decides is decided from it. The output times, max_num_steps and the current time live on the host
(read once per solve). Same accepted and rejected steps, same NFE, same solution and the same
gradients as torchdiffeq.

Each solver class here is the torchdiffeq loop's class for the same tableau
(odex/ode/loops/torchdiffeq_loop.py) with its stepping replaced, built on demand by `solver_class`;
nothing is registered in torchdiffeq. Written here because torchdiffeq's loop itself makes the reads and no
maintained library runs torchdiffeq's exact steps without them (torchode, the one measured, keeps
per-sample step sizes and takes more operations per step; docs/benchmarks.md). Not supported:
`step_t`, `jump_t`, events and step callbacks (odex uses none; they raise ValueError).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torchdiffeq._impl.misc import Perturb, _compute_error_ratio, _select_initial_step
from torchdiffeq._impl.rk_common import _RungeKuttaState, _UncheckedAssign

from odex.ode.loops import torchdiffeq_loop
from odex.ode.tableau import ButcherTableau


class OneReadPerStep:
    """Mixin for a torchdiffeq RKAdaptiveStepsizeODESolver subclass: its steps with one host read.
    `_alpha_is_one` and `_fsal` are its tableau's tests, made once on the class's CPU copy."""

    _alpha_is_one: list[bool]
    _fsal: bool
    reads_times = True          # takes `times`, the host copy of t (odex.ode.loops.integrate)

    def __init__(self, func, y0, rtol, atol, times=None, **options):
        self.times = times
        for name in ("step_t", "jump_t"):
            if options.get(name) is not None:
                raise ValueError(f"odex's adaptive loop does not support {name} (use the torchdiffeq solver)")
        # host copies of the limits, from the options (reading the solver's device copies would sync)
        self.max_num_steps_host = int(options.get("max_num_steps", 2 ** 31 - 1))
        self._min_step = float(options.get("min_step", 0.0))
        self._max_step = float(options.get("max_step", float("inf")))
        super().__init__(func, y0, rtol, atol, **options)

    def _before_integrate(self, t: torch.Tensor) -> None:
        """torchdiffeq's, without its step_t/jump_t bookkeeping (refused above)."""
        f0 = self.func(t[0], self.y0)
        first_step = self.first_step
        if first_step is None:
            first_step = _select_initial_step(self.func, t[0], self.y0, self.order - 1, self.rtol, self.atol,
                                              self.norm, f0=f0)
        self.rk_state = _RungeKuttaState(self.y0, f0, t[0], t[0], first_step, [self.y0] * 5)

    def integrate(self, t: torch.Tensor) -> torch.Tensor:
        solution = torch.empty(len(t), *self.y0.shape, dtype=self.y0.dtype, device=self.y0.device)
        solution[0] = self.y0
        t = t.to(self.dtype)
        self._before_integrate(t)
        t_host = t.tolist() if self.times is None else list(self.times)   # at most one read per solve
        self._t0_host = self._t1_host = t_host[0]
        for i in range(1, len(t)):
            solution[i] = self._advance_to(t[i], t_host[i])
        return solution

    def _advance_to(self, next_t: torch.Tensor, next_t_host: float) -> torch.Tensor:
        n_steps = 0
        while next_t_host > self._t1_host:
            assert n_steps < self.max_num_steps_host, \
                f"max_num_steps exceeded ({n_steps}>={self.max_num_steps_host})"
            self.rk_state = self._one_read_step(self.rk_state)
            n_steps += 1
        return self._interp_evaluate(next_t, next_t_host)

    def _interp_evaluate(self, t: torch.Tensor, t_host: float) -> torch.Tensor:
        """torchdiffeq's _interp_evaluate, its interval check on the host copies."""
        coefficients, t0, t1 = self.rk_state.interp_coeff, self.rk_state.t0, self.rk_state.t1
        assert self._t0_host <= t_host <= self._t1_host, \
            f"invalid interpolation, fails `t0 <= t <= t1`: {self._t0_host}, {t_host}, {self._t1_host}"
        x = ((t - t0) / (t1 - t0)).to(coefficients[0].dtype)
        total = coefficients[0] + x * coefficients[1]
        x_power = x
        for coefficient in coefficients[2:]:
            x_power = x_power * x
            total = total + x_power * coefficient
        return total

    def _runge_kutta_step(self, y0, f0, t0, dt, t1):
        """torchdiffeq's _runge_kutta_step (same operations, same order), the tableau's tests on the
        host: returns (y1, f1, y1_error, k)."""
        tableau = self.tableau
        t_dtype = y0.real.dtype if y0.is_complex() else y0.dtype     # torchdiffeq: y0.abs().dtype
        t0, dt, t1 = t0.to(t_dtype), dt.to(t_dtype), t1.to(t_dtype)
        # written into without bumping its version counter, as torchdiffeq does
        k = torch.empty(*f0.shape, len(tableau.alpha) + 1, dtype=y0.dtype, device=y0.device)
        k = _UncheckedAssign.apply(k, f0, (..., 0))
        for i, (alpha_i, beta_i) in enumerate(zip(tableau.alpha, tableau.beta)):
            if self._alpha_is_one[i]:
                ti, perturb = t1, Perturb.PREV
            else:
                ti, perturb = t0 + alpha_i * dt, Perturb.NONE
            yi = y0 + torch.sum(k[..., :i + 1] * (beta_i * dt), dim=-1).view_as(f0)
            f = self.func(ti, yi, perturb=perturb)
            k = _UncheckedAssign.apply(k, f, (..., i + 1))
        if not self._fsal:
            yi = y0 + torch.sum(k * (dt * tableau.c_sol), dim=-1).view_as(f0)
        return yi, k[..., -1], torch.sum(k * (dt * tableau.c_error), dim=-1), k

    def _one_read_step(self, rk_state: _RungeKuttaState) -> _RungeKuttaState:
        """torchdiffeq's RKAdaptiveStepsizeODESolver._adaptive_step, its branches on host values."""
        y0, f0, _, t0, dt, interp_coeff = rk_state
        # `if not isfinite(dt): dt = min_step` and the clamp, on the device
        dt = torch.where(torch.isfinite(dt), dt, self.min_step).clamp(self.min_step, self.max_step)
        t1 = t0 + dt
        y1, f1, y1_error, k = self._runge_kutta_step(y0, f0, t0, dt, t1)
        error_ratio = _compute_error_ratio(y1_error, self.rtol, self.atol, y0, y1, self.norm)
        # the one host read: everything the step decides, in one transfer
        ratio, dt_host, t1_host, advanced, finite = torch.stack([
            error_ratio.detach().to(self.dtype), dt.detach(), t1.detach(), (t1 > t0).to(self.dtype),
            torch.isfinite(y0).all().to(self.dtype)]).tolist()
        assert advanced, f"underflow in dt {dt_host}"
        assert finite, f"non-finite values in state `y`: {y0}"
        accept = ratio <= 1
        if dt_host > self._max_step:
            accept = False
        if dt_host <= self._min_step:
            accept = True
        if accept:
            t_next, y_next, f_next = t1, y1, f1
            interp_coeff = self._interp_fit(y0, y1, k, dt)
            self._t0_host, self._t1_host = self._t1_host, t1_host
        else:
            t_next, y_next, f_next = t0, y0, f0
        dt_next = self._next_step_size(dt, error_ratio, ratio).clamp(self.min_step, self.max_step)
        return _RungeKuttaState(y_next, f_next, t0, t_next, dt_next, interp_coeff)

    @torch.no_grad()
    def _next_step_size(self, dt: torch.Tensor, error_ratio: torch.Tensor, ratio: float) -> torch.Tensor:
        """torchdiffeq's _optimal_step_size, its two branches taken on the host copy `ratio`."""
        if ratio == 0:
            return dt * self.ifactor
        dfactor = torch.ones((), dtype=dt.dtype, device=dt.device) if ratio < 1 else self.dfactor
        exponent = torch.tensor(self.order, dtype=dt.dtype, device=dt.device).reciprocal()
        factor = torch.min(self.ifactor, torch.max(self.safety / error_ratio.type_as(dt) ** exponent, dfactor))
        return dt * factor


@lru_cache(maxsize=None)
def solver_class(name: str, tab: ButcherTableau) -> type:
    """The torchdiffeq loop's solver class for `tab`, stepped with one host read per step. The
    tableau's tests (is a node 1, is the last stage the solution: "first same as last") are made
    once here, on the host."""
    base = torchdiffeq_loop.stepper(name)
    return type(f"OneReadPerStep_{name}", (OneReadPerStep, base), {
        "_alpha_is_one": [c == 1.0 for c in tab.c[1:]],
        "_fsal": tab.b[-1] == 0 and tuple(tab.b[:-1]) == tuple(tab.a[-1])})
