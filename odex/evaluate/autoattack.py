"""eval=autoattack and eval=square: robust accuracy under Croce & Hein's AutoAttack (ICML 2020)
and under the gradient-free Square attack alone (Andriushchenko et al., ECCV 2020).

AutoAttack runs its `attacks` one after the other, each on the images no earlier one broke (the
standard set: APGD-CE, APGD-T, FAB-T, Square: apgd.py, fab.py, square.py). A gradient-free attack
that finds clearly more errors than the gradient attacks means the gradients mislead (Carlini et al.
2019): `<prefix>/autoattack_<norm>_masking_flag` is 1 when Square breaks more than `masking_gap` of
the examples after APGD; eval=square, beside eval=pgd, logs `<prefix>/square_<norm>_gap` and past
`masking_gap` raises `<prefix>/pgd_masking_flag` too.
The attacks are our own code, not a dependency on torchattacks: its package pins requests~=2.25,
which would downgrade wandb's stack; the tests check them against it, installed --no-deps.
Design notes: docs/design-notes.md, "odex/evaluate/autoattack.py" (the budgets, pixels, solvers).
"""
from __future__ import annotations

import logging
import time

import torch
from torch import nn

from odex.errors import ConfigError
from odex.evaluate.apgd import apgd
from odex.evaluate.attacks import attack_mode, classifies
from odex.evaluate.evaluators import first_examples, parse_eps
from odex.evaluate.fab import fab_t
from odex.evaluate.square import square
from odex.ode.block import solver_changed

log = logging.getLogger("odex")


def check_pixels(chosen, what: str) -> None:
    """Refuse data outside [0, 1]: the attacks clip to the pixel range (one read-back)."""
    lo = torch.stack([x.min() for x, _ in chosen]).min().item()
    hi = torch.stack([x.max() for x, _ in chosen]).max().item()
    if lo < 0 or hi > 1:
        raise ConfigError(f"{what} attacks pixels in [0, 1]; this data ranges over [{lo:.3g}, {hi:.3g}] "
                          f"(normalise inside the model, not in the data)")


def raise_flag(out: dict, prefix: str, reason: str, what: str) -> None:
    """Set eval=pgd's masking flag (when eval=pgd ran) and say why."""
    key = f"{prefix}/pgd_masking_flag"
    if key in out:
        out[key] = torch.ones_like(out[key])
    log.warning("%s: possible gradient masking (%s): %s", what, prefix, reason)


class _PixelAttack:
    """What eval=autoattack and eval=square share: the examples, the radius, the attack solver."""

    test_only = True        # thousands of forward passes: not on the validation part
    name = ""

    def __init__(self, norm: str, eps, limit: int | None, seed: int, solver: dict | None,
                 every: int | None, masking_gap: float):
        self.norm, (self.eps, self.eps_label) = norm, parse_eps(eps)
        self.limit, self.seed, self.every, self.masking_gap = limit, seed, every, masking_gap
        self.solver = None if solver is None else dict(solver)     # its keys: odex/schema.py EvalSolver

    def _prepare(self, model, batches):
        chosen = first_examples(batches, self.limit)
        if not chosen:
            return None, None
        check_pixels(chosen, f"eval={self.name}")
        clean = [classifies(model, x, y) for x, y in chosen]
        return chosen, clean


# The attacks of the ensemble: (evaluator, model, images, labels) -> adversarial images. Each gets
# the images no earlier attack broke, and a generator seeded with `seed` (as torchattacks seeds each
# attack's call), so a batch's result does not depend on what ran before it.

def _apgd_ce(ev, model, x, y):
    g = torch.Generator(device=x.device).manual_seed(ev.seed)
    return apgd(model, x, y, eps=ev.eps, norm=ev.norm, steps=ev.steps, loss="ce", generator=g)[0]


def _per_target(ev, model, x, y, classes: int, attack):
    """One run of `attack(x, y, rank) -> (adv, still_correct)` per target class (ranks 2..targets + 1
    of the clean logits), each on the images the earlier targets left correct."""
    adv_all = x.clone()
    alive = torch.ones_like(y, dtype=torch.bool)
    for rank in range(2, min(ev.targets, classes - 1) + 2):
        idx = alive.nonzero()[:, 0]              # one read-back per target class
        if len(idx) == 0:
            break
        adv, correct = attack(x[idx], y[idx], rank)
        adv_all[idx[~correct]] = adv[~correct]
        alive[idx[~correct]] = False
    return adv_all


def _apgd_t(ev, model, x, y):
    """APGD with the targeted DLR loss per target class, the generator seeded once for all of them
    (torchattacks' APGDT)."""
    g = torch.Generator(device=x.device).manual_seed(ev.seed)
    classes = _classes(model, x, 4, "apgd_t's targeted DLR loss")
    return _per_target(ev, model, x, y, classes, lambda xs, ys, rank: apgd(
        model, xs, ys, eps=ev.eps, norm=ev.norm, steps=ev.steps, loss="dlr_t", target_rank=rank, generator=g))


def _classes(model, x, need: int, why: str) -> int:
    """The number of classes of the model's output, refused below `need`."""
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    if classes < need:
        raise ConfigError(f"eval.autoattack: {why} needs >= {need} classes, the data has {classes}")
    return classes


def _fab_t(ev, model, x, y):
    """FAB-T per target class; an image counts as broken only within eps."""
    classes = _classes(model, x, 2, "fab_t (a target class besides the true one)")
    return _per_target(ev, model, x, y, classes, lambda xs, ys, rank: fab_t(
        model, xs, ys, eps=ev.eps, norm=ev.norm, steps=ev.steps, target_rank=rank))


def _square(ev, model, x, y):
    return square(model, x, y, eps=ev.eps, norm=ev.norm, queries=ev.queries, p_init=ev.p_init, seed=ev.seed)


STAGES = {"apgd_ce": _apgd_ce, "apgd_t": _apgd_t, "fab_t": _fab_t, "square": _square}


class AutoAttackAccuracy(_PixelAttack):
    """Robust accuracy under AutoAttack's attacks in `attacks` (in that order, each on the survivors
    of the earlier ones): `<prefix>/autoattack_<norm>_acc`, and after each attack
    `<prefix>/autoattack_<norm>_acc_<attack>` (AutoAttack's per-attack report); the clean accuracy
    of the attacked examples `<prefix>/autoattack_clean_acc`, their number `<prefix>/autoattack_n`,
    the wall time, the budget (`<prefix>/autoattack_steps`, `_targets`, `_square_queries`), and the
    masking flag (module docstring). `limit`: the first N test images (null: all)."""

    name = "autoattack"

    def __init__(self, norm: str = "linf", eps="8/255", attacks=("apgd_ce", "apgd_t", "fab_t", "square"),
                 steps: int = 100, targets: int = 9, queries: int = 5000, p_init: float = 0.8,
                 limit: int | None = 1000, seed: int = 0, solver: dict | None = None,
                 every: int | None = None, masking_gap: float = 0.03):
        super().__init__(norm, eps, limit, seed, solver, every, masking_gap)
        self.attacks = [attacks] if isinstance(attacks, str) else list(attacks)
        unknown = [a for a in self.attacks if a not in STAGES]
        if not self.attacks or unknown or len(set(self.attacks)) < len(self.attacks):
            raise ConfigError(f"eval.autoattack.attacks must be distinct names from {sorted(STAGES)}, "
                              f"got {self.attacks}")
        self.steps, self.targets, self.queries, self.p_init = int(steps), int(targets), int(queries), p_init
        self._reason = ""

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        chosen, clean = self._prepare(model, batches)
        if chosen is None:
            return {}
        t0 = time.perf_counter()
        counts = {}
        alive_all = []
        for (x, y), alive in zip(chosen, clean):
            for attack in self.attacks:
                idx = alive.nonzero()[:, 0]          # one read-back per attack and batch
                if len(idx):
                    with solver_changed(model, self.solver), attack_mode(model):
                        adv = STAGES[attack](self, model, x[idx], y[idx])
                    alive = alive.clone()
                    alive[idx] = classifies(model, adv, y[idx])     # by the model as it is (its own solver)
                counts[attack] = counts.get(attack, 0) + alive.sum()
            alive_all.append(alive)
        n = sum(len(y) for _, y in chosen)
        dev = clean[0].device
        norm = self.norm
        out = {f"{prefix}/autoattack_clean_acc": torch.stack([c.sum() for c in clean]).sum().float() / n,
               f"{prefix}/autoattack_{norm}_acc": torch.stack([a.sum() for a in alive_all]).sum().float() / n}
        for attack, c in counts.items():
            out[f"{prefix}/autoattack_{norm}_acc_{attack}"] = c.float() / n
        out[f"{prefix}/autoattack_{norm}_time_s"] = torch.tensor(time.perf_counter() - t0, device=dev)
        out[f"{prefix}/autoattack_n"] = torch.tensor(float(n), device=dev)
        # the budget beside the figure: below the standard 100 steps and 9 targets is a weaker attack
        out[f"{prefix}/autoattack_steps"] = torch.tensor(float(self.steps), device=dev)
        out[f"{prefix}/autoattack_targets"] = torch.tensor(float(self.targets), device=dev)
        flag = 0.0
        if "square" in self.attacks:
            out[f"{prefix}/autoattack_square_queries"] = torch.tensor(float(self.queries), device=dev)
            i = self.attacks.index("square")
            if i > 0:
                before = out[f"{prefix}/autoattack_{norm}_acc_{self.attacks[i - 1]}"].item()
                after = out[f"{prefix}/autoattack_{norm}_acc_square"].item()
                if before - after > self.masking_gap:
                    flag = 1.0
                    self._reason = (f"Square broke {before - after:.1%} of the examples that "
                                    f"{', '.join(self.attacks[:i])} left correct (> {self.masking_gap:.0%})")
        out[f"{prefix}/autoattack_{norm}_masking_flag"] = torch.tensor(flag, device=dev)
        return out

    def review(self, evaluators: dict, out: dict, prefix: str) -> None:
        """After all evaluators: a gradient-free break of what APGD left raises eval=pgd's flag too."""
        if out.get(f"{prefix}/autoattack_{self.norm}_masking_flag", torch.tensor(0.0)).item() == 1.0:
            raise_flag(out, prefix, self._reason, "eval=autoattack")


class SquareAccuracy(_PixelAttack):
    """Robust accuracy under the Square attack alone (gradient-free): `<prefix>/square_<norm>_acc`,
    the clean accuracy and number of the attacked examples (`<prefix>/square_clean_acc`,
    `<prefix>/square_n`), the budget `<prefix>/square_queries` and the wall time; beside eval=pgd
    on the same examples, norm and radius, `<prefix>/square_<norm>_gap` (PGD's accuracy minus
    Square's) and the masking flag (module docstring)."""

    name = "square"

    def __init__(self, norm: str = "linf", eps="8/255", queries: int = 5000, p_init: float = 0.8,
                 limit: int | None = 1000, seed: int = 0, solver: dict | None = None,
                 every: int | None = None, masking_gap: float = 0.03):
        super().__init__(norm, eps, limit, seed, solver, every, masking_gap)
        self.queries, self.p_init = int(queries), p_init

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        chosen, clean = self._prepare(model, batches)
        if chosen is None:
            return {}
        t0 = time.perf_counter()
        robust = []
        for (x, y), alive in zip(chosen, clean):
            with solver_changed(model, self.solver), attack_mode(model):
                adv = square(model, x, y, eps=self.eps, norm=self.norm, queries=self.queries,
                             p_init=self.p_init, seed=self.seed)
            robust.append(alive & classifies(model, adv, y))
        n = sum(len(y) for _, y in chosen)
        dev = clean[0].device
        return {f"{prefix}/square_clean_acc": torch.stack([c.sum() for c in clean]).sum().float() / n,
                f"{prefix}/square_{self.norm}_acc": torch.stack([r.sum() for r in robust]).sum().float() / n,
                f"{prefix}/square_{self.norm}_time_s": torch.tensor(time.perf_counter() - t0, device=dev),
                f"{prefix}/square_queries": torch.tensor(float(self.queries), device=dev),
                f"{prefix}/square_n": torch.tensor(float(n), device=dev)}

    def review(self, evaluators: dict, out: dict, prefix: str) -> None:
        """Beside eval=pgd (same examples, norm and radius): the gap, and the flag past masking_gap."""
        for ev in evaluators.values():
            figure = getattr(ev, "pgd_figure", None)
            key = figure(self.norm, self.eps, self.limit, prefix) if callable(figure) else None
            if key is None or key not in out:
                continue
            gap = out[key] - out[f"{prefix}/square_{self.norm}_acc"]
            out[f"{prefix}/square_{self.norm}_gap"] = gap
            if gap.item() > self.masking_gap:
                raise_flag(out, prefix, f"Square's {self.norm} accuracy is {gap.item():.1%} below PGD's "
                                        f"(> {self.masking_gap:.0%}) on the same examples", "eval=square")
            return
