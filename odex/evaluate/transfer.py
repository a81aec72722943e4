"""eval=transfer: the solver-consistency audit. An ODE model's robustness may belong to its
integrator rather than to its weights: an adaptive step-size solver can give gradients that lead
nowhere (Huang et al., "Adversarial robustness of stabilized neural ODEs might be from obfuscated
gradients", 2020), and robustness that disappears when the same weights are integrated on a fixed
fine grid is gradient masking (Carlini et al. 2019).

For every named integration setting F in `solvers` (null: the model's own solver, the one it was
trained and is evaluated with; otherwise keys of conf/solver, as eval.pgd.solver), PGD
(odex.evaluate.attacks.pgd, every loss in `losses`) crafts adversarial images through F; they are
then judged under every setting T:

    <prefix>/transfer_acc@<F>-><T>   the fraction of the examples correct under T on every loss's
                                     image crafted under F (F = T: the white-box figure under T)
    <prefix>/transfer_clean_acc@<T>  the clean accuracy under T

`<prefix>/transfer_masking_flag` is 1 (with a warning line; eval=pgd's flag is raised too) when
robustness exists under the model's own solver only: when an attack crafted under another setting
breaks more than `gap` more of the examples under the model's own solver than the attack through
that solver does (transfer beats the white-box attack), or when the white-box accuracy under
another setting is more than `gap` below the one under the model's own solver.
"""
from __future__ import annotations

import logging
import re
import time

import torch
from torch import nn

from odex.errors import ConfigError
from odex.evaluate.attacks import classifies, pgd
from odex.evaluate.autoattack import check_pixels, raise_flag
from odex.evaluate.evaluators import first_examples, parse_eps
from odex.ode.block import solver_changed

log = logging.getLogger("odex")
OWN = "train"       # the name of the model's own setting in the default config (solver: null)


class SolverTransfer:
    """The transfer matrix of PGD images across integration settings (module docstring)."""

    test_only = True

    def __init__(self, solvers: dict | None = None, norm: str = "linf", eps="8/255", alpha="2/255",
                 steps: int = 10, losses=("ce", "dlr"), limit: int | None = 500, seed: int = 0,
                 gap: float = 0.05, every: int | None = None):
        # the keys' ranges and the one null setting: odex/schema.py SolverTransfer and odex.config,
        # checked before the run
        solvers = dict(solvers or {OWN: None})
        for name in solvers:
            if not re.fullmatch(r"[A-Za-z0-9_.]+", str(name)):
                raise ConfigError(f"eval.transfer.solvers: a setting's name is letters, digits, _ and ., got {name!r}")
        self.solvers = {str(k): None if v is None else dict(v) for k, v in solvers.items()}
        self.own = next(k for k, v in self.solvers.items() if v is None)
        self.losses = [losses] if isinstance(losses, str) else list(losses)
        self.norm, self.eps, self.alpha = norm, parse_eps(eps)[0], parse_eps(alpha)[0]
        self.steps, self.limit, self.seed, self.gap, self.every = int(steps), limit, seed, gap, every
        self._reasons: list[str] = []

    def _correct(self, model, setting, x, y) -> torch.Tensor:
        with solver_changed(model, self.solvers[setting]):
            return classifies(model, x, y)

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        chosen = first_examples(batches, self.limit)
        if not chosen:
            return {}
        check_pixels(chosen, "eval=transfer")
        t0 = time.perf_counter()
        names = list(self.solvers)
        clean = dict.fromkeys(names, 0)
        matrix = {(f, t): 0 for f in names for t in names}
        for x, y in chosen:
            for t in names:
                clean[t] = clean[t] + self._correct(model, t, x, y).sum()
            for f in names:
                alive = {t: torch.ones_like(y, dtype=torch.bool) for t in names}
                generator = torch.Generator(device=x.device).manual_seed(self.seed)
                for loss in self.losses:
                    with solver_changed(model, self.solvers[f]):
                        adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, norm=self.norm,
                                  loss=loss, generator=generator)
                    for t in names:
                        alive[t] &= self._correct(model, t, adv, y)
                for t in names:
                    matrix[f, t] = matrix[f, t] + alive[t].sum()
        n = sum(len(y) for _, y in chosen)
        out = {f"{prefix}/transfer_clean_acc@{t}": c.float() / n for t, c in clean.items()}
        out.update({f"{prefix}/transfer_acc@{f}->{t}": c.float() / n for (f, t), c in matrix.items()})
        dev = next(iter(out.values())).device
        out[f"{prefix}/transfer_time_s"] = torch.tensor(time.perf_counter() - t0, device=dev)
        host = {k: v.item() for k, v in out.items()}          # one read-back, after the attacks
        acc = lambda f, t: host[f"{prefix}/transfer_acc@{f}->{t}"]          # noqa: E731
        own = acc(self.own, self.own)
        self._reasons = []
        for other in names:
            if other == self.own:
                continue
            if own - acc(other, self.own) > self.gap:
                self._reasons.append(f"PGD crafted under {other} leaves {acc(other, self.own):.1%} correct under "
                                     f"the model's own solver, PGD through it {own:.1%}")
            if own - acc(other, other) > self.gap:
                self._reasons.append(f"white-box PGD under {other} leaves {acc(other, other):.1%} correct, "
                                     f"under the model's own solver {own:.1%}")
        out[f"{prefix}/transfer_masking_flag"] = torch.tensor(float(bool(self._reasons)), device=dev)
        return out

    def review(self, evaluators: dict, out: dict, prefix: str) -> None:
        """Robustness under the model's own solver only raises eval=pgd's flag too."""
        if self._reasons:
            raise_flag(out, prefix, "; ".join(self._reasons) + f" (gap > {self.gap:.0%})", "eval=transfer")
