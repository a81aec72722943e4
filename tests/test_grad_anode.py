"""grad=anode (ANODE's checkpointed gradient): exact against direct backprop on the same fixed-step
grid, BatchNorm statistics updated once, RNG replayed, adaptive solvers refused, odex-train runs
(including ANODE's ODE-ResNet)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import train_in_process
from odex.errors import ConfigError
from odex.models.layers import MLPField
from odex.ode.block import ODEBlock
from odex.ode.odeint import odeint
from odex.ode.solver import Solver

SMALL_RUN = ["dataset.limit_train=64", "dataset.limit_test=64", "trainer.max_epochs=1",
             "trainer.progress=false"]


def gradients(field, y0, t, grad, **kw):
    for x in (y0, t, *field.parameters()):
        x.grad = None
    ys = odeint(field, y0, t, grad=grad, **kw)
    (ys.square().sum() + ys[-1].sin().sum()).backward()
    return [y0.grad.clone(), t.grad.clone(), *(p.grad.clone() for p in field.parameters())]


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_anode_is_the_exact_discrete_gradient(method):
    torch.manual_seed(0)
    field = MLPField(3, 12, act="tanh").double()
    y0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    kw = dict(method=method, options={"step_size": 0.125})
    ref = gradients(field, y0, t, "direct", **kw)
    out = gradients(field, y0, t, "anode", **kw)
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    # on another grid the gradient is another one: the comparison can fail
    coarse = gradients(field, y0, t, "anode", method=method, options={"step_size": 0.25})
    assert max(((a - b).norm() / b.norm()).item() for a, b in zip(coarse, ref)) > 1e-8


class BNField(nn.Module):
    def __init__(self, p_drop=0.0):
        super().__init__()
        self.lin, self.bn, self.drop = nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(p_drop)

    def forward(self, t, z):
        return self.drop(torch.tanh(self.bn(self.lin(z))))


def _train_step(grad, seed, p_drop):
    torch.manual_seed(0)
    block = ODEBlock(BNField(p_drop), Solver(method="rk4", steps=3), grad).double()
    y0 = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(seed)
    block(y0).square().sum().backward()
    bn = block.field.field.bn
    return ([y0.grad, *(p.grad for p in block.parameters())],
            [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()], block)


def test_batchnorm_statistics_updated_once_and_dropout_replayed():
    grads_d, stats_d, _ = _train_step("direct", seed=1, p_drop=0.3)
    grads_a, stats_a, block = _train_step("anode", seed=1, p_drop=0.3)
    assert int(stats_a[2]) == int(block.field.nfe_forward) == 12      # one update per forward eval
    for a, b in zip(stats_a, stats_d):
        assert torch.equal(a, b)
    for a, b in zip(grads_a, grads_d):      # same dropout masks in the recomputation
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert int(block.field.nfe_backward) == int(block.field.nfe_forward)


def test_anode_refuses_adaptive_solvers():
    with pytest.raises(ConfigError, match="fixed-step"):
        ODEBlock(MLPField(2, 4), Solver(method="dopri5"), "anode")
    with pytest.raises(ConfigError, match="fixed-step"):
        odeint(MLPField(2, 4), torch.zeros(1, 2), torch.tensor([0.0, 1.0]), grad="anode", method="bosh3")


def test_anode_in_eval_mode_keeps_no_graph():
    block = ODEBlock(MLPField(2, 4), Solver(method="midpoint", steps=2), "anode")
    with torch.no_grad():
        out = block(torch.randn(3, 2))
    assert out.grad_fn is None


def test_odex_train_anode_rk4_one_epoch(tmp_path):
    summary = train_in_process(tmp_path, [*SMALL_RUN, "model.channels=8", "model.hidden=16",
                                          "grad=anode", "solver=rk4", "solver.steps=4"])
    assert summary["status"] == "completed", summary["status"]
    assert summary["nfe/forward"] == 16 and summary["nfe/backward"] == 16


def test_odex_train_ode_resnet_anode(tmp_path):
    summary = train_in_process(tmp_path, [*SMALL_RUN, "model=ode_resnet", "model.width=0.0625",
                                          "grad=anode", "solver=midpoint", "solver.steps=2"])
    assert summary["status"] == "completed", summary["status"]
    assert summary["nfe/forward"] == 4 * 2 * 2      # 4 ODE blocks x 2 steps x 2 stages
    assert summary["nfe/backward"] == summary["nfe/forward"]


def test_ode_resnet_refuses_gq():
    from conftest import compose_cfg
    from odex.config import build
    from odex.data import DataInfo

    cfg = compose_cfg(["model=ode_resnet", "grad=gq"])
    info = DataInfo("digits", (1, 8, 8), 10, (0.5,), (0.3,))
    with pytest.raises(ConfigError, match="BatchNorm"):
        build(cfg.model, info=info, solver=build(cfg.solver), grad=build(cfg.grad))


def test_anode_cifar10_experiment_is_the_papers_recipe():
    import torch.nn.functional as F

    from conftest import compose_cfg
    from odex.config import build
    from odex.data import DataInfo

    cfg = compose_cfg(["experiment=anode_cifar10", "model.width=0.0625"])
    assert cfg.grad._target_ == "odex.ode.grad.CheckpointedANODE"
    assert (cfg.solver.method, cfg.solver.steps) == ("midpoint", 2)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.1, 0.9, 5e-4)
    assert list(cfg.schedule.scheduler.milestones) == [150, 250] and cfg.schedule.scheduler.gamma == 0.1
    assert (cfg.trainer.max_epochs, cfg.dataset.batch_size, cfg.dataset.augment) == (350, 256, True)
    info = DataInfo("cifar10", (3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    model = build(cfg.model, info=info, solver=build(cfg.solver), grad=build(cfg.grad))
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
