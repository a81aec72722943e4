"""eval=autoattack, eval=square, eval=transfer: parity with torchattacks 3.5.1 (the real package,
installed --no-deps by the dev setup), soundness against CPL's certificate, AutoAttack <= PGD, the
masking flag on gradient-masking models, and the one-line refusals of bad settings."""
from __future__ import annotations

import pytest
import torch
from conftest import TINY, read_metrics, train_in_process
from digits_mlp import digits_mlp_and_correct, predict as _predict
from torch import nn

from odex.data.batches import Batches
from odex.data.bundle import Split
from odex.errors import ConfigError
from odex.evaluate.apgd import apgd
from odex.evaluate.attacks import attack_mode, pgd
from odex.evaluate.autoattack import AutoAttackAccuracy, SquareAccuracy, _apgd_t
from odex.evaluate.evaluators import PGDAccuracy, evaluate
from odex.evaluate.fab import fab_t
from odex.evaluate.square import square
from odex.evaluate.transfer import SolverTransfer
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver

# torchattacks 3.5.1 imports without requests (its only use of the pinned package is its setup.py):
# the Makefile's install target adds it with --no-deps. Skipped only where that step was not run.
torchattacks = pytest.importorskip("torchattacks", reason="the oracle: pip install --no-deps torchattacks==3.5.1")


@pytest.fixture(scope="module")
def mlp():
    """A small MLP trained for a second on the digits; the clean-correct test images."""
    return digits_mlp_and_correct()


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.3)])
def test_apgd_ce_matches_torchattacks(mlp, norm, eps):
    model, _, _, x, y = mlp
    ref = torchattacks.APGD(model, norm=norm.capitalize() if norm == "l2" else "Linf", eps=eps, steps=20,
                            seed=3, loss="ce")(x, y)
    with attack_mode(model):
        adv, correct = apgd(model, x, y, eps=eps, norm=norm, steps=20, generator=torch.Generator().manual_seed(3))
    broken = ~correct
    assert 0 < broken.sum() < len(y)                          # the comparison means something
    # torchattacks returns the clean image where the attack failed, the adversarial one where it broke
    assert torch.equal(ref[~broken], x[~broken])
    assert (ref[broken] - adv[broken]).abs().max().item() <= 1e-6
    assert torch.equal(_predict(model, ref), _predict(model, torch.where(broken[:, None, None, None], adv, x)))


def test_apgd_t_matches_torchattacks(mlp):
    model, _, _, x, y = mlp
    eps = 4 / 255
    ref = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=20, seed=3, n_classes=10)(x, y)

    class Ev:
        pass

    ev = Ev()
    ev.eps, ev.norm, ev.steps, ev.targets, ev.seed = eps, "linf", 20, 9, 3
    with attack_mode(model):
        ours = _apgd_t(ev, model, x, y)
    pr, po = _predict(model, ref), _predict(model, ours)
    assert (pr != y).sum() > 0 and torch.equal(pr, po)
    assert (ref - ours).abs().max().item() <= 1e-6


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.3)])
def test_square_matches_torchattacks_robust_accuracy(mlp, norm, eps):
    """A random search in our own words (other random draws): the same robust accuracy within
    3 points on the ~350 digits, 1,000 queries, both at least 2 points below clean."""
    model, _, _, x, y = mlp
    ref = torchattacks.Square(model, norm="Linf" if norm == "linf" else "L2", eps=eps, n_queries=1000, seed=0)(x, y)
    with attack_mode(model):
        ours = square(model, x, y, eps=eps, norm=norm, queries=1000, seed=0)
    acc_ref = (_predict(model, ref) == y).float().mean().item()
    acc_ours = (_predict(model, ours) == y).float().mean().item()
    assert acc_ours == pytest.approx(acc_ref, abs=0.03)
    assert acc_ours < 0.98 and acc_ref < 0.98
    d = (ours - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all() and ours.min() >= 0 and ours.max() <= 1


@pytest.mark.parametrize("label", ["18/255", "36/255"])
def test_no_attack_breaks_a_certified_image(trained_cpl, label):
    net, x, y = trained_cpl
    x, y = x[:120], y[:120]
    eps = int(label.split("/")[0]) / 255
    with torch.no_grad():
        logits = net(x)
        certified = (logits.argmax(1) == y) & (net.certified_radius(logits) > eps)
    assert certified.sum() > 10
    with attack_mode(net):
        advs = {"pgd": pgd(net, x, y, eps=eps, alpha=eps / 4, steps=20, norm="l2", loss="dlr"),
                "apgd_ce": apgd(net, x, y, eps=eps, norm="l2", steps=20)[0],
                "fab_t": fab_t(net, x, y, eps=eps, norm="l2", steps=20)[0],
                "square": square(net, x, y, eps=eps, norm="l2", queries=300)}
    batches = Batches(Split(x, y), 60)
    cert_acc = certified.float().mean().item()
    for name, adv in advs.items():
        assert torch.equal(_predict(net, adv)[certified], y[certified]), name
    aa = AutoAttackAccuracy(norm="l2", eps=label, steps=20, targets=3, queries=200, limit=None)(net, batches)
    sq = SquareAccuracy(norm="l2", eps=label, queries=300, limit=None)(net, batches)
    assert aa["test/autoattack_l2_acc"].item() >= cert_acc and sq["test/square_l2_acc"].item() >= cert_acc
    assert aa["test/autoattack_l2_acc"].item() < aa["test/autoattack_clean_acc"].item()   # it attacks


def test_autoattack_is_at_most_pgd_on_the_default_model(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "eval=[clean,pgd,autoattack]", "eval.pgd.l2=null",
                                          "eval.pgd.limit=64", "eval.autoattack.limit=64", "eval.autoattack.steps=10",
                                          "eval.autoattack.targets=3", "eval.autoattack.queries=100"])
    assert summary["status"] == "completed"
    (row,) = read_metrics(tmp_path)
    assert row["test/autoattack_linf_acc"] <= row["test/pgd_linf_acc"] <= row["test/pgd_clean_acc"]
    assert row["test/autoattack_clean_acc"] == row["test/pgd_clean_acc"]
    assert row["test/autoattack_linf_acc"] < row["test/autoattack_clean_acc"]


class Quantised(nn.Module):
    """Input quantisation (a classic masking defence): the input gradient is exactly zero."""

    def __init__(self, model: nn.Module, levels: int = 8):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


def test_square_finds_what_pgd_misses_and_the_flag_fires(mlp, caplog):
    model, x, y, _, _ = mlp
    masked = Quantised(model)
    batches = Batches(Split(x, y), 120)
    # PGD's own checks off (zero-gradient share, larger radius): only Square can raise the flag
    pgd_ev = PGDAccuracy(linf={"eps": 0.1, "alpha": 0.025, "steps": 10}, random_start=False,
                         larger_radius=None, zero_grad_share=1.0, limit=240)
    alone = evaluate({"pgd": pgd_ev}, masked, batches)
    assert alone["test/pgd_masking_flag"].item() == 0.0
    with caplog.at_level("WARNING", logger="odex"):
        both = evaluate({"pgd": pgd_ev, "square": SquareAccuracy(eps=0.1, queries=300, limit=240)}, masked, batches)
    pgd_acc, sq_acc = both["test/pgd_linf_acc"].item(), both["test/square_linf_acc"].item()
    assert pgd_acc == both["test/pgd_clean_acc"].item()          # PGD moves nothing
    assert sq_acc < pgd_acc - 0.2 and both["test/square_linf_gap"].item() == pytest.approx(pgd_acc - sq_acc)
    assert both["test/pgd_masking_flag"].item() == 1.0 and "eval=square: possible gradient masking" in caplog.text
    # on the plain model Square is the weaker attack: no flag
    plain = evaluate({"pgd": pgd_ev, "square": SquareAccuracy(eps=0.1, queries=300, limit=240)}, model, batches)
    assert plain["test/square_linf_gap"].item() < 0 and plain["test/pgd_masking_flag"].item() == 0.0
    # and AutoAttack's Square stage breaks what its APGD left (APGD is blind here)
    aa = AutoAttackAccuracy(eps=0.1, steps=10, targets=2, queries=300, limit=240)(masked, batches)
    assert aa["test/autoattack_linf_masking_flag"].item() == 1.0


class NaNBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))


class Still(nn.Module):
    """dz/dt = 0: the solve returns its input, whatever the solver."""

    def forward(self, t, z):
        return torch.zeros_like(z)


class AdaptiveMasked(nn.Module):
    """A model whose gradient is NaN when its ODE block integrates with an adaptive solver and
    exact with a fixed grid: robustness that belongs to the solver, for the audit."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.block = ODEBlock(Still(), Solver("dopri5"), "direct")

    def forward(self, x):
        logits = self.model(self.block(x.flatten(1)).view_as(x))
        return NaNBackward.apply(logits) if self.block.solver.adaptive else logits


def test_transfer_audit_flags_robustness_under_the_own_solver_only(mlp, caplog):
    model, x, y, _, _ = mlp
    batches = Batches(Split(x[:120], y[:120]), 120)
    audit = SolverTransfer(solvers={"train": None, "rk4": {"method": "rk4", "steps": 2}}, eps=0.1, alpha=0.025,
                           steps=10, limit=None)
    pgd_ev = PGDAccuracy(linf={"eps": 0.1, "alpha": 0.025, "steps": 10}, l2=None, limit=None,
                         larger_radius=None, zero_grad_share=1.0)
    with caplog.at_level("WARNING", logger="odex"):
        out = evaluate({"pgd": pgd_ev, "transfer": audit}, AdaptiveMasked(model), batches)
    acc = lambda f, t: out[f"test/transfer_acc@{f}->{t}"].item()       # noqa: E731
    clean = out["test/transfer_clean_acc@train"].item()
    assert clean == out["test/transfer_clean_acc@rk4"].item() > 0.85
    assert acc("train", "train") == pytest.approx(out["test/pgd_linf_acc"].item())   # PGD's own figure
    assert acc("train", "train") >= clean - 0.05                         # NaN gradients: PGD is blind
    assert acc("rk4", "train") < clean - 0.3 and acc("rk4", "rk4") < clean - 0.3
    assert out["test/transfer_masking_flag"].item() == 1.0 and out["test/pgd_masking_flag"].item() == 1.0
    assert "eval=transfer: possible gradient masking" in caplog.text
    # the same weights without the masking: both settings agree, no flag
    plain = AdaptiveMasked(model)
    plain.forward = lambda inp: model(plain.block(inp.flatten(1)).view_as(inp))
    out = SolverTransfer(solvers={"train": None, "rk4": {"method": "rk4", "steps": 2}}, eps=0.1, alpha=0.025,
                         steps=10, limit=None)(plain, batches)
    assert out["test/transfer_acc@rk4->train"].item() == out["test/transfer_acc@train->train"].item() < clean - 0.3
    assert out["test/transfer_masking_flag"].item() == 0.0


def test_bad_settings_are_refused_in_one_line():
    from odex.config import validate
    from conftest import compose_cfg

    cases = {
        ("eval=[clean,autoattack]", "eval.autoattack.eps=-0.1"): "eval.autoattack.eps=-0.1: must be a radius >= 0",
        ("eval=[clean,autoattack]", "eval.autoattack.norm=l1"): "eval.autoattack.norm=l1: must be one of linf, l2",
        ("eval=[clean,square]", "eval.square.queries=0"): "eval.square.queries=0: must be an integer >= 1",
        ("eval=[clean,autoattack]", "dataset=spheres"): "eval=autoattack: attacks pixels in [0, 1]",
        ("eval=[clean,transfer]", "dataset=spheres"): "eval=transfer: attacks pixels in [0, 1]",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError) as e:
            validate(compose_cfg(overrides))
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="distinct names from .*'fab_t'"):   # FAB-T is targeted only
        AutoAttackAccuracy(attacks=["apgd_ce", "fab"])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):     # custom data outside the pixel range, at run time
        SquareAccuracy(queries=1)(nn.Flatten(), Batches(Split(torch.full((2, 1, 4, 4), 2.0), torch.zeros(2, dtype=torch.long)), 2))


def test_apgd_takes_no_step_where_the_gradient_is_nan(mlp):
    """LyaNet's gradients through its solve are NaN: APGD must not turn the images into NaN (which
    a model may misclassify, counting as a break that is no adversarial image)."""
    model, _, _, x, y = mlp

    class NaNGrad(nn.Module):
        def forward(self, inp):
            return NaNBackward.apply(model(inp))

    with attack_mode(model):
        adv, correct = apgd(NaNGrad(), x, y, eps=0.1, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(adv).all() and (adv - x).abs().max() <= 0.1 + 1e-6
    # the random start alone breaks at most a few images
    assert correct.float().mean() > 0.9
