"""LyaNet: the Lyapunov objectives against hand computations and quadrature, gradients through the
adjoint against direct backprop (float64), the model's dynamics, and one-epoch runs."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY, read_metrics, read_summary, run_cli, train_in_process
from odex.data import DataInfo
from odex.errors import ConfigError
from odex.objectives.lyapunov import (InferenceDynamics, LogitDynamics, LyapunovMC, LyapunovParts, LyapunovPath,
                           solve_with_violation)
from odex.models.augmented import AugmentedNODE
from odex.models.lyanet import GainUpdate, LyaNet
from odex.ode.nfe import total_nfe
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver

K = 4


def hand_violation(h, y, f, kappa):
    """relu(grad V . f + kappa V) for V = CE(h, y), grad V = softmax(h) - onehot(y): written out."""
    v = torch.logsumexp(h, -1) - h.gather(-1, y[..., None])[..., 0]
    grad = h.softmax(-1) - F.one_hot(y, h.shape[-1]).to(h.dtype)
    return torch.relu((grad * f).sum(-1) + kappa * v)


class LogitModel(nn.Module):
    """A model whose state is the logits, with a given field f(h; x); records the states the
    objective evaluated it at."""

    def __init__(self, field):
        super().__init__()
        self.field_fn = field
        self.seen = []

    def logit_dynamics(self, x):
        def field(t, h):
            self.seen.append(h.detach().clone())
            return self.field_fn(h, x)
        return LogitDynamics(field, K, 1.0, 5.0)


def test_mc_equals_hand_computation_for_a_linear_field():
    torch.manual_seed(0)
    a = torch.randn(K, K, dtype=torch.float64, requires_grad=True)
    model = LogitModel(lambda h, x: h @ a.T + x[:, None, :])          # f(h; x) = A h + x
    x, y = torch.randn(3, K, dtype=torch.float64), torch.tensor([0, 3, 1])
    step = LyapunovMC(kappa=0.7, samples=50)(model, x, y)
    (h,) = model.seen
    assert h.shape == (3, 50, K) and torch.equal(h[0], h[2])           # samples shared by the batch
    assert h.norm(dim=-1).max() <= 5.0                                  # inside the model's ball
    expected = hand_violation(h, y[:, None].expand(3, 50), h @ a.T.detach() + x[:, None, :], 0.7)
    torch.testing.assert_close(step.loss, expected.mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(step.stats["lyapunov/violation_rate"], (expected > 0).float().mean())
    assert 0 < step.stats["lyapunov/violation_rate"] < 1
    # the gradient through the JVP: against the hand formula's (V detached in kappa V, as LyaNet)
    (g,) = torch.autograd.grad(step.loss, a)
    a2 = a.detach().clone().requires_grad_()
    y2 = y[:, None].expand(3, 50)
    hv = torch.relu(((h.softmax(-1) - F.one_hot(y2, K)) * (h @ a2.T + x[:, None, :])).sum(-1)
                    + 0.7 * (torch.logsumexp(h, -1) - h.gather(-1, y2[..., None])[..., 0]))
    (g_hand,) = torch.autograd.grad(hv.mean(), a2)
    torch.testing.assert_close(g, g_hand, rtol=1e-12, atol=1e-14)


def test_mc_is_zero_for_dynamics_that_satisfy_the_condition_everywhere():
    kappa = 1.3

    def descent(rate):
        # f = -rate V grad V / |grad V|^2 gives dV/dt = -rate V; x carries the label as one-hot
        def f(h, x):
            y = x.argmax(-1)[:, None].expand(h.shape[:-1])
            v = torch.logsumexp(h, -1) - h.gather(-1, y[..., None])[..., 0]
            grad = h.softmax(-1) - F.one_hot(y, K).to(h.dtype)
            return -rate * v[..., None] * grad / grad.pow(2).sum(-1, keepdim=True)
        return f

    y = torch.tensor([0, 1, 2, 3, 1])
    x = F.one_hot(y, K).double()
    torch.manual_seed(1)
    fast = LyapunovMC(kappa=kappa, samples=200)(LogitModel(descent(2 * kappa)), x, y)
    assert fast.loss.item() == 0 and fast.stats["lyapunov/violation_rate"].item() == 0
    # too slow a descent violates it everywhere, by (kappa - rate) V
    slow = LyapunovMC(kappa=kappa, samples=200)(LogitModel(descent(0.5 * kappa)), x, y)
    assert slow.loss.item() > 0 and slow.stats["lyapunov/violation_rate"].item() == 1


def vector_info(dim=3, classes=K):
    return DataInfo("vectors", (dim,), classes, (0.0,) * dim, (1.0,) * dim)


def tiny_augmented(solver, grad="direct"):
    torch.manual_seed(0)
    return AugmentedNODE(vector_info(), solver, grad, hidden=8, augment_dim=1, activation="tanh").double()


def test_mc_refuses_a_model_whose_state_is_not_the_logits():
    model = tiny_augmented(Solver())
    with pytest.raises(ConfigError, match="lyanet_path"):
        LyapunovMC()(model, torch.randn(2, 3, dtype=torch.float64), torch.tensor([0, 1]))


def quadrature_of_violation(parts, y, kappa, n=400):
    """Simpson's rule over a dense solve of the trajectory, with dV/dt written out for a linear
    readout: (softmax(z) - onehot(y)) . (W f)."""
    t = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    field = parts.block.field.field
    traj = parts.block(parts.h0, t)
    states = traj if isinstance(traj, tuple) else (traj,)
    head = parts.readout.head if hasattr(parts.readout, "head") else None
    values = []
    for i in range(n + 1):
        s = tuple(x[i] for x in states)
        s = s[0] if len(s) == 1 else s
        f = field(t[i], s)
        if head is None:                          # LyaNet: the logits are the state's first part
            z, zdot = s[0], f[0]
        else:
            z, zdot = head(s.flatten(1)), f.flatten(1) @ head.weight.T
        v = F.cross_entropy(z, y, reduction="none")
        vdot = ((z.softmax(-1) - F.one_hot(y, z.shape[-1])) * zdot).sum(-1)
        values.append(torch.relu(vdot + kappa * v))
    v = torch.stack(values)
    w = torch.ones(n + 1, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return (w[:, None] * v).sum(0) / (3 * n)


def tiny_lyanet(solver, grad="direct", **kw):
    torch.manual_seed(0)
    info = DataInfo("img", (1, 8, 8), K, (0.5,), (0.25,))
    model = LyaNet(info, solver, grad, encoder="small", channels=4, hidden=6, dropout=0.0, **kw)
    return model.double().eval()


@pytest.mark.parametrize("which", ["augmented", "lyanet"])
def test_path_integral_agrees_with_quadrature(which):
    solver = Solver(method="dopri5", rtol=1e-10, atol=1e-10)
    if which == "augmented":
        model, x = tiny_augmented(solver), torch.randn(5, 3, dtype=torch.float64)
    else:
        model, x = tiny_lyanet(solver, gain=1.0), torch.rand(5, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    kappa = 1.5
    with torch.no_grad():
        parts = model.lyapunov_parts(x)
        _, q = solve_with_violation(parts, y, kappa)
        expected = quadrature_of_violation(parts, y, kappa)
    assert (expected > 0).all()
    torch.testing.assert_close(q[-1], expected, rtol=2e-5, atol=1e-8)
    step = LyapunovPath(kappa=kappa)(model, x, y)
    torch.testing.assert_close(step.loss.detach(), expected.mean(), rtol=2e-5, atol=1e-8)
    assert step.logits.shape == (5, K)


def test_path_integral_gradient_by_adjoint_matches_direct_backprop():
    # A smooth case (tanh field; kappa large enough that the relu never switches off): backprop
    # through a fine rk4 grid against the adjoint's backward solve of the augmented system.
    grads = {}
    torch.manual_seed(5)
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    solvers = {"direct": Solver(method="rk4", steps=200), "adjoint": Solver(method="dopri5", rtol=1e-10, atol=1e-10)}
    for grad, solver in solvers.items():
        model = tiny_augmented(solver, grad)
        step = LyapunovPath(kappa=100.0)(model, x, y)
        step.loss.backward()
        grads[grad] = [p.grad.clone() for p in model.parameters()]
        nfe = total_nfe(model)
        assert (nfe[1] > 0) == (grad == "adjoint")   # the adjoint's backward solve is counted
    for a, b in zip(grads["direct"], grads["adjoint"]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert any(g.abs().sum() > 0 for g in grads["direct"])


def test_lyanet_dynamics_follow_the_reference_formulas():
    model = tiny_lyanet(Solver(), gain=3.0)
    field = model.field
    assert math.isclose(model.kappa, math.log(15 * math.sqrt(K)))
    torch.manual_seed(2)
    h = torch.randn(2, K, dtype=torch.float64) * 5
    xs = model.features(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    dh, dx = field(torch.tensor(0.0), (h, xs))
    assert torch.equal(dx, torch.zeros_like(xs))
    c = torch.full((K, K), -15.0, dtype=torch.float64)
    c.fill_diagonal_(15.0)
    d = field.direction(h, xs)
    diff = c[None] - h[:, None, :]                                   # c_k - h
    dots = (diff * d[:, None, :]).sum(-1)
    w = (diff.norm(dim=-1) * dots.softmax(-1)).mean(-1, keepdim=True)
    torch.testing.assert_close(dh, 3.0 * model.kappa * w * d)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, dtype=torch.float64))
    # many states per input in one call (objective=lyanet_mc) give the same as one by one
    hs = torch.randn(2, 3, K, dtype=torch.float64)
    many = field(torch.tensor(0.0), (hs, xs))[0]
    one = torch.stack([field(torch.tensor(0.0), (hs[:, j], xs))[0] for j in range(3)], 1)
    torch.testing.assert_close(many, one)


def test_lyanet_mc_trains_encoder_and_field_with_one_counted_evaluation():
    model = tiny_lyanet(Solver()).train()
    x, y = torch.rand(3, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2])
    step = LyapunovMC(samples=7)(model, x, y)
    step.loss.backward()
    assert step.loss > 0
    assert model.encoder[0].weight.grad.abs().sum() > 0 and model.field.inp.weight.grad.abs().sum() > 0
    fwd, bwd = total_nfe(model)
    assert (fwd.item(), bwd.item()) == (1, 0)


def test_gain_controller_is_the_reference_rule():
    update = GainUpdate()
    gain = torch.tensor(50.0)
    update(gain, torch.tensor(0.5), epoch=60)        # few violations, early: slow down
    assert gain.item() == pytest.approx(50 * 0.9999)
    update(gain, torch.tensor(0.9), epoch=60)        # many violations, early: keep
    assert gain.item() == pytest.approx(50 * 0.9999)
    update(gain, torch.tensor(0.5), epoch=61)        # violations, late: speed up
    assert gain.item() == pytest.approx(50 * 0.9999 * 1.0001)
    low = torch.tensor(1.0)
    update(low, torch.tensor(0.0), epoch=1)          # never below min
    assert low.item() == 1.0


def test_dropout_with_an_adaptive_training_solve_is_refused():
    torch.manual_seed(0)
    info = DataInfo("img", (1, 8, 8), K, (0.5,), (0.25,))
    model = LyaNet(info, Solver(), encoder="small", channels=4, hidden=6, dropout=0.5, gain=1.0)
    with pytest.raises(ConfigError, match="dropout"):
        LyapunovPath()(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="dropout"):
        model(torch.rand(2, 1, 8, 8))
    model.eval()
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, K)   # inference: no dropout, fine
    rk4 = LyaNet(info, Solver(method="rk4", steps=2), encoder="small", channels=4, hidden=6, dropout=0.5)
    assert rk4(torch.rand(2, 1, 8, 8)).shape == (2, K)     # the backprop baseline's training solve


class RateField(nn.Module):
    """dz/dt = -rate V grad V / |grad V|^2 for V = CE(z, y): V(t) = V(0) exp(-rate t) exactly. The
    state carries (z, labels as one-hot, rate)."""

    def forward(self, t, state):
        z, onehot, rate = state
        v = torch.logsumexp(z, -1) - (z * onehot).sum(-1)
        grad = z.softmax(-1) - onehot
        dz = -rate[:, None] * v[:, None] * grad / grad.pow(2).sum(-1, keepdim=True)
        return dz, torch.zeros_like(onehot), torch.zeros_like(rate)


class Head(nn.Module):
    def forward(self, state):
        return state[0]


class KnownDecay(nn.Module):
    kappa = 2.0

    def __init__(self):
        super().__init__()
        self.ode = ODEBlock(RateField(), Solver(method="dopri5", rtol=1e-9, atol=1e-9))

    def lyapunov_parts(self, x):
        z0, rate = x[:, :K], x[:, K]
        y = x[:, K + 1].long()
        return LyapunovParts(self.ode, (z0, F.one_hot(y, K).to(x.dtype), rate), Head())


def test_inference_dynamics_measures_the_decay_rate():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    rates = torch.tensor([4.0, 4.0, 3.0, 1.0, 1.5, 0.5])       # kappa = 2: the first three decay fast enough
    x = torch.cat([torch.randn(6, K), rates[:, None], y[:, None].float()], 1).double()
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    out = InferenceDynamics(times=8)(KnownDecay(), batches, "test")
    assert out["test/lyapunov_decay"].item() == pytest.approx(0.5)
    assert out["test/lyapunov_rate"].item() == pytest.approx(rates.mean().item(), rel=1e-5)
    assert out["test/dynamics_nfe"].item() > 0
    # another solver for the same measurement
    rk4 = InferenceDynamics(times=4, solver={"method": "rk4", "steps": 8})(KnownDecay(), batches, "test")
    assert rk4["test/dynamics_nfe"].item() == 32


def test_mc_refused_for_the_augmented_model_in_a_run(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "objective=lyanet_mc"])
    assert summary["status"].startswith("failed: objective=lyanet_mc") and "lyanet_path" in summary["status"]


def test_lyanet_path_with_the_augmented_node_runs_an_epoch(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "objective=lyanet_path", "grad=adjoint",
                                          "eval=[clean,dynamics]"])
    assert summary["status"] == "completed"
    (row,) = read_metrics(tmp_path)
    for key in ("lyapunov/loss", "lyapunov/violation_rate", "train/acc", "test/lyapunov_decay",
                "test/dynamics_nfe", "nfe/backward"):
        assert key in row
    assert row["lyapunov/loss"] == pytest.approx(row["train/loss"]) and row["nfe/backward"] > 0


@pytest.mark.slow
def test_cli_lyanet_mc_with_nero_runs_an_epoch(tmp_path):
    # a fixed-step solver for the test evaluation: an untrained LyaNet (gain 100) is stiff for dopri5
    proc = run_cli(tmp_path, *TINY, "model=lyanet", "objective=lyanet_mc", "optim=nero", "logger=none",
                   "model.encoder=small", "objective.samples=16", "solver=rk4", "solver.steps=4")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert read_summary(run)["status"] == "completed"
    (row,) = read_metrics(run)
    assert row["nfe/forward"] == 1 and row["nfe/backward"] == 0       # one batched evaluation, no solve
    assert 0 <= row["lyapunov/violation_rate"] <= 1 and row["test/nfe"] == 16
    assert 1.0 <= row["model/gain"] < 100.0                           # the controller acted per step


def test_resnet18_encoder_is_torchvisions_from_scratch():
    import torchvision

    info = DataInfo("img", (1, 28, 28), 10, (0.5,), (0.25,))
    model = LyaNet(info, Solver(), encoder="resnet18", hidden=8, gain=1.0).eval()
    assert isinstance(model.encoder, torchvision.models.ResNet)
    assert model.encoder.conv1.in_channels == 1 and model.encoder.fc.out_features == 64
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model.kappa == pytest.approx(3.8593, abs=1e-4)          # log(15 sqrt(10)), as the reference


@pytest.mark.parametrize("name", ["lyanet_fmnist", "lyanet_cifar10", "lyanet_cifar100",
                                  "backprop_fmnist", "backprop_cifar10", "backprop_cifar100"])
def test_lyanet_recipes_build(name):
    from conftest import compose_cfg
    from odex.config import build

    cfg = compose_cfg([f"experiment={name}"])
    lyanet = name.startswith("lyanet")
    assert cfg.trainer.max_epochs == 120 and cfg.dataset.val_fraction == 0.1
    assert cfg.dataset.batch_size == (64 if lyanet else 128)
    assert (cfg.optim.lr, cfg.optim.beta, cfg.optim.constrain) == (0.01, 0.9, "conv")
    assert (cfg.schedule.scheduler.step_size, cfg.schedule.scheduler.gamma) == (60, 0.1)
    assert cfg.callbacks.swa.after_epoch == 60 and cfg.callbacks.swa.lr_factor == 0.1
    assert cfg.callbacks.best_checkpoint.monitor == "val/acc"
    solver = build(cfg.solver)
    assert (solver.method, solver.h) == (("dopri5", None) if lyanet else ("rk4", 0.1))
    assert cfg.model.gain == (100.0 if lyanet else 1.0)
    objective = build(cfg.objective)
    assert type(objective).__name__ == ("LyapunovMC" if lyanet else "CrossEntropy")
    evaluators = {k: build(v) for k, v in cfg.eval.items()}
    assert evaluators["pgd"].attacks == {"linf": {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10}}
    assert set(evaluators) == {"clean", "pgd", "dynamics"}
    assert {k: type(build(v)).__name__ for k, v in cfg.callbacks.items()} == {
        "swa": "StochasticWeightAveraging", "best_checkpoint": "BestCheckpoint"}
