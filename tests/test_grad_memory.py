"""Memory between forward and backward: the activations autograd keeps for the backward pass.

Counted with torch.autograd.graph.saved_tensors_hooks, which sees every tensor any autograd node
(built-in or a custom Function's save_for_backward) stores; parameters are left out, they are not
activations. direct keeps every stage of every step, so its bytes grow with the number of steps;
gq, adjoint and seminorm keep the outputs y(t_i), anode the block input: constant in steps.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from odex.models.layers import MLPField
from odex.ode.nfe import CountedField
from odex.ode.odeint import odeint


def saved_bytes(grad, steps_or_tol, method) -> tuple[int, int]:
    """(bytes of activations kept for backward, forward NFE) of one solve with three outputs."""
    torch.manual_seed(0)
    field = CountedField(MLPField(4, 16, act="tanh").double())
    y0 = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    if method == "rk4":
        kw = dict(method="rk4", options={"step_size": 1.0 / steps_or_tol})
    else:
        kw = dict(method="dopri5", rtol=steps_or_tol, atol=steps_or_tol)
    total = 0

    def pack(x):
        nonlocal total
        if not isinstance(x, nn.Parameter):
            total += x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        ys = odeint(field, y0, t, grad=grad, **kw)
    field.backward_phase = True
    ys.square().sum().backward()          # and the graph it kept is a working one
    assert y0.grad.abs().sum() > 0
    return total, int(field.nfe_forward)


@pytest.mark.parametrize("grad,method,few,many", [
    ("direct", "rk4", 4, 32),
    ("anode", "rk4", 4, 32),
    ("gq", "rk4", 4, 32),
    ("gq", "dopri5", 1e-3, 1e-10),
    ("adjoint", "dopri5", 1e-3, 1e-10),
    ("seminorm", "dopri5", 1e-3, 1e-10),
])
def test_saved_activations_against_steps(grad, method, few, many):
    (small, nfe_few), (large, nfe_many) = saved_bytes(grad, few, method), saved_bytes(grad, many, method)
    assert nfe_many > 2 * nfe_few           # the second solve does take many more steps
    if grad == "direct":
        assert large > 4 * small > 0, (small, large)
    else:
        assert large == small, (small, large)
        state = 8 * 4 * 8
        assert small <= 4 * state       # y0 or the three outputs, plus the times
