"""odex.odeint: adjoint and seminorm gradients agree with direct backprop in float64, and the
pieces around the solve (NFE counting, solver errors, gradient methods by name)."""
import math

import pytest
import torch
from torch import nn

from conftest import PLUGINS
from odex import odeint
from odex.config import check_composed
from odex.errors import ConfigError, SolverError
from odex.ode.grad import gradient_method, names
from odex.ode.nfe import CountedField
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver


class MLP(nn.Module):
    def __init__(self, dim=3, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


def grads(grad, func, y0, t, **kw):
    func.zero_grad()
    y0 = y0.clone().requires_grad_(True)
    ys = odeint(func, y0, t, grad=grad, method="dopri5", rtol=1e-10, atol=1e-10, **kw)
    # a loss on the whole trajectory: every output time contributes
    loss = sum(((ys[i] ** 2).sum() * (i + 1)) for i in range(len(t)))
    loss.backward()
    return [y0.grad] + [p.grad.clone() for p in func.parameters()]


@pytest.mark.parametrize("grad", ["adjoint", "seminorm"])
def test_adjoint_gradients_match_direct_float64(grad):
    torch.manual_seed(0)
    func = MLP().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=torch.float64)
    ref = grads("direct", func, y0, t)
    got = grads(grad, func, y0, t)
    for r, g in zip(ref, got):
        assert torch.allclose(g, r, rtol=1e-6, atol=1e-9), (g - r).abs().max()


def test_adjoint_wrong_tolerance_is_detectably_different():
    """The comparison above can fail: a loose backward tolerance gives visibly different gradients."""
    torch.manual_seed(0)
    func = MLP().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    ref = grads("direct", func, y0, t)
    got = grads("adjoint", func, y0, t, grad_options={"rtol": 1e-1, "atol": 1e-1})
    assert any(not torch.allclose(g, r, rtol=1e-6, atol=1e-9) for r, g in zip(ref, got))


def test_exponential_closed_form():
    """z' = a z: z(T) = z0 e^{aT}; with L = z(T)^2, dL/da = 2 T z0^2 e^{2aT}, dL/dz0 = 2 z0 e^{2aT}."""
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(0.2, dtype=torch.float64))

        def forward(self, t, z):
            return self.a * z

    for grad in names([PLUGINS]):        # conf/grad/'s and tests/plugins/grad/'s
        method = gradient_method(grad, folders=[PLUGINS])
        if not method.supports.adaptive_solvers:
            continue  # fixed-step only (anode): covered by its own tests
        f = Linear()
        z0 = torch.tensor([10.0], dtype=torch.float64, requires_grad=True)
        T = 1.5
        zT = odeint(f, z0, torch.tensor([0.0, T], dtype=torch.float64), grad=method,
                    rtol=1e-11, atol=1e-11)[-1]
        (zT ** 2).sum().backward()
        e = math.exp(2 * 0.2 * T)
        assert abs(f.a.grad.item() - 2 * T * 100 * e) < 1e-5 * 2 * T * 100 * e, grad
        assert abs(z0.grad.item() - 2 * 10 * e) < 1e-6 * 20 * e, grad


def test_unknown_gradient_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown gradient method"):
        odeint(MLP(), torch.zeros(1, 3), torch.tensor([0.0, 1.0]), grad="nope")


def test_nfe_counted_forward_and_backward():
    torch.manual_seed(0)
    solver = Solver(method="rk4", step_size=0.25)   # 4 steps x 4 stages = 16 evaluations
    for grad, backward_expected in (("direct", 0), ("adjoint", 16)):
        block = ODEBlock(MLP(), solver, grad)
        out = block(torch.randn(2, 3))
        assert int(block.field.nfe_forward) == 16
        out.sum().backward()
        assert int(block.field.nfe_backward) == backward_expected, grad


def test_dopri5_nfe_is_2_plus_6_per_step():
    block = ODEBlock(MLP(), Solver(method="dopri5"), "direct")
    block(torch.randn(2, 3))
    n = int(block.field.nfe_forward)
    assert n >= 8 and (n - 2) % 6 == 0


def test_solver_failure_is_a_clear_error():
    class Blowup(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, t, y):
            return self.w * y ** 3     # finite-time blow-up at t = 1/(2 y0^2)

    block = ODEBlock(Blowup(), Solver(method="dopri5", max_num_steps=50), "direct")
    with pytest.raises(SolverError, match="solver gave up"):
        block(torch.full((1, 1), 3.0))


def test_solver_config_errors():
    with pytest.raises(ConfigError):        # refused before the run (odex/schema.py Solver)
        check_composed("train", ["solver.method=rk45"])
    with pytest.raises(ConfigError):
        check_composed("train", ["solver=rk4", "solver.step_size=null", "solver.steps=null"])
    assert Solver(method="rk4", steps=4, t1=2.0).h == 0.5
    assert isinstance(CountedField(MLP()), nn.Module)
