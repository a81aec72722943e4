"""FAB-T (odex/evaluate/fab.py) against torchattacks 3.5.1 (installed --no-deps by the dev setup):
its hyperplane-and-box projections, its multi-targeted FAB on a small fixed model, and the
AutoAttack ensemble with FAB-T in the standard order."""
from __future__ import annotations

import pytest
import torch
from digits_mlp import digits_mlp_and_correct, predict as _predict

from odex.data.batches import Batches
from odex.data.bundle import Split
from odex.evaluate.attacks import attack_mode
from odex.evaluate.autoattack import AutoAttackAccuracy, _fab_t
from odex.evaluate.fab import project

torchattacks = pytest.importorskip("torchattacks", reason="the oracle: pip install --no-deps torchattacks==3.5.1")
from torchattacks.attacks.fab import projection_l2, projection_linf  # noqa: E402


@pytest.fixture(scope="module")
def mlp():
    model, _, _, x, y = digits_mlp_and_correct()
    return model, x, y


@pytest.mark.parametrize("norm,ref", [("linf", projection_linf), ("l2", projection_l2)])
def test_projection_matches_torchattacks(norm, ref):
    """Rows with zero weights, hyperplanes near, far and beyond the box: the same move (ours by
    sorting and a closed form, theirs by bisection), on the plane where it is reachable, in the box."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 64, generator=g)
    w = torch.randn(400, 64, generator=g)
    w[:, :6] = 0
    scale = torch.tensor([0.01, 0.3, 3.0, 30.0]).repeat_interleave(100)
    b = (w * x).sum(1) + scale * torch.randn(400, generator=g)
    d = project(x, w, b, norm)
    assert (d - ref(x, w.clone(), b.clone())).abs().max().item() < 1e-4
    gap = ((w * (x + d)).sum(1) - b).abs()
    assert (gap[:300] < 1e-4).all() and (gap[300:] > 1).any()       # reachable rows land on the plane
    assert (x + d).min() >= -1e-6 and (x + d).max() <= 1 + 1e-6 and (d[:, :6] == 0).all()


@pytest.mark.parametrize("norm,eps", [("linf", 6 / 255), ("l2", 0.5)])
def test_fab_t_matches_torchattacks(mlp, norm, eps):
    """torchattacks' FAB with multi_targeted=True (AutoAttack's FAB-T: one run from the clean image
    per target class, no random start, hence deterministic): the same images broken, the same
    adversarial predictions, images within 1e-4."""
    model, x, y = mlp
    ref = torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=20,
                           multi_targeted=True, n_classes=10)(x, y)

    class Ev:
        pass

    ev = Ev()
    ev.eps, ev.norm, ev.steps, ev.targets = eps, norm, 20, 9
    with attack_mode(model):
        ours = _fab_t(ev, model, x, y)
    pr, po = _predict(model, ref), _predict(model, ours)
    assert 0 < (pr != y).sum() < len(y) and torch.equal(pr, po)
    assert (ref - ours).abs().max().item() < 1e-4
    d = (ours - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-6).all()


def test_autoattack_standard_set_matches_torchattacks(mlp):
    """The standard order APGD-CE, APGD-T, FAB-T, Square against torchattacks' MultiAttack of the same
    four (its AutoAttack 'standard' with our budgets); FAB-T's own figure sits between APGD-T's and Square's."""
    model, x, y = mlp
    eps, steps, queries = 8 / 255, 10, 200
    ref = torchattacks.MultiAttack([
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, seed=0, loss="ce"),
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, seed=0, n_classes=10),
        torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, multi_targeted=True, n_classes=10),
        torchattacks.Square(model, norm="Linf", eps=eps, n_queries=queries, seed=0)])(x, y)
    out = AutoAttackAccuracy(eps=eps, steps=steps, queries=queries, limit=None)(model, Batches(Split(x, y), len(y)))
    assert out["test/autoattack_linf_acc"].item() == pytest.approx((_predict(model, ref) == y).float().mean().item(), abs=0.01)
    accs = [out[f"test/autoattack_linf_acc_{a}"].item() for a in ("apgd_ce", "apgd_t", "fab_t", "square")]
    assert 1.0 > accs[0] >= accs[1] >= accs[2] >= accs[3] == out["test/autoattack_linf_acc"].item()
    assert out["test/autoattack_square_queries"].item() == queries and out["test/autoattack_n"].item() == len(y)
