"""Momentum models (HBNODE, GHBNODE, AdamNODE) and their pixel-grid first-order baselines.

The fields are checked against hand-written formulas of the papers' equations, the presets against
the papers' parameter budgets, and every model trains with every gradient method whose adjoint
gradients agree with direct backprop in float64.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import PLUGINS, compose_cfg, read_metrics, read_summary, run_cli, train_in_process

from odex.config import build, check_composed
from odex.data import DataInfo
from odex.errors import ConfigError
from odex.ode.grad import gradient_method, names
from odex.models.layers import ConvField, ZeroChannels
from odex.models.momentum import AdamField, HeavyBallField, LearnedMomentum
from odex.optim.optimizers import build_schedule
from odex.ode.solver import Solver

MOMENTUM = ["heavy_ball", "ghbnode", "adam_node"]
FAMILY = ["pixel_node", "pixel_augmented", *MOMENTUM]


MNIST = DataInfo("mnist", (1, 28, 28), 10, (0.13,), (0.31,))
CIFAR = DataInfo("cifar10", (3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def build_model(name: str, info: DataInfo, overrides=(), solver: Solver | None = None, grad="direct"):
    cfg = compose_cfg([f"model={name}", *overrides])
    return build(cfg.model, info=info, solver=solver or build(cfg.solver), grad=grad)


def softplus(x):          # written out, independent of the code under test
    return torch.log1p(torch.exp(x))


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


# ---------------------------------------------------------------------------------------------
# The vector fields equal their equations
# ---------------------------------------------------------------------------------------------

def test_conv_field_is_1x1_3x3_1x1_with_time_channel():
    torch.manual_seed(0)
    f = ConvField(3, 5).double()
    h, t = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)

    def with_t(u):
        return torch.cat([u, torch.full_like(u[:, :1], 0.3)], dim=1)

    expected = F.conv2d(with_t(h), f.conv1.weight, f.conv1.bias).relu()
    expected = F.conv2d(with_t(expected), f.conv2.weight, f.conv2.bias, padding=1).relu()
    expected = F.conv2d(with_t(expected), f.conv3.weight, f.conv3.bias)
    torch.testing.assert_close(f(t, h), expected)


@pytest.mark.parametrize("generalized", [False, True], ids=["hbnode", "ghbnode"])
def test_heavy_ball_field_matches_equations(generalized):
    torch.manual_seed(1)
    dim = 3
    field = HeavyBallField(ConvField(dim, 6), dim, sigma="tanh" if generalized else None,
                           xi=0.8 if generalized else None).double()
    if generalized:
        assert math.isclose(field.xi.item(), 0.8, rel_tol=1e-6)   # xi starts at the value asked for
        with torch.no_grad():
            field.xi_raw.fill_(0.4)
    with torch.no_grad():
        field.gamma_logit.fill_(1.3)
    z = torch.randn(2, 2 * dim, 4, 4, dtype=torch.float64)
    t = torch.tensor(0.7, dtype=torch.float64)
    h, m = z[:, :dim], z[:, dim:]
    gamma = sigmoid(torch.tensor(1.3, dtype=torch.float64))
    xi = softplus(torch.tensor(0.4, dtype=torch.float64))
    f = field.f(t, h)
    if generalized:   # h' = tanh(m), m' = -gamma m + f(h) - xi h
        expected = torch.cat([torch.tanh(m), -gamma * m + f - xi * h], dim=1)
    else:             # h' = m, m' = -gamma m + f(h)
        expected = torch.cat([m, -gamma * m + f], dim=1)
    torch.testing.assert_close(field(t, z), expected)


@pytest.mark.parametrize("root", ["softplus", "sigmoid"])
def test_adam_field_matches_equations(root):
    torch.manual_seed(2)
    dim = 2
    field = AdamField(ConvField(dim, 5), dim, beta1_logit=0.4, beta2_logit=-0.9, root=root, eps=1e-8).double()
    z = torch.randn(3, 3 * dim, 4, 4, dtype=torch.float64)        # v < 0 in places: rho keeps the root real
    t = torch.tensor(0.2, dtype=torch.float64)
    h, m, v = z[:, :dim], z[:, dim:2 * dim], z[:, 2 * dim:]
    f = field.f(t, h)
    rho = softplus(v) if root == "softplus" else sigmoid(v)
    b1, b2 = (sigmoid(torch.tensor(b, dtype=torch.float64)) for b in (0.4, -0.9))
    expected = torch.cat([-m / (torch.sqrt(rho) + 1e-8), b1 * (-f - m), b2 * (f ** 2 - v)], dim=1)
    torch.testing.assert_close(field(t, z), expected)


def test_initial_states():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 5)
    z = ZeroChannels(2)(x)
    assert z.shape == (2, 5, 5, 5) and torch.equal(z[:, :3], x) and not z[:, 3:].any()

    hb = LearnedMomentum(3, dim=4, hidden=6)(x)                       # [h(4), m(4)], h = [x, a]
    assert hb.shape == (2, 8, 5, 5) and torch.equal(hb[:, :3], x)
    adam = LearnedMomentum(3, dim=4, hidden=6, second_moment=True)(x)   # [h, m, v], v = m^2
    assert adam.shape == (2, 12, 5, 5) and torch.equal(adam[:, :3], x)
    torch.testing.assert_close(adam[:, 8:], adam[:, 4:8] ** 2)


@pytest.mark.parametrize("name,channels", [("pixel_node", 1), ("pixel_augmented", 2),
                                           ("heavy_ball", 4), ("ghbnode", 4), ("adam_node", 6)])
def test_one_evaluation_of_the_whole_extended_system_is_one_nfe(name, channels):
    info = DataInfo("digits", (1, 8, 8), 10, (0.3,), (0.4,))
    model = build_model(name, info, ["model.preset=tiny"], solver=Solver(method="euler", steps=3))
    seen = []
    model.ode.field.field.register_forward_hook(lambda mod, args, out: seen.append(args[1].shape[1]))
    model(torch.rand(4, 1, 8, 8))
    assert model.ode.field.nfe_forward.item() == 3
    assert seen == [channels] * 3          # each evaluation sees the whole state [h, m(, v)]


# ---------------------------------------------------------------------------------------------
# Presets: the papers' equal parameter budgets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILY)
def test_presets_meet_the_papers_parameter_budgets(name):
    for preset, info, budget in [("mnist", MNIST, 85_000), ("cifar10", CIFAR, 173_000)]:
        model = build_model(name, info, [f"model.preset={preset}"])
        n = sum(p.numel() for p in model.parameters())
        assert abs(n - budget) <= 0.05 * budget, (name, preset, n)


def test_explicit_keys_win_over_the_preset():
    model = build_model("ghbnode", MNIST, ["model.dim=3", "model.hidden=7", "model.xi=0.5"])
    assert model.dim == 3 and model.ode.field.field.f.conv1.out_channels == 7
    assert math.isclose(model.ode.field.field.xi.item(), 0.5, rel_tol=1e-6)
    adam = build_model("adam_node", CIFAR, ["model.preset=cifar10", "model.root=softplus"])
    assert adam.ode.field.field.root == "softplus" and adam.dim == 15
    beta1 = torch.sigmoid(adam.ode.field.field.beta1_logit).item()
    assert math.isclose(beta1, 1 / (1 + math.exp(-3)), rel_tol=1e-6)     # the cifar10 preset's rate


@pytest.mark.parametrize("overrides,message", [
    (["model=heavy_ball", "model.preset=imagenet"], "model.preset=imagenet: must be one of mnist, cifar10, tiny"),
    (["model=heavy_ball", "model.preset=cifar10", "model.dim=2"], "model.dim=2: must be >= the input's 3"),
    (["model=adam_node", "model.root=relu"], "model.root=relu: must be null or one of softplus, sigmoid"),
    (["model=ghbnode", "model.xi=-1"], "model.xi=-1: must be null or a number > 0"),
    (["model=pixel_augmented", "model.augment_dim=-1"], "model.augment_dim=-1: must be null or an integer >= 0"),
    (["model=heavy_ball", "model.preset=null"], "model.dim=null: is not set"),
    (["model=heavy_ball", "++model.presets.mnist.hiden=3"], r"model.presets.mnist.hiden=3: .* has no key 'hiden'"),
])
def test_bad_sizes_are_config_errors(overrides, message):
    """Refused before the run, by validation (odex/schema.py PixelModel; the models do not check again)."""
    with pytest.raises(ConfigError, match=message):
        check_composed("train", ["dataset=cifar10", *overrides])


def test_too_few_state_channels_are_refused_for_a_dataset_of_ones_own():
    """The input's channels are known before the run only for odex's datasets: the model checks
    dim against them itself."""
    cfg = compose_cfg(["model=heavy_ball", "model.preset=cifar10", "model.dim=2"])
    with pytest.raises(ConfigError, match="model.dim=2 must be >= the input's 3"):
        build(cfg.model, info=CIFAR, solver=build(cfg.solver), grad="direct")


def test_vector_data_is_a_config_error():
    cfg = compose_cfg(["model=heavy_ball"])
    with pytest.raises(ConfigError, match="image classifier"):
        build(cfg.model, info=DataInfo("spheres", (2,), 2, (0.0, 0.0), (1.0, 1.0)),
              solver=build(cfg.solver), grad="direct")


# ---------------------------------------------------------------------------------------------
# Training with every gradient method; adjoint gradients agree with direct backprop
# ---------------------------------------------------------------------------------------------

TINY_RUN = ["model.preset=tiny", "dataset.limit_train=64", "dataset.limit_test=64",
            "trainer.max_epochs=1", "trainer.progress=false"]
# fixed-step solves for the checkpointed ANODE gradient (it needs a fixed grid)
GRAD_SETUP = {"anode": ["solver=rk4", "solver.steps=2"]}


def _needs(grad: str) -> None:
    if grad not in names([PLUGINS]):
        pytest.skip(f"grad={grad} has no conf/grad/{grad}.yaml yet")


@pytest.mark.parametrize("grad", names([PLUGINS]))
@pytest.mark.parametrize("name", MOMENTUM)
def test_momentum_models_train_with_every_gradient_method(tmp_path, name, grad):
    _needs(grad)
    fixed_steps = [] if gradient_method(grad, folders=[PLUGINS]).supports.adaptive_solvers else GRAD_SETUP["anode"]
    overrides = [f"model={name}", f"grad={grad}", *fixed_steps, *TINY_RUN]
    summary = train_in_process(tmp_path, overrides)
    assert summary["status"] == "completed", summary["status"]
    row = read_metrics(tmp_path)[-1]
    assert math.isfinite(row["train/loss"]) and 0 <= row["test/acc"] <= 1
    assert row["nfe/forward"] > 0
    if grad in ("adjoint", "seminorm", "gq"):
        assert row["nfe/backward"] > 0      # the backward solve evaluates the whole extended system
    if grad == "direct":
        assert row["nfe/backward"] == 0


@pytest.mark.parametrize("name", ["pixel_node", "pixel_augmented"])
def test_first_order_baselines_train(tmp_path, name):
    summary = train_in_process(tmp_path, [f"model={name}", "grad=adjoint", *TINY_RUN])
    assert summary["status"] == "completed", summary["status"]
    assert read_metrics(tmp_path)[-1]["nfe/backward"] > 0


def _grads(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("name", FAMILY)
def test_adjoint_gradients_agree_with_direct_in_float64(name):
    # A smooth f: with ReLU the Jacobian jumps, and the continuous adjoint and the discrete gradient
    # converge to each other only slowly as the tolerance shrinks (measured: ~1e-2 apart at 1e-8).
    torch.manual_seed(4)
    info = DataInfo("digits", (1, 5, 5), 10, (0.3,), (0.4,))
    tight = Solver(method="dopri5", rtol=1e-10, atol=1e-10, max_num_steps=None)
    keys = ["model.preset=tiny", "model.activation=softplus"]
    direct = build_model(name, info, keys, solver=tight, grad="direct").double()
    x, y = torch.rand(3, 1, 5, 5, dtype=torch.float64), torch.tensor([0, 3, 7])
    reference = _grads(direct, x, y)
    assert all(g.abs().sum() > 0 for g in reference.values())     # every parameter gets a gradient
    # GQ's parameter gradient is a Gauss-Legendre quadrature on top of the backward solve: looser.
    for grad, rel in [("adjoint", 1e-6), ("seminorm", 1e-6), ("gq", 1e-4)]:
        if grad not in names():
            continue
        other = build_model(name, info, keys, solver=tight, grad=grad).double()
        other.load_state_dict(copy.deepcopy(direct.state_dict()))
        got = _grads(other, x, y)
        assert other.ode.field.nfe_backward.item() > 0
        for k, ref in reference.items():
            err = (got[k] - ref).abs().max().item()
            assert err <= rel * ref.abs().max().item(), f"grad={grad}: {k} off by {err:.2e}"


# ---------------------------------------------------------------------------------------------
# Recipes and the command line
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("experiment,dataset,batch,lr,clip,tol,interval", [
    ("hbnode_mnist", "mnist", 32, 5e-5, 10.0, 1e-4, "epoch"),
    ("adamnode_mnist", "mnist", 32, 5e-5, 10.0, 1e-4, "epoch"),
    ("hbnode_cifar10", "cifar10", 256, 1e-3, 1.0, 1e-3, "step"),
    ("adamnode_cifar10", "cifar10", 64, 1e-3, 1.0, 1e-5, "step"),
])
def test_experiments_carry_the_papers_recipes(experiment, dataset, batch, lr, clip, tol, interval):
    cfg = compose_cfg([f"experiment={experiment}", "model=pixel_augmented"])   # any model of the family
    assert cfg.dataset._target_.endswith(f".{dataset}") and cfg.dataset.batch_size == batch
    assert cfg.model._target_.endswith("PixelNODE") and cfg.model.preset == dataset
    assert cfg.optim.lr == lr and cfg.trainer.grad_clip == clip
    assert cfg.solver.method == "dopri5" and cfg.solver.rtol == cfg.solver.atol == tol
    assert cfg.grad._target_ == "odex.ode.grad.Adjoint" and cfg.schedule.interval == interval
    if interval == "step":     # x0.95 every 1000 iterations
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        schedule = build_schedule(cfg.schedule, opt, steps_per_epoch=10, max_epochs=1)
        for _ in range(1000):
            opt.step()
            schedule.step("step")
        assert math.isclose(opt.param_groups[0]["lr"], 0.95 * lr)


@pytest.mark.slow
def test_momentum_models_train_from_the_command_line(tmp_path):
    # ++: a multirun first composes the default model (model=augmented), which has no preset key
    proc = run_cli(tmp_path, "model=heavy_ball,ghbnode,adam_node", "++model.preset=tiny", "logger=none",
                   "dataset.limit_train=64", "dataset.limit_test=64", "trainer.max_epochs=1",
                   "trainer.progress=false", multirun=True, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job in range(3):
        assert read_summary(tmp_path / "multirun" / str(job))["status"] == "completed"
