"""Convex Potential Layer networks: 1-Lipschitz layers and networks, the power iteration and its
cache, sound certificates, the margin loss, the piecewise-linear schedule, the configs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg, read_metrics, read_summary, run_cli, train_in_process

from odex.evaluate.attacks import pgd
from odex.config import build, check_composed
from odex.data import DataInfo
from odex.errors import ConfigError
from odex.evaluate.evaluators import CertifiedAccuracy, CleanAccuracy, evaluate
from odex.models.cpl import (ConvexPotentialConv, ConvexPotentialDense, CPLNetwork,
                             NormalizedLinearHead, TruncHead)
from odex.objectives.classification import Margin
from odex.optim.schedules import PiecewiseLinear

CPL_TINY = ["model=cpl", "model.size=tiny", "objective=margin", "dataset.limit_train=256",
            "dataset.limit_test=128", "trainer.max_epochs=1", "trainer.progress=false"]


def _info(shape=(1, 8, 8), classes=10, std=0.3) -> DataInfo:
    return DataInfo("test", shape, classes, (0.5,) * shape[0], (std,) * shape[0])


def _max_ratio(f, x, y) -> float:
    with torch.no_grad():
        num = (f(x) - f(y)).flatten(1).norm(dim=1)
        den = (x - y).flatten(1).norm(dim=1)
    return (num / den).max().item()


def _random_pairs(shape, n, generator):
    """Pairs at every scale: far apart, close, and very close (where the ReLU pattern is shared)."""
    x = torch.rand((3 * n, *shape), generator=generator, dtype=torch.float64)
    d = torch.randn((3 * n, *shape), generator=generator, dtype=torch.float64)
    d = d / d.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
    scale = torch.cat([torch.full((n,), s, dtype=torch.float64) for s in (3.0, 0.1, 1e-3)])
    return x, x + d * scale.view(-1, *[1] * len(shape))


def _top_pairs(layer, x0, n=16):
    """Pairs along the top right-singular vector of W around points where every unit is active:
    there the layer is x -> x - h W^T W x + const, whose gain is exactly |1 - h sigma^2| ~ 1, so a
    sigma under-estimated by 1% would show as a ratio near 1.04."""
    v = layer.u / layer.u.norm()
    t = torch.linspace(1e-3, 0.05, n, dtype=torch.float64).view(-1, *[1] * (v.dim() - 1))
    return x0.expand(n, *x0.shape[1:]), x0 + t * v


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_layer_is_1_lipschitz_after_convergence(kind):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if kind == "conv":
        layer, shape = ConvexPotentialConv(4, 5, (6, 6), eval_iters=2000), (4, 6, 6)
    else:
        layer, shape = ConvexPotentialDense(12, 20, eval_iters=2000), (12,)
    layer = layer.double().eval()
    x, y = _random_pairs(shape, 200, g)
    assert _max_ratio(layer, x, y) <= 1 + 1e-4

    # The tight direction: make every unit active (large bias), move along the top singular vector.
    lin = layer.conv if kind == "conv" else layer.linear
    with torch.no_grad():
        lin.bias.fill_(1e3)
    xs, ys = _top_pairs(layer, x[:1])
    ratio = _max_ratio(layer, xs, ys)
    assert 1 - 1e-3 <= ratio <= 1 + 1e-4
    # and the check can fail: a 1% smaller sigma makes the step too long
    sigma = layer._sigma_eval
    layer._sigma_eval = sigma * 0.99
    assert _max_ratio(layer, xs, ys) > 1.03
    layer._sigma_eval = sigma


@pytest.mark.parametrize("last", ["trunc", "lln"])
def test_network_is_lipschitz_with_the_normalisation_constant(last):
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    for norm_input in (False, True):
        net = CPLNetwork(_info((2, 8, 8), std=0.25), size="tiny", last=last, norm_input=norm_input,
                         eval_iters=500).double().eval()
        assert net.lipschitz == (4.0 if norm_input else 1.0)
        x, y = _random_pairs((2, 8, 8), 64, g)
        assert _max_ratio(net, x, y) <= net.lipschitz * (1 + 1e-4)


def test_power_iteration_finds_the_operator_norm():
    torch.manual_seed(2)
    dense = ConvexPotentialDense(10, 7, eval_iters=500).double().eval()
    dense(torch.zeros(1, 10, dtype=torch.float64))
    assert dense._sigma_eval.item() == pytest.approx(torch.linalg.matrix_norm(dense.linear.weight, 2).item(), rel=1e-8)

    conv = ConvexPotentialConv(2, 3, (4, 4), eval_iters=500).double().eval()
    conv(torch.zeros(1, 2, 4, 4, dtype=torch.float64))
    # the 3x3 zero-padded convolution on 2x4x4 images as an explicit 48 x 32 matrix
    basis = torch.eye(32, dtype=torch.float64).view(32, 2, 4, 4)
    matrix = F.conv2d(basis, conv.conv.weight, padding=1).flatten(1).T
    assert conv._sigma_eval.item() == pytest.approx(torch.linalg.matrix_norm(matrix, 2).item(), rel=1e-8)
    # and W^T is the adjoint of W: <W u, v> = <u, W^T v>
    u, v = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(1, 3, 4, 4, dtype=torch.float64)
    assert (conv.op(u) * v).sum().item() == pytest.approx((u * conv.adj(v)).sum().item(), rel=1e-10)


def test_training_forward_matches_the_formula_with_gradient_through_sigma():
    torch.manual_seed(3)
    layer = ConvexPotentialDense(6, 5).double().train()
    x = torch.randn(4, 6, dtype=torch.float64)
    u0 = layer.u.clone()
    out = layer(x)
    out.square().sum().backward()

    # by hand: one power iteration from u0, then z = x - 2 / (||W u||^2 + eps) W^T relu(W x + b)
    W = layer.linear.weight.detach().clone().requires_grad_(True)
    b = layer.linear.bias.detach()
    v = W.detach() @ u0[0]
    u = W.detach().T @ (v / v.norm())
    u = u / u.norm()
    assert torch.allclose(layer.u[0], u)
    sigma = (W @ u).norm()
    ref = x - 2 / (sigma ** 2 + 1e-4) * F.relu(x @ W.T + b) @ W
    ref.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(layer.linear.weight.grad, W.grad, atol=1e-10)


def test_eval_estimate_is_cached_until_training_or_a_weight_change():
    torch.manual_seed(4)
    layer = ConvexPotentialDense(6, 5, eval_iters=50).eval()
    x = torch.randn(2, 6)
    layer(x)
    u1 = layer.u.clone()
    layer(x)
    assert torch.equal(layer.u, u1)               # cached: no iteration on the second call
    with torch.no_grad():
        layer.linear.weight.mul_(2.0)              # an optimizer step changes the weight in place
    layer(x)
    assert layer._sigma_eval.item() == pytest.approx(torch.linalg.matrix_norm(layer.linear.weight, 2).item(), rel=1e-4)
    layer.train()(x)
    assert layer._sigma_eval is None              # a training forward drops the cache
    assert "u" in layer.state_dict()
    other = ConvexPotentialDense(6, 5)
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other.u, layer.u)


def test_heads_radius_is_the_distance_to_the_decision_boundary():
    torch.manual_seed(5)
    h = torch.randn(64, 12, dtype=torch.float64)
    for head in (TruncHead(12, 5), NormalizedLinearHead(12, 5).double()):
        with torch.no_grad():
            z = head(h)
            r = head.radius(z)
            top = z.argmax(1)
            # the closest competitor j and the direction that moves z_j - z_top fastest
            w = torch.eye(12, dtype=torch.float64)[:5] if isinstance(head, TruncHead) else head.unit_rows()
            diff = w[None, :, :] - w[top][:, None, :]                          # (N, K, F)
            gaps = z.gather(1, top[:, None]) - z
            ratio = (gaps / diff.norm(dim=2).clamp_min(1e-12)).masked_fill(F.one_hot(top, 5).bool(), math.inf)
            j = ratio.argmin(1)
            d = diff[torch.arange(64), j]
            d = d / d.norm(dim=1, keepdim=True)
            assert torch.allclose(r, ratio.min(1).values)
            inside = head(h + 0.999 * r[:, None] * d).argmax(1)
            beyond = head(h + 1.001 * r[:, None] * d).argmax(1)
        assert torch.equal(inside, top)
        assert (beyond != top).all()


def test_certified_radii_survive_a_strong_attack_per_example(trained_cpl):
    """Each image of a trained CPL net attacked at its own sound certified radius, with both
    losses and several restarts, keeps its class; at 3 times the radius some fall (the attack is
    strong enough to matter)."""
    net, x, y = trained_cpl
    with torch.no_grad():
        logits = net(x)
        radius = net.certified_radius(logits).float()
    keep = (logits.argmax(1) == y) & (radius > 0.05)
    assert keep.sum() >= 50
    xs, ys, r = x[keep], y[keep], radius[keep]
    g = torch.Generator().manual_seed(0)
    for loss in ("ce", "dlr"):
        for _ in range(3):
            adv = pgd(net, xs, ys, eps=r, alpha=r / 4, steps=30, norm="l2", loss=loss, generator=g)
            assert ((adv - xs).flatten(1).norm(dim=1) <= r * (1 + 1e-5)).all()
            with torch.no_grad():
                assert (net(adv).argmax(1) == ys).all()
    adv3 = pgd(net, xs, ys, eps=3 * r, alpha=3 * r / 4, steps=30, norm="l2", loss="dlr", generator=g)
    with torch.no_grad():
        assert (net(adv3).argmax(1) != ys).any()


def test_certified_accuracy_falls_with_eps_and_stays_below_clean(trained_cpl):
    net, x, y = trained_cpl
    from odex.data.batches import Batches
    from odex.data.bundle import Split

    batches = Batches(Split(x, y), 100)
    out = evaluate({"clean": CleanAccuracy(), "certified": CertifiedAccuracy(["0", "36/255", 0.5, "108/255"])},
                   net, batches)
    acc = [out[f"test/cert_acc@{e}"].item() for e in ("0", "36/255", "0.5", "108/255")]
    assert acc[0] == pytest.approx(out["test/acc"].item())
    assert out["test/acc"].item() >= acc[1] >= acc[2] >= acc[3]
    assert acc[1] > acc[3]
    # the paper's figure (power iteration) beside the sound one, never below it
    paper = [out[f"test/cert_acc_power_iter@{e}"].item() for e in ("0", "36/255", "0.5", "108/255")]
    assert all(p >= a for p, a in zip(paper, acc)) and paper[0] == acc[0]
    assert out["test/lipschitz_bound"].item() == pytest.approx(net.lipschitz_bound().item(), rel=1e-6)
    assert out["test/lipschitz_bound"].item() >= 1.0


def test_certified_evaluator_refuses_a_model_without_certificate():
    from odex.models.augmented import AugmentedNODE
    from odex.ode.solver import Solver

    node = AugmentedNODE(_info(), Solver("euler", steps=2), channels=4, hidden=4)
    batches = [(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))]
    with pytest.raises(ConfigError, match="eval=certified needs a model with a Lipschitz certificate"):
        CertifiedAccuracy()(node, batches)


def test_margin_loss_is_the_multiclass_hinge():
    z = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (8,))
    net = torch.nn.Identity()
    step = Margin(0.7)(net, z, y)
    zy = z.gather(1, y[:, None])
    hinge = (0.7 - zy + z).clamp_min(0).masked_fill(F.one_hot(y, 5).bool(), 0).sum(1) / 5
    assert step.loss.item() == pytest.approx(hinge.mean().item(), rel=1e-12)


def test_piecewise_linear_schedule():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p1]}, {"params": [p2], "lr": 2e-3}], lr=1e-3)
    sched = PiecewiseLinear(opt, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expect = {0: 0.0, 20: 0.5e-3, 40: 1e-3, 60: 0.525e-3, 80: 0.05e-3, 90: 0.025e-3}
    for k, v in expect.items():
        assert lrs[k][0] == pytest.approx(v, abs=1e-12)
        assert lrs[k][1] == pytest.approx(2 * v, abs=1e-12)      # every group, from its own lr
    assert lrs[99][0] == pytest.approx(1e-3 * 0.05 * 0.01 / 0.2)     # the last step is still a step
    state = sched.state_dict()
    again = PiecewiseLinear(opt, total_steps=100)
    again.load_state_dict(state)
    assert again.last_epoch == 100
    with pytest.raises(ConfigError):       # refused before the run (odex.config)
        check_composed("train", ["schedule=piecewise_linear", "schedule.scheduler.points=[0,0.5]",
                                 "schedule.scheduler.factors=[0,1,0]"])


def test_size_presets_have_the_published_parameter_counts():
    info = _info((3, 32, 32))
    with torch.device("meta"):
        counts = {s: sum(p.numel() for p in CPLNetwork(info, size=s).parameters()) for s in ("S", "M", "L", "XL")}
    assert {s: round(c / 1e6, 1) for s, c in counts.items()} == {"S": 41.3, "M": 78.7, "L": 118.2, "XL": 236.3}
    with pytest.raises(ConfigError, match="model.size"):     # refused before the run (odex/schema.py)
        check_composed("train", ["dataset=cifar10", "model=cpl", "model.size=XXL"])
    with pytest.raises(ConfigError, match="trunc"):
        CPLNetwork(_info((1, 4, 4)), size="tiny", channels=2)


def test_experiments_compose_the_cpl_recipe():
    for name, classes in (("cpl_cifar10", "cifar10"), ("cpl_cifar100", "cifar100")):
        cfg = compose_cfg([f"experiment={name}"])
        assert cfg.model._target_ == "odex.models.cpl.CPLNetwork"
        assert cfg.objective._target_ == "odex.objectives.classification.Margin" and cfg.objective.margin == 0.7
        assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 0.0
        assert cfg.dataset._target_.endswith(classes) and cfg.dataset.batch_size == 256
        assert cfg.dataset.augment.pad_mode == "reflect" and cfg.dataset.augment.padding == 4
        assert cfg.schedule.interval == "step" and cfg.schedule.scheduler.factors == [0.0, 1.0, 0.05, 0.0]
        assert cfg.trainer.max_epochs == 200
        assert set(cfg.eval) == {"clean", "certified", "pgd"}
        pgd_eval = build(cfg.eval.pgd)
        assert pgd_eval.attacks["l2"] == {"eps": 36 / 255, "alpha": 7.2 / 255, "steps": 10}
        assert [e for e, _ in build(cfg.eval.certified).eps] == [36 / 255, 72 / 255, 108 / 255]


def test_train_cpl_with_all_evaluators_in_process(tmp_path):
    summary = train_in_process(tmp_path, [*CPL_TINY, "eval=[clean,pgd,certified]", "trainer.max_epochs=2",
                                          "eval.pgd.limit=64"])
    assert summary["status"] == "completed"
    first, last = read_metrics(tmp_path)
    assert "test/pgd_linf_acc" not in first                       # PGD only after the last epoch
    for key in ("test/acc", "test/pgd_linf_acc", "test/pgd_l2_acc", "test/pgd_linf_time_s",
                "test/cert_acc@36/255", "test/cert_acc@72/255", "test/cert_acc@108/255",
                "test/cert_acc_power_iter@36/255", "test/lipschitz_bound", "test/pgd_masking_flag",
                "test/pgd_l2_acc_dlr", "test/pgd_l2_acc_ce", "test/pgd_clean_acc"):
        assert key in last
    cert = [last[f"test/cert_acc@{e}/255"] for e in (36, 72, 108)]
    assert last["test/acc"] >= cert[0] >= cert[1] >= cert[2]


@pytest.mark.slow
def test_cli_trains_cpl_with_all_evaluators(tmp_path):
    proc = run_cli(tmp_path, "model=cpl", "model.size=tiny", "objective=margin", "eval=[clean,pgd,certified]",
                   "dataset.limit_train=256", "dataset.limit_test=128", "trainer.max_epochs=1",
                   "schedule=piecewise_linear")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "completed"
    for key in ("test/pgd_linf_acc", "test/pgd_l2_acc", "test/cert_acc@36/255", "test/cert_acc@108/255"):
        assert 0.0 <= summary[key] <= summary["test/acc"]


@pytest.mark.gpu
def test_cpl_with_all_evaluators_on_cuda(tmp_path):
    summary = train_in_process(tmp_path, [*CPL_TINY, "eval=[clean,pgd,certified]", "trainer.device=cuda",
                                          "schedule=piecewise_linear"])
    assert summary["status"] == "completed", summary["status"]
    (row,) = read_metrics(tmp_path)
    assert row["test/pgd_l2_acc"] <= row["test/acc"] and row["test/cert_acc@36/255"] <= row["test/acc"]


def test_full_fp32_turns_tf32_off_and_restores_it():
    from odex.ode.precision import full_fp32

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with full_fp32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
