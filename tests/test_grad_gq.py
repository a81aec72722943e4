"""grad=gq (Gauss–Legendre quadrature adjoint) and the continuous adjoints against direct
backpropagation in float64, the quadrature's exactness, closed forms, NFE accounting, config
errors, and odex-train runs."""
from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
from torch import nn

from conftest import read_summary, run_cli, train_in_process
from odex.config import check_composed
from odex.errors import ConfigError
from odex.ode.grad.gq import GaussLegendreAdjoint, gauss_legendre, node_count
from odex.models.layers import MLPField
from odex.ode.nfe import CountedField
from odex.ode.block import ODEBlock
from odex.ode.odeint import odeint
from odex.ode.solver import Solver

TIGHT = dict(method="dopri5", rtol=1e-12, atol=1e-12)
# one batch of digits, one epoch, a narrow model: enough to show a run completes and logs NFE
ONE_BATCH = ["dataset.limit_train=64", "dataset.limit_test=64", "trainer.max_epochs=1",
             "trainer.progress=false"]


def mlp_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    field = MLPField(3, 12, act="tanh").double()
    y0 = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=torch.float64, requires_grad=True)
    return field, y0, t


def loss_on_trajectory(ys):
    # every output time contributes, so a wrong jump of a at t_i shows
    weights = torch.arange(1, len(ys) + 1, dtype=ys.dtype).view(-1, 1, 1)
    return (weights * ys.square()).sum() + ys[-1].sin().sum()


def gradients(field, y0, t, grad, **kw):
    for x in (y0, t, *field.parameters()):
        x.grad = None
    loss_on_trajectory(odeint(field, y0, t, grad=grad, **kw)).backward()
    return {"y0": y0.grad.clone(), "t": t.grad.clone(),
            **{n: p.grad.clone() for n, p in field.named_parameters()}}


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("grad", ["gq", "adjoint", "seminorm"])
def test_matches_direct_in_float64(grad):
    field, y0, t = mlp_problem()
    ref = gradients(field, y0, t, "direct", **TIGHT)
    out = gradients(field, y0, t, grad, **TIGHT)
    errors = {k: rel(out[k], ref[k]) for k in ref}
    assert max(errors.values()) < 1e-6, errors
    # and it is not trivially equal: a looser backward tolerance moves the answer
    if grad == "gq":
        loose = gradients(field, y0, t, grad, grad_options={"rtol": 1e-3, "atol": 1e-3}, **TIGHT)
        assert max(rel(loose[k], ref[k]) for k in ref) > 1e-8


def test_unused_parameter_gets_no_gradient():
    field, y0, t = mlp_problem()
    field.unused = nn.Linear(2, 2).double()
    odeint(field, y0, t, grad="gq", **TIGHT).sum().backward()
    assert field.unused.weight.grad is None or not field.unused.weight.grad.any()
    assert field.fc1.weight.grad.abs().sum() > 0


class Polynomial(nn.Module):
    """dz/dt = theta * t^d: with L = z(T), a(t) = 1 and dL/dtheta = int_0^T t^d dt."""

    def __init__(self, degree):
        super().__init__()
        self.degree = degree
        self.theta = nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, t, z):
        return self.theta * t ** self.degree * torch.ones_like(z)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_quadrature_exact_up_to_degree_2n_minus_1(n):
    T = 1.7
    gq = GaussLegendreAdjoint(c=1e3, max_nodes=n)     # exactly n nodes on the one interval
    t = torch.tensor([0.0, T], dtype=torch.float64)
    for degree in range(2 * n + 1):
        field = Polynomial(degree)
        z0 = torch.zeros(1, dtype=torch.float64)
        # a = 1 and df/dtheta = t^d are exact at any node, whatever the solve's accuracy
        odeint(field, z0, t, grad=gq, method="dopri5", rtol=1e-4, atol=1e-4)[-1].sum().backward()
        exact = T ** (degree + 1) / (degree + 1)
        err = abs(field.theta.grad.item() - exact) / exact
        if degree <= 2 * n - 1:
            assert err < 1e-12, (n, degree, err)
        else:   # degree 2n: the rule's first inexact degree
            assert err > 1e-6, (n, degree, err)


def test_gauss_legendre_rule_on_an_interval():
    t0, t1 = torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    nodes, weights = gauss_legendre(3, t0, t1)
    assert torch.all(nodes[:-1] > nodes[1:]) and nodes.min() > t0 and nodes.max() < t1
    assert torch.isclose(weights.sum(), t1 - t0)
    assert torch.isclose((weights * nodes ** 5).sum(), (t1 ** 6 - t0 ** 6) / 6)


def test_node_count():
    assert node_count(0.1, 20, 1.0, 64) == 2            # the paper's fNFE 20 -> bNFE 22
    assert node_count(0.1, 30, 1.0, 64) == 3            # not ceil(3.0000000000000004) = 4
    assert node_count(0.1, 26, 0.5, 64) == 2
    assert node_count(0.1, 3, 0.1, 64) == 1
    assert node_count(10.0, 50, 1.0, 64) == 64


class Exponential(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t, z):
        return self.a * z


@pytest.mark.parametrize("grad", ["gq", "adjoint"])
def test_toy_closed_forms(grad):
    """z' = a z, z0 = 10, a = 0.2, L = z(T)^2 (the GQ paper's toy): dL/da = 2T z0^2 e^{2aT},
    dL/dz0 = 2 z0 e^{2aT}, dL/dT = 2a z0^2 e^{2aT} = -dL/dt0."""
    a, z0v, T = 0.2, 10.0, 3.0
    field = Exponential(a)
    z0 = torch.tensor([z0v], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, T], dtype=torch.float64, requires_grad=True)
    (odeint(field, z0, t, grad=grad, **TIGHT)[-1] ** 2).sum().backward()
    e = math.exp(2 * a * T)
    assert field.a.grad.item() == pytest.approx(2 * T * z0v ** 2 * e, rel=1e-8)
    assert z0.grad.item() == pytest.approx(2 * z0v * e, rel=1e-8)
    assert t.grad[1].item() == pytest.approx(2 * a * z0v ** 2 * e, rel=1e-8)
    assert t.grad[0].item() == pytest.approx(-2 * a * z0v ** 2 * e, rel=1e-8)


def independent_backward_stages(field, ys, grad_ys, t, rtol, atol):
    """Stages of the backward [z, a] solves, counted with torchdiffeq's own tuple-state solve (its
    default tuple norm is max(rms z, rms a)) and the same interval restarts: not GQ's code."""
    calls = 0

    def dynamics(tt, state):
        nonlocal calls
        calls += 1
        z, a = state
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            f = field(tt, z)
            (vjp,) = torch.autograd.grad(f, z, a)
        return f.detach(), -vjp

    with torch.no_grad():
        a = grad_ys[-1]
        for i in range(len(t) - 1, 0, -1):
            _, a_seq = torchdiffeq.odeint(dynamics, (ys[i], a), t[i - 1:i + 1].flip(0),
                                          method="dopri5", rtol=rtol, atol=atol)
            a = a_seq[-1] + grad_ys[i - 1]
    return calls


def test_backward_nfe_is_stages_plus_nodes():
    field, y0, t = mlp_problem()
    t = t.detach()                          # no time gradient: no extra evaluations
    counted = CountedField(field)
    rtol = atol = 1e-7
    ys = odeint(counted, y0, t, grad=GaussLegendreAdjoint(c=0.5), method="dopri5", rtol=rtol, atol=atol)
    counted.backward_phase = True
    ys.retain_grad()
    loss_on_trajectory(ys).backward()
    nfe_fwd, nfe_bwd = int(counted.nfe_forward), int(counted.nfe_backward)
    th = t.tolist()
    nodes = sum(node_count(0.5, nfe_fwd, (th[i] - th[i - 1]) / (th[-1] - th[0]), 64)
                for i in range(1, len(th)))
    stages = independent_backward_stages(field, ys.detach(), ys.grad, t, rtol, atol)
    assert nodes >= 3 and stages > 0
    assert nfe_bwd == stages + nodes, (nfe_bwd, stages, nodes)


def test_gq_with_a_fixed_step_solver():
    """rk4: nodes read from the cubic Hermite interpolant (one more [z, a] evaluation per node and
    per interval end), so the gradient is as accurate as the adjoint's on the same steps."""
    field, y0, t = mlp_problem()
    ref = gradients(field, y0, t, "direct", **TIGHT)
    out = gradients(field, y0, t, "gq", method="rk4", options={"step_size": 0.05})
    assert max(rel(out[k], ref[k]) for k in ref) < 1e-6
    block = ODEBlock(field, Solver(method="rk4", steps=8), GaussLegendreAdjoint())
    block(y0.detach()).sum().backward()
    n = node_count(0.1, 32, 1.0, 64)
    assert (int(block.field.nfe_forward), int(block.field.nfe_backward)) == (32, 32 + (n + 1) + n)


def test_gq_refuses_train_mode_batchnorm():
    gq = GaussLegendreAdjoint()

    class BNField(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.bn = nn.Linear(2, 2), nn.BatchNorm1d(2)

        def forward(self, t, z):
            return self.bn(self.lin(z))

    with pytest.raises(ConfigError, match="BatchNorm"):
        ODEBlock(BNField(), Solver(), gq)
    field = BNField()
    with pytest.raises(ConfigError, match="BatchNorm"):
        odeint(field, torch.zeros(3, 2), torch.tensor([0.0, 1.0]), grad="gq")
    odeint(field.eval(), torch.zeros(3, 2), torch.tensor([0.0, 1.0]), grad="gq")   # eval mode is fine
    with pytest.raises(ConfigError, match="grad.c"):       # refused before the run (odex/schema.py)
        check_composed("train", ["grad=gq", "grad.c=0"])


def test_odex_train_gq_one_epoch(tmp_path):
    summary = train_in_process(tmp_path, [*ONE_BATCH, "model.channels=8", "model.hidden=16", "grad=gq"])
    assert summary["status"] == "completed", summary["status"]
    assert summary["nfe/backward"] > summary["nfe/forward"] * 0.5 > 0


def test_odex_train_gq_image_model(tmp_path):
    summary = train_in_process(tmp_path, [*ONE_BATCH, "model=gq_image", "model.width=8", "grad=gq"])
    assert summary["status"] == "completed", summary["status"]
    assert summary["nfe/backward"] > 0


@pytest.mark.slow
def test_cli_gq_and_anode(tmp_path):
    """The real command line, one sweep: gq with dopri5 and rk4 and anode with rk4 complete; anode
    with dopri5 fails with a one-line reason while the sweep goes on."""
    proc = run_cli(tmp_path, *ONE_BATCH, "model.channels=4", "model.hidden=8", "logger=none",
                   "grad=gq,anode", "solver=dopri5,rk4", "++solver.steps=4", multirun=True)
    assert proc.returncode == 1, proc.stderr[-2000:]      # one job failed: the sweep's exit status says so
    status = {}
    for job in sorted((tmp_path / "multirun").glob("[0-9]*")):
        s = read_summary(job)
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        key = ("gq" if "grad=gq" in overrides else "anode", "rk4" if "solver=rk4" in overrides else "dopri5")
        status[key] = s
    assert status[("gq", "dopri5")]["status"] == "completed"
    assert status[("gq", "dopri5")]["nfe/backward"] > 0
    assert status[("anode", "rk4")]["status"] == "completed"
    assert status[("anode", "rk4")]["nfe/backward"] == status[("anode", "rk4")]["nfe/forward"]
    assert status[("gq", "rk4")]["status"] == "completed"
    assert status[("gq", "rk4")]["nfe/backward"] > status[("gq", "rk4")]["nfe/forward"] == 16
    assert "fixed-step" in status[("anode", "dopri5")]["status"]


@pytest.mark.gpu
@pytest.mark.parametrize("grad", ["gq", "anode"])
def test_on_cuda_matches_direct(grad):
    torch.manual_seed(0)
    field = MLPField(3, 12, act="tanh").double().cuda()
    y0 = torch.randn(4, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=torch.float64, device="cuda", requires_grad=True)
    kw = TIGHT if grad == "gq" else dict(method="rk4", options={"step_size": 0.1})
    ref = gradients(field, y0, t, "direct", **kw)
    out = gradients(field, y0, t, grad, **kw)
    assert all(v.is_cuda for v in out.values())
    assert max(rel(out[k], ref[k]) for k in ref) < (1e-6 if grad == "gq" else 1e-10)
