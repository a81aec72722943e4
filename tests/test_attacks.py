"""PGD: torchattacks' update rules, the eps-ball and pixel-range constraints, eps 0 = clean,
robust <= clean, the attack raises the loss, and ODE models attacked through their gradient method."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, read_metrics, train_in_process
from digits_mlp import trained_digits_mlp
from torch import nn

from odex.evaluate.attacks import dlr, pgd
from odex.data import DataInfo
from odex.data.batches import Batches
from odex.data.bundle import Split
from odex.config import check_composed
from odex.errors import ConfigError
from odex.evaluate.evaluators import CleanAccuracy, PGDAccuracy, evaluate, parse_eps
from odex.models.augmented import AugmentedNODE
from odex.ode.nfe import reset_nfe, total_nfe
from odex.ode.block import solver_changed
from odex.ode.solver import Solver


@pytest.fixture(scope="module")
def digits_mlp():
    """A small MLP trained for a second on the digits, and the test split."""
    return trained_digits_mlp()


def torchattacks_reference(model, images, labels, eps, alpha, steps, norm):
    """torchattacks 3.5.1's PGD.forward / PGDL2.forward loops with random_start=False, transcribed
    in their own terms (nn.CrossEntropyLoss, torch.min against ones, eps_for_division=1e-10)."""
    loss = nn.CrossEntropyLoss()
    images = images.clone().detach()
    adv_images = images.clone().detach()
    batch_size = len(images)
    for _ in range(steps):
        adv_images.requires_grad = True
        cost = loss(model(adv_images), labels)
        grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
        if norm == "linf":
            adv_images = adv_images.detach() + alpha * grad.sign()
            delta = torch.clamp(adv_images - images, min=-eps, max=eps)
        else:
            grad_norms = torch.norm(grad.view(batch_size, -1), p=2, dim=1) + 1e-10
            grad = grad / grad_norms.view(batch_size, 1, 1, 1)
            adv_images = adv_images.detach() + alpha * grad
            delta = adv_images - images
            delta_norms = torch.norm(delta.view(batch_size, -1), p=2, dim=1)
            factor = eps / delta_norms
            factor = torch.min(factor, torch.ones_like(delta_norms))
            delta = delta * factor.view(-1, 1, 1, 1)
        adv_images = torch.clamp(images + delta, min=0, max=1).detach()
    return adv_images


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 8 / 255, 2 / 255), ("l2", 1.0, 0.2)])
def test_matches_torchattacks_update_rule(digits_mlp, norm, eps, alpha):
    model, x, y = digits_mlp
    ours = pgd(model, x, y, eps=eps, alpha=alpha, steps=10, norm=norm, random_start=False)
    ref = torchattacks_reference(model, x, y, eps, alpha, 10, norm)
    assert (ours - ref).abs().max().item() <= 1e-6
    assert (ours - x).abs().max().item() > eps / 2          # it moved: the comparison means something


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_stays_in_the_ball_and_is_seeded(digits_mlp, norm):
    model, x, y = digits_mlp
    eps = 0.1 if norm == "linf" else 0.8

    def attack(seed):
        g = torch.Generator().manual_seed(seed)
        return pgd(model, x, y, eps=eps, alpha=eps / 4, steps=3, norm=norm, generator=g)

    a, b, c = attack(0), attack(0), attack(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    d = (a - x).flatten(1)
    size = d.abs().max(dim=1).values if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-6)).all()


def test_eps_zero_is_clean_and_robust_accuracy_is_below_clean(digits_mlp):
    model, x, y = digits_mlp
    batches = Batches(Split(x, y), 128)
    zero = PGDAccuracy(linf={"eps": 0, "alpha": "2/255"}, l2={"eps": 0.0, "alpha": 0.2})
    for norm in ("linf", "l2"):
        assert torch.equal(pgd(model, x, y, eps=0.0, alpha=0.1, steps=3, norm=norm), x)
    out = evaluate({"clean": CleanAccuracy(), "pgd": zero}, model, batches)
    assert out["test/pgd_linf_acc"].item() == out["test/acc"].item() == out["test/pgd_l2_acc"].item()
    assert out["test/acc"].item() > 0.85

    out = PGDAccuracy(linf={"eps": "8/255", "alpha": "2/255", "steps": 10},
                      l2={"eps": 0.5, "alpha": 0.1, "steps": 10})(model, batches)
    clean = CleanAccuracy()(model, batches)["test/acc"].item()
    assert out["test/pgd_linf_acc"].item() < clean and out["test/pgd_l2_acc"].item() < clean
    assert out["test/pgd_linf_time_s"].item() > 0


def test_the_attack_raises_the_loss_and_leaves_the_model_as_it_was(digits_mlp):
    model, x, y = digits_mlp
    model.zero_grad(set_to_none=True)
    model.train()
    adv = pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=10)
    assert model.training                                        # the mode is restored
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > 1.5 * F.cross_entropy(model(x), y)


def test_ode_models_are_attacked_through_their_gradient_method():
    torch.manual_seed(0)
    info = DataInfo("t", (1, 8, 8), 10, (0.5,), (0.3,))
    x, y = torch.rand(4, 1, 8, 8, dtype=torch.float64), torch.arange(4)
    advs = {}
    for grad in ("direct", "adjoint"):
        torch.manual_seed(0)
        # a smooth field and tight tolerances: both gradients are then the exact one, to ~1e-7
        solver = Solver("dopri5", rtol=1e-6, atol=1e-6)
        model = AugmentedNODE(info, solver, grad, channels=4, hidden=8, activation="softplus").double()
        reset_nfe(model)
        advs[grad] = pgd(model, x, y, eps=0.5, alpha=0.1, steps=2, norm="l2", random_start=False)
        backward = total_nfe(model)[1].item()
        # the adjoint solves backwards (counted as backward NFE); direct backprop calls no field
        assert (backward > 0) == (grad == "adjoint")
    assert torch.allclose(advs["direct"], advs["adjoint"], atol=1e-5)
    assert not torch.allclose(advs["direct"], x, atol=1e-2)


def test_an_evaluation_solver_is_used_for_the_attack_only():
    torch.manual_seed(0)
    info = DataInfo("t", (1, 8, 8), 10, (0.5,), (0.3,))
    model = AugmentedNODE(info, Solver("dopri5"), "adjoint", channels=4, hidden=8)
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with solver_changed(model, {"method": "rk4", "steps": 1}):
        assert model.ode.solver.method == "rk4" and model.ode.solver.t1 == 1.0
        reset_nfe(model)
        model(x)
        assert total_nfe(model)[0].item() == 4                 # one rk4 step: four evaluations
    assert model.ode.solver.method == "dopri5"
    # refused before the run, by validation (the evaluator does not check its keys again)
    with pytest.raises(ConfigError, match="t1"):
        check_composed("train", ["eval=pgd", "eval.pgd.solver={t1: 2.0}"])
    with pytest.raises(ConfigError):
        check_composed("train", ["eval=pgd", "eval.pgd.solver={metod: rk4}"])
    with pytest.raises(ConfigError):
        check_composed("train", ["eval=pgd", "eval.pgd.solver={method: euler}"])   # no step given
    with pytest.raises(ConfigError, match="t1"):          # and at run time, by the block
        with solver_changed(model, {"t1": 2.0}):
            pass


def test_bad_attack_settings_are_config_errors():
    model = nn.Flatten()
    with pytest.raises(ConfigError):
        pgd(model, torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), eps=0.1, alpha=0.1, steps=1, norm="l1")
    with pytest.raises(ConfigError):      # refused before the run (the evaluator does not check again)
        check_composed("train", ["eval=pgd", "eval.pgd.linf=null", "eval.pgd.l2=null"])
    with pytest.raises(ConfigError):
        check_composed("train", ["eval=pgd", "eval.pgd.linf={eps: 0.1, step: 0.1}"])
    with pytest.raises(ConfigError):
        parse_eps("8/zero")
    assert parse_eps("8/255") == (8 / 255, "8/255") and parse_eps(0.5) == (0.5, "0.5")
    assert parse_eps("7.2 / 255") == (7.2 / 255, "7.2/255") and parse_eps("0.25") == (0.25, "0.25")
    with pytest.raises(ConfigError):
        parse_eps("-1/255")


def test_pgd_runs_only_when_due(digits_mlp):
    model, x, y = digits_mlp
    batches = Batches(Split(x[:64], y[:64]), 64)
    at_end = {"pgd": PGDAccuracy(linf={"eps": 0.1, "alpha": 0.05, "steps": 1})}
    every2 = {"pgd": PGDAccuracy(linf={"eps": 0.1, "alpha": 0.05, "steps": 1}, every=2)}
    assert evaluate(at_end, model, batches, epoch=2, final=False) == {}
    assert "test/pgd_linf_acc" in evaluate(at_end, model, batches, epoch=3, final=True)
    assert evaluate(every2, model, batches, epoch=3, final=False) == {}
    assert "test/pgd_linf_acc" in evaluate(every2, model, batches, epoch=4, final=False)


def test_eval_pgd_with_the_augmented_node(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "eval=[clean,pgd]", "grad=adjoint",
                                          "eval.pgd.linf.steps=2", "eval.pgd.l2.steps=2",
                                          "eval.pgd.solver={method:rk4,steps:2}"])
    assert summary["status"] == "completed"
    (row,) = read_metrics(tmp_path)
    assert row["test/pgd_linf_acc"] <= row["test/acc"] and row["test/pgd_l2_acc"] <= row["test/acc"]


class Scaled(nn.Module):
    """A model built to mask gradients: the logits times 1e8. The softmax is one-hot in float32, so
    the cross-entropy's input gradient is exactly zero wherever the class is right."""

    def __init__(self, model: nn.Module, scale: float = 1e8):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x) * self.scale


def test_dlr_loss_is_scale_and_shift_invariant_and_the_margin_for_two_classes():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    top = z.double().sort(dim=1, descending=True).values
    zy = z.double().gather(1, y[:, None])[:, 0]
    best_other = z.double().scatter(1, y[:, None], float("-inf")).max(1).values
    assert torch.allclose(dlr(z, y), -(zy - best_other) / (top[:, 0] - top[:, 2] + 1e-12))
    assert torch.allclose(dlr(1e8 * z + 3.0, y), dlr(z, y), rtol=1e-5)
    z2 = torch.randn(16, 2, generator=g)
    y2 = torch.randint(0, 2, (16,), generator=g)
    assert torch.allclose(dlr(z2, y2), (z2[torch.arange(16), 1 - y2] - z2[torch.arange(16), y2]).double())


def test_masking_flag_fires_on_a_masked_model_and_margin_pgd_sees_through(digits_mlp, caplog):
    model, x, y = digits_mlp
    batches = Batches(Split(x, y), 128)
    # no random start: the cross-entropy attack's blindness is then exact
    ev = PGDAccuracy(linf={"eps": 0.1, "alpha": 0.025, "steps": 10}, l2={"eps": 1.0, "alpha": 0.25, "steps": 10},
                     random_start=False)
    normal = ev(model, batches)
    with caplog.at_level("WARNING", logger="odex"):
        masked = ev(Scaled(model), batches)
    assert normal["test/pgd_masking_flag"].item() == 0.0 and normal["test/pgd_zero_grad"].item() == 0.0
    assert masked["test/pgd_masking_flag"].item() == 1.0 and masked["test/pgd_zero_grad"].item() > 0.9
    assert "possible gradient masking" in caplog.text and "exactly zero" in caplog.text
    clean = masked["test/pgd_clean_acc"].item()
    assert clean == normal["test/pgd_clean_acc"].item() > 0.85
    for norm in ("linf", "l2"):
        ce, margin = masked[f"test/pgd_{norm}_acc_ce"].item(), masked[f"test/pgd_{norm}_acc_dlr"].item()
        # cross-entropy PGD is blind here: it reports the clean accuracy
        assert ce == clean and ce > normal[f"test/pgd_{norm}_acc_ce"].item() + 0.1
        # the margin loss is not: at most the clean accuracy, as low as on the unscaled model
        assert margin <= clean and margin < ce - 0.1
        assert margin == pytest.approx(normal[f"test/pgd_{norm}_acc_dlr"].item(), abs=0.03)
        # the headline figure is per example the worst over the losses
        assert masked[f"test/pgd_{norm}_acc"].item() <= min(ce, margin)
        assert normal[f"test/pgd_{norm}_acc"].item() <= normal[f"test/pgd_{norm}_acc_ce"].item()
        assert normal[f"test/pgd_{norm}_acc@2eps"].item() <= normal[f"test/pgd_{norm}_acc"].item()


def test_a_robust_accuracy_above_clean_and_a_flat_radius_are_flagged(digits_mlp, caplog):
    """A model that answers right only off the data (any perturbation helps it) and whose answer
    does not depend on the radius: both checks fire, the zero-gradient one does not."""
    model, x, y = digits_mlp
    reference = x.clone()

    class OffData(nn.Module):
        def forward(self, inp):
            logits = model(inp)
            on_data = (inp.flatten(1)[:, None, :] == reference.flatten(1)[None]).all(2).any(1)
            # a wrong class on the clean images, the right one (by the base model) elsewhere
            return torch.where(on_data[:, None], logits.roll(1, dims=1), logits)

    batches = Batches(Split(x, y), 128)
    ev = PGDAccuracy(linf={"eps": "1/255", "alpha": "1/255", "steps": 1}, l2=None, losses=["ce"])
    with caplog.at_level("WARNING", logger="odex"):
        out = ev(OffData(), batches)
    assert out["test/pgd_linf_acc"].item() > out["test/pgd_clean_acc"].item()
    assert out["test/pgd_masking_flag"].item() == 1.0 and "> clean accuracy" in caplog.text



class NaNBackward(torch.autograd.Function):
    """Identity forward, NaN gradient backward: an unstable solve's gradient, for the test."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))


def test_a_nan_input_gradient_is_flagged_and_moves_nothing(digits_mlp, caplog):
    model, x, y = digits_mlp
    nan_model = nn.Sequential(model, nn.Identity())
    nan_model.forward = lambda inp: NaNBackward.apply(model(inp))
    adv = pgd(nan_model, x, y, eps=0.1, alpha=0.025, steps=3, random_start=False, loss="dlr")
    assert torch.equal(adv, x)                    # finite, in the ball: no step where no direction
    ev = PGDAccuracy(linf={"eps": 0.1, "alpha": 0.025, "steps": 3}, l2=None)
    with caplog.at_level("WARNING", logger="odex"):
        out = ev(nan_model, Batches(Split(x, y), 128))
    assert out["test/pgd_zero_grad"].item() == 1.0 and out["test/pgd_masking_flag"].item() == 1.0
    assert "not finite" in caplog.text
