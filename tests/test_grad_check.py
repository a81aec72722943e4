"""eval=grad_check: the configured gradient method's parameter gradient against direct backprop
through the same solver (odex/evaluate/grad_check.py)."""
from __future__ import annotations

import pytest
import torch
from conftest import TINY, read_metrics, train_in_process
from torch import nn

from odex.data import DataInfo
from odex.config import check_composed
from odex.errors import ConfigError
from odex.ode.grad import Direct
from odex.evaluate.grad_check import GradCheck
from odex.models.augmented import AugmentedNODE
from odex.ode.solver import Solver

INFO = DataInfo("t", (1, 8, 8), 10, (0.5,), (0.3,))
TIGHT = Solver("dopri5", rtol=1e-6, atol=1e-6)


def _batch():
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))]


def _check(grad, solver=TIGHT, activation="softplus", **kw):
    torch.manual_seed(0)
    model = AugmentedNODE(INFO, solver, grad, channels=4, hidden=8, activation=activation)
    out = GradCheck(float64=True, **kw)(model, _batch())
    return out["grad/rel_err"].item(), out["grad/cosine"].item()


class HalfGradient(Direct):
    """A wrong gradient method (for the test): the solution's gradient is halved on the way back."""
    name = "half"

    def solve(self, func, y0, t, **kw):
        ys = super().solve(func, y0, t, **kw)
        return 0.5 * ys + 0.5 * ys.detach()


def test_exact_methods_report_zero():
    assert _check("direct") == (0.0, pytest.approx(1.0, abs=1e-12))
    rel, cos = _check("anode", Solver("rk4", steps=4), activation="relu")
    assert rel < 1e-12 and cos == pytest.approx(1.0, abs=1e-12)


def test_adjoint_is_close_on_a_smooth_field_and_further_on_relu(caplog):
    smooth, cos = _check("adjoint")
    assert smooth < 1e-4 and cos > 1 - 1e-8
    with caplog.at_level("WARNING", logger="odex"):
        kinked, _ = _check("adjoint", activation="relu", threshold=1e-4)
    assert kinked > 1e-4 and kinked > 20 * smooth
    assert "grad=adjoint" in caplog.text and "not exact" in caplog.text


def test_any_gradient_method_is_measured_and_the_check_can_fail():
    # the parameters before the block get half their gradient, those after it all of it
    rel, cos = _check(HalfGradient())
    assert 0.05 < rel < 0.5 and cos < 1 - 1e-4


def test_the_model_and_its_parameter_gradients_are_left_as_they_were():
    torch.manual_seed(0)
    model = AugmentedNODE(INFO, TIGHT, "adjoint", channels=4, hidden=8).train()
    out = GradCheck()(model, _batch())                        # float32, the model itself
    assert out["grad/rel_err"].item() < 1e-2
    assert model.training and model.ode.grad.name == "adjoint"
    assert all(p.grad is None for p in model.parameters())


def test_bad_settings_and_models_without_ode_blocks():
    for kw in ("every=0", "examples=0", "threshold=0", "solver={t1: 2.0}", "solver={metod: rk4}"):
        with pytest.raises(ConfigError):        # refused before the run (odex/schema.py GradCheck)
            check_composed("train", ["eval=grad_check", f"eval.grad_check.{kw}"])
    with pytest.raises(ConfigError, match="no ODE block"):
        GradCheck()(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), _batch())


def test_grad_check_in_a_run(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "eval=[clean,grad_check]", "grad=adjoint",
                                          "eval.grad_check.examples=16"])
    assert summary["status"] == "completed"
    (row,) = read_metrics(tmp_path)
    assert 0 <= row["grad/rel_err"] < 0.1 and row["grad/cosine"] > 0.99
