"""optim=nero: pytorch-optimizer's Nero with LyaNet's grouping (conv kernels constrained; biases
and linear weights free), built from the YAML as a run builds it."""
import pytest
import torch
from torch import nn

from conftest import compose_cfg
from odex.config import check_composed
from odex.errors import ConfigError
from odex.optim.optimizers import build_optimizer


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3)
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def neuron_stats(w):
    rows = w.detach().flatten(1)
    return rows.mean(1), rows.norm(dim=1)


def train_steps(model, opt, steps=5):
    torch.manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_nero_constrains_conv_kernels_only():
    torch.manual_seed(0)
    model = ConvNet()
    opt = build_optimizer(compose_cfg(["optim=nero"]).optim, model)
    assert type(opt).__name__ == "Nero"
    assert opt.defaults["lr"] == 0.01 and opt.defaults["beta"] == 0.9
    constrained = {id(p) for g in opt.param_groups if g["constraints"] for p in g["params"]}
    assert constrained == {id(model.conv.weight)}
    fc_before = model.fc.weight.detach().clone()
    train_steps(model, opt)
    mean, norm = neuron_stats(model.conv.weight)
    torch.testing.assert_close(mean, torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(norm, torch.ones(5), atol=1e-5, rtol=0)
    # the linear layer moved but was not projected: its rows keep neither zero mean nor unit norm
    assert not torch.equal(model.fc.weight, fc_before)
    mean, norm = neuron_stats(model.fc.weight)
    assert mean.abs().max() > 1e-3 and (norm - 1).abs().max() > 1e-2


def test_nero_first_step_is_the_per_neuron_normalised_gradient():
    # Nero's update with beta = 0.9 at step 1: v = 0.1 |g_row|^2, debiased by 1 - 0.9 = 0.1, so a
    # free tensor moves by lr * scale * g / |g_row|, scale = the mean row norm at the start.
    torch.manual_seed(0)
    model = ConvNet()
    opt = build_optimizer(compose_cfg(["optim=nero"]).optim, model)
    w0 = model.fc.weight.detach().clone()
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    g = model.fc.weight.grad.clone()
    opt.step()
    scale = w0.norm(dim=1).mean()
    expected = w0 - 0.01 * scale * g / (g.norm(dim=1, keepdim=True) + 1e-8)
    torch.testing.assert_close(model.fc.weight.detach(), expected, rtol=1e-5, atol=1e-7)


def test_nero_constrain_options():
    model = ConvNet()
    everything = build_optimizer(compose_cfg(["optim=nero", "optim.constrain=all"]).optim, model)
    constrained = {id(p) for g in everything.param_groups if g["constraints"] for p in g["params"]}
    assert constrained == {id(model.conv.weight), id(model.fc.weight)}
    none = build_optimizer(compose_cfg(["optim=nero", "optim.constrain=none"]).optim, model)
    assert not any(g["constraints"] for g in none.param_groups)
    with pytest.raises(ConfigError, match="constrain"):       # refused before the run (odex/schema.py Nero)
        check_composed("train", ["optim=nero", "optim.constrain=kernels"])
