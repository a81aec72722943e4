"""solver.loop (odex/ode/loops/): odex's loop gives torchdiffeq's loop's outputs, gradients and NFE
for every gradient method (conf/grad/'s and the one of tests/plugins/, outside odex), with a
fixed-step and an adaptive solver, in float64; odex's adjoint is torchdiffeq's `odeint_adjoint`
step for step; the torchdiffeq loop is torchdiffeq.odeint bit for bit; a Runge-Kutta method
defined here as a tableau alone (solver.method=test_loops.HEUN3) runs on odex's loop to its order of accuracy (torchdiffeq's loop
refuses it in one line); a block's solve on odex's fixed grid reads nothing back to the host."""
from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
from torch import nn

from odex import odeint
from odex.errors import ConfigError
from odex.ode.block import ODEBlock
from conftest import PLUGINS
from odex.ode.grad import gradient_method, names
from odex.ode.loops import LOOPS, integrate
from odex.ode.loops.host_reads import HostReads
from odex.ode.solver import Solver
from odex.ode.tableau import ButcherTableau

# Heun's third-order method (Heun 1900; Hairer-Norsett-Wanner I, Table 1.1), defined only here.
# Named by its path, as a user's own tableau is: solver.method=test_loops.HEUN3.
HEUN3 = ButcherTableau(c=(0.0, 1 / 3, 2 / 3), a=((), (1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75), order=3)
HEUN3_PATH = f"{__name__}.HEUN3"


class MLP(nn.Module):
    """A small time-dependent field that counts its calls."""

    def __init__(self, dim=3, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


SOLVERS = {"rk4": {"step_size": 0.1}, "midpoint": {"step_size": 0.25}, "dopri5": {}, "bosh3": {}}


def solve(func, y0, t, grad, method, loop, **kw):
    """Outputs, gradients (y0, t, parameters) and (forward, backward) calls of one solve + backward."""
    func.zero_grad()
    func.calls = 0
    y0 = y0.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    ys = odeint(func, y0, t, grad=gradient_method(grad, folders=[PLUGINS]), method=method, loop=loop, rtol=1e-7, atol=1e-7,
                options=dict(SOLVERS[method]), **kw)
    forward = func.calls
    loss = sum((ys[i] * torch.linspace(-1, 1, ys[i].numel(), dtype=ys.dtype).view_as(ys[i])).sum() * (i + 1)
               for i in range(len(t)))
    loss.backward()
    grads = [y0.grad, t.grad] + [p.grad.clone() for p in func.parameters()]
    return ys.detach(), grads, (forward, func.calls - forward)


def cases():
    """(gradient method, solver) pairs the method supports, every method of conf/grad/ and tests/plugins/."""
    out = []
    for grad in names([PLUGINS]):
        for method in SOLVERS:
            if Solver(method=method, steps=4).adaptive and not gradient_method(grad, folders=[PLUGINS]).supports.adaptive_solvers:
                continue
            out.append((grad, method))
    return out


@pytest.mark.parametrize("grad, method", cases())
def test_odex_loop_gives_torchdiffeqs_outputs_gradients_and_nfe(grad, method):
    torch.manual_seed(0)
    func = MLP().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)     # two intervals: outputs inside a solve
    ref = solve(func, y0, t, grad, method, "torchdiffeq")
    ours = solve(func, y0, t, grad, method, "odex")
    assert ours[2] == ref[2] and ref[2][0] > 0                # the same evaluations, forward and backward
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(ours[1], ref[1]):
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grad", ["adjoint", "seminorm"])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("loop", list(LOOPS))
def test_odex_adjoint_is_torchdiffeqs_odeint_adjoint(grad, method, loop):
    """The reference is the real library: same backward steps (NFE), same gradients."""
    torch.manual_seed(1)
    func = MLP().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    ours = solve(func, y0, t, grad, method, loop)

    func.zero_grad()
    func.calls = 0
    y0_ = y0.clone().requires_grad_(True)
    t_ = t.clone().requires_grad_(True)
    ys = torchdiffeq.odeint_adjoint(func, y0_, t_, method=method, rtol=1e-7, atol=1e-7, options=dict(SOLVERS[method]),
                                    adjoint_options={**SOLVERS[method], **({"norm": "seminorm"} if grad == "seminorm" else {})})
    forward = func.calls
    loss = sum((ys[i] * torch.linspace(-1, 1, ys[i].numel(), dtype=ys.dtype).view_as(ys[i])).sum() * (i + 1)
               for i in range(len(t)))
    loss.backward()
    assert ours[2] == (forward, func.calls - forward)
    for a, b in zip(ours[1], [y0_.grad, t_.grad] + [p.grad for p in func.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_adjoints_take_tuple_states_on_both_loops():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([[-0.5, 0.3], [0.2, -0.1]], dtype=torch.float64))

        def forward(self, t, state):
            x, q = state
            return x @ self.w, (x ** 2).sum(1, keepdim=True)

    func = Pair()
    x0, q0 = torch.randn(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    results = []
    for grad in ("direct", "adjoint"):
        for loop in LOOPS:
            func.zero_grad()
            xs, qs = odeint(func, (x0, q0), t, grad=grad, loop=loop, method="dopri5", rtol=1e-10, atol=1e-10)
            (xs[-1].sum() + qs[-1].sum()).backward()
            results.append(func.w.grad.clone())
    for g in results[1:]:
        torch.testing.assert_close(g, results[0], rtol=1e-7, atol=1e-9)


def order_of_accuracy(method: str, loop: str) -> tuple[float, float]:
    """Observed order from the error at T=1 of y' = lambda y (closed form e^{lambda t}) for 16 and 32
    steps, and the error with 32 steps."""
    lam = torch.tensor([-1.0, 0.5, -2.0], dtype=torch.float64)

    class Linear(nn.Module):
        def forward(self, t, y):
            return lam * y

    y0 = torch.ones(3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    errors = []
    for n in (16, 32):
        y1 = integrate(Linear(), y0, t, method=method, loop=loop, options={"step_size": 1 / n})[-1]
        errors.append(float((y1 - torch.exp(lam)).abs().max()))
    return math.log2(errors[0] / errors[1]), errors[1]


def test_a_tableau_defined_in_a_test_solves_to_its_order_on_the_odex_loop():
    order, error = order_of_accuracy(HEUN3_PATH, "odex")
    assert abs(order - 3) < 0.15, order
    assert error < 1e-4
    # against an independent implementation: torchdiffeq's own hand-written Heun3 step
    lam = -0.7

    class Linear(nn.Module):
        def forward(self, t, y):
            return lam * y * (1 + t)

    y0, t = torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 0.35, 1.0], dtype=torch.float64)
    ours = integrate(Linear(), y0, t, method=HEUN3_PATH, loop="odex", options={"step_size": 0.1})
    theirs = torchdiffeq.odeint(Linear(), y0, t, method="heun3", options={"step_size": 0.1})
    torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=1e-14)
    # torchdiffeq's loop steps only torchdiffeq's methods: one line, naming the loop that can
    with pytest.raises(ConfigError, match="solver.method=test_loops.HEUN3: solver.loop=torchdiffeq steps only "
                                          "torchdiffeq's own methods .*; use solver.loop=odex$"):
        integrate(Linear(), y0, t, method=HEUN3_PATH, loop="torchdiffeq", options={"step_size": 0.1})


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("heun3", 3), ("rk4", 4)])
def test_built_in_fixed_tableaux_have_their_order_on_the_odex_loop(method, order):
    observed, _ = order_of_accuracy(method, "odex")
    assert abs(observed - order) < 0.2, observed


def test_a_block_on_the_odex_fixed_grid_reads_nothing_back():
    torch.manual_seed(0)
    block = ODEBlock(MLP(), Solver(method="rk4", steps=4, loop="odex", max_num_steps=None), "direct")
    y0 = torch.randn(5, 3)
    block(y0)      # the grid is worked out once per interval and step size, on CPU tensors (cached)
    with HostReads() as reads:
        out = block(y0)
        out.sum().backward()
    assert reads.n == 0
    ref = ODEBlock(block.field.field, Solver(method="rk4", steps=4, max_num_steps=None), "direct")
    torch.testing.assert_close(out, ref(y0), rtol=1e-6, atol=1e-7)
    with HostReads() as reads:               # torchdiffeq's loop does read (the test can see reads)
        ref(y0)
    assert reads.n > 4


def test_a_loop_that_cannot_step_a_method_is_one_line():
    """A Solver is data; the block asks the loop when it is built."""
    with pytest.raises(ConfigError, match="solver.method=explicit_adams: solver.loop=odex steps"):
        ODEBlock(MLP(), Solver(method="explicit_adams", steps=4, loop="odex"))
    with pytest.raises(ConfigError, match="solver.loop=fast: must be one of torchdiffeq, odex"):
        ODEBlock(MLP(), Solver(method="rk4", steps=4, loop="fast"))
    with pytest.raises(ConfigError, match="solver.method=test_loops.HEUN3: solver.loop=torchdiffeq steps only"):
        ODEBlock(MLP(), Solver(method=HEUN3_PATH, steps=4))
    assert gradient_method("direct").supports.backprop


@pytest.mark.parametrize("method, options", [("dopri5", {}), ("rk4", {"step_size": 0.1})])
def test_the_torchdiffeq_loop_is_torchdiffeqs_odeint_bit_for_bit(method, options):
    """loop=torchdiffeq is torchdiffeq.odeint (its public API): the same bits, forward and gradients,
    for a tensor state on increasing times and a tuple state on decreasing ones."""
    torch.manual_seed(2)
    func = MLP().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    pair = lambda t, s: (func(t, s[0]), -s[1])          # noqa: E731
    cases = [(func, y0, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)),
             (pair, (y0, y0[:, :1]), torch.tensor([1.0, 0.2], dtype=torch.float64))]
    for f, state, t in cases:
        results = []
        for solve in (lambda s: odeint(f, s, t, method=method, rtol=1e-6, atol=1e-6, options=options),
                      lambda s: torchdiffeq.odeint(f, s, t, method=method, rtol=1e-6, atol=1e-6, options=options)):
            func.zero_grad()
            s = tuple(x.clone().requires_grad_(True) for x in state) if isinstance(state, tuple) \
                else state.clone().requires_grad_(True)
            ys = solve(s)
            ys = ys if isinstance(ys, tuple) else (ys,)
            sum(((y * y).sum() for y in ys)).backward()
            results.append([*ys, *(x.grad for x in (s if isinstance(s, tuple) else (s,))),
                            *(p.grad for p in func.parameters())])
        for a, b in zip(*results):
            assert torch.equal(a, b)


@pytest.mark.parametrize("method, options", [("dopri5", {}), ("bosh3", {}), ("rk4", {"step_size": 0.1}),
                                             ("midpoint", {"step_size": 0.25, "perturb": True})])
def test_odex_input_handling_tuple_states_and_decreasing_times(method, options):
    """odex's loop on the inputs torchdiffeq's odeint normalises (a tuple state, times that
    decrease, a tuple of tolerances, the time perturbations): torchdiffeq's values and NFE."""
    torch.manual_seed(3)
    func = MLP().double()

    def pair(t, s):
        func.calls += 1
        return func.net(torch.cat([s[0], t.expand(4, 1)], 1)) * (1 + (t >= 0.5)), s[1] * s[0][:, :1]

    y0 = (torch.randn(4, 3, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64))
    t = torch.tensor([1.0, 0.6, 0.5, -0.2], dtype=torch.float64)
    results = []
    for loop in ("torchdiffeq", "odex"):
        func.calls = 0
        ys = integrate(pair, y0, t, method=method, loop=loop, rtol=(1e-7, 1e-6), atol=1e-7, options=options)
        results.append((func.calls, ys))
    (n_ref, ref), (n, ours) = results
    assert n == n_ref > 0
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
