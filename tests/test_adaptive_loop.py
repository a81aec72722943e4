"""solver.loop=odex with an adaptive solver (odex/ode/loops/adaptive.py): torchdiffeq's adaptive solvers with one host
read per step. The same steps (accepted and rejected), NFE, solutions and gradients as torchdiffeq
for every adaptive solver and gradient method; one host read per attempted step where torchdiffeq
makes about nine (counted on the CPU with a TorchFunctionMode: on a GPU each is a sync); failed
solves fail as torchdiffeq's do."""
from __future__ import annotations

import copy

import pytest
import torch
import torchdiffeq
from torch import nn

from odex import odeint
from odex.errors import SolverError
from odex.ode.loops import integrate
from odex.ode.loops.host_reads import HostReads
from odex.ode.tableau import ADAPTIVE_NAMES
from odex.models.layers import ConvField
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver

from conftest import TINY, read_metrics, train_in_process


class StiffField(nn.Module):
    """A conv field whose time scale changes along the solve, so the step size must shrink and
    some steps are rejected; counts torchdiffeq's accepted and rejected steps (its callbacks)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = ConvField(3, 6, act="softplus")
        self.nfe = self.accepted = self.rejected = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.conv(t, y) * (1 + 100 * torch.sin(10 * t) ** 2)

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


def solve_and_grads(method, loop, field, y0, t, tol, grad="direct"):
    field.zero_grad()
    field.nfe = 0
    y0 = y0.clone().requires_grad_(True)
    out = odeint(field, y0, t, grad=grad, method=method, loop=loop, rtol=tol, atol=tol)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), field.nfe, [y0.grad] + [p.grad.clone() for p in field.parameters()]


@pytest.mark.parametrize("method", sorted(ADAPTIVE_NAMES))
def test_every_adaptive_solver_takes_torchdiffeqs_steps_with_one_read_per_step(method):
    field = StiffField().double()
    y0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)      # several output times: interpolation
    tol = 1e-3 if method == "adaptive_heun" else 1e-5            # (second order: thousands of steps)
    ref_out, ref_nfe, ref_grads = solve_and_grads(method, "torchdiffeq", field, y0, t, tol)
    attempts = field.accepted + field.rejected
    assert field.rejected > 0, "no rejected step: the comparison would not cover the reject branch"
    out, nfe, grads = solve_and_grads(method, "odex", field, y0, t, tol)
    assert nfe == ref_nfe
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-14)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)

    # host reads: torchdiffeq's grow by several per attempted step, odex's by exactly one
    def reads(loop, tol):
        field.accepted = field.rejected = 0
        with HostReads() as counter, torch.no_grad():
            integrate(field, y0, t, method=method, loop=loop, rtol=tol, atol=tol)
        return counter.n, field.accepted + field.rejected
    loose, n_loose = reads("torchdiffeq", tol * 100)
    tight, n_tight = reads("torchdiffeq", tol)
    assert n_tight > n_loose and (tight - loose) / (n_tight - n_loose) >= 5
    ours_loose, ours_tight = reads("odex", tol * 100)[0], reads("odex", tol)[0]
    assert ours_tight - ours_loose == n_tight - n_loose
    assert ours_loose < 15 + n_loose and attempts > 0


@pytest.mark.parametrize("grad", ["adjoint", "seminorm", "gq"])
def test_gradient_methods_with_a_backward_solve_take_it_too(grad):
    torch.manual_seed(0)
    solver = Solver(method="dopri5", rtol=1e-7, atol=1e-7)
    ref = ODEBlock(ConvField(3, 6, act="softplus"), solver, grad).double()
    fast = copy.deepcopy(ref)
    fast.solver = Solver(method="dopri5", rtol=1e-7, atol=1e-7, loop="odex")
    y0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    results = []
    for block in (ref, fast):
        block.zero_grad()
        block.field.reset()
        x = y0.clone().requires_grad_(True)
        out = block(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), int(block.field.nfe_forward), int(block.field.nfe_backward),
                        [x.grad] + [p.grad for p in block.parameters()]))
    (o_r, f_r, b_r, g_r), (o_f, f_f, b_f, g_f) = results
    assert (f_f, b_f) == (f_r, b_r) and b_r > 0
    torch.testing.assert_close(o_f, o_r, rtol=1e-12, atol=1e-14)
    for a, b in zip(g_f, g_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_failed_solves_fail_as_torchdiffeqs_do():
    class Blowup(nn.Module):
        def forward(self, t, y):
            return y * float("inf")

    y0, t = torch.ones(3), torch.tensor([0.0, 1.0])
    for loop in ("torchdiffeq", "odex"):
        with pytest.raises(SolverError, match="underflow"):
            odeint(Blowup(), y0, t, method="dopri5", loop=loop)
        with pytest.raises(SolverError, match="max_num_steps"):
            odeint(StiffField(), torch.randn(1, 3, 4, 4), t, method="dopri5", loop=loop, rtol=1e-9, atol=1e-9,
                   options={"max_num_steps": 3})
    with pytest.raises(ValueError, match="step_t"):
        integrate(Blowup(), y0, t, method="dopri5", loop="odex", options={"step_t": [0.5]})


def test_training_with_the_one_read_loop_is_the_same_run(tmp_path):
    base = [*TINY, "trainer.max_epochs=1"]
    assert train_in_process(tmp_path / "a", base)["status"] == "completed"
    assert train_in_process(tmp_path / "b", [*base, "solver.loop=odex"])["status"] == "completed"
    a, b = read_metrics(tmp_path / "a")[-1], read_metrics(tmp_path / "b")[-1]
    for key in ("train/loss", "test/acc", "nfe/forward", "nfe/backward"):
        assert a[key] == b[key], key
    summary = train_in_process(tmp_path / "c", [*base, "solver.loop=fast"])
    assert "solver.loop=fast: must be one of torchdiffeq, odex" in summary["status"]


@pytest.mark.gpu
def test_on_cuda_one_sync_per_attempted_step():
    """The counts above are syncs on a GPU: torch's sync debugging agrees."""
    import warnings

    field = StiffField().cuda()
    y0 = torch.randn(2, 3, 4, 4, device="cuda")
    t = torch.tensor([0.0, 1.0], device="cuda")

    def syncs(loop):
        field.accepted = field.rejected = 0
        with warnings.catch_warnings(record=True) as seen, torch.no_grad():
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                integrate(field, y0, t, method="dopri5", loop=loop, rtol=1e-5, atol=1e-5)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in seen), field.accepted + field.rejected
    theirs, attempts = syncs("torchdiffeq")
    ours, _ = syncs("odex")
    assert attempts > 5 and theirs >= 5 * attempts
    assert ours <= attempts + 12
