"""What is measured on held-out data (conf/eval/): each evaluator maps (model, batches, prefix) to
a dict of device scalars named `<prefix>/<metric>`; the trainer reads them back once.

An evaluator with an `every` attribute runs only every `every` epochs (of those with a test
evaluation) and after the last one; `every: null` means after the last epoch only (expensive
attacks). Evaluators without it run at every evaluation.

Perturbation sizes may be written as fractions, `eps: 36/255` (YAML reads that as a string); the
metric names keep the written form: `test/cert_acc@36/255`, or `test/cert_acc@0.5` for `eps: 0.5`
(`@1.0` for `1.0`, `@1` for `1`).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import NORMS, attack_mode, pgd
from .errors import ConfigError
from .nfe import reset_nfe, total_nfe
from .ode_block import solver_changed
from .precision import full_fp32
from .solver import Solver


def parse_eps(value) -> tuple[float, str]:
    """A radius from the config (a number, or a quotient such as "8/255" or "7.2/255") and its label."""
    if isinstance(value, str):
        label = value.replace(" ", "")
        num, _, den = label.partition("/")
        try:
            eps = float(num) / float(den or 1)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"cannot read {value!r} as a radius (write 0.5 or 36/255)") from None
    else:
        eps = float(value)
        label = str(value)
    if not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"a radius must be finite and >= 0, got {value!r}")
    return eps, label


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CleanAccuracy:
    """Accuracy and mean cross-entropy on unperturbed inputs, and the mean forward NFE per batch
    of the solves (`<prefix>/nfe`, the inference cost)."""

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        was_training = model.training
        model.eval()
        reset_nfe(model)
        correct = loss = None
        n = 0
        with torch.no_grad():
            for x, y in batches:
                logits = model(x)
                c = (logits.argmax(1) == y).sum()
                l_ = F.cross_entropy(logits, y, reduction="sum")
                correct = c if correct is None else correct + c
                loss = l_ if loss is None else loss + l_
                n += len(y)
        model.train(was_training)
        out = {f"{prefix}/acc": correct.float() / n, f"{prefix}/loss": loss / n}
        nfe = total_nfe(model)
        if nfe is not None:
            out[f"{prefix}/nfe"] = nfe[0].float() / len(batches)
        return out


class PGDAccuracy:
    test_only = True       # an attack costs (steps + 1) evaluations: not on the validation part
    """Accuracy under PGD attacks (odex.attacks.pgd, torchattacks' semantics), one per norm:
    `<prefix>/pgd_linf_acc`, `<prefix>/pgd_l2_acc`, and each attack's wall time in seconds
    (`<prefix>/pgd_linf_time_s`, one device synchronisation per attack). `linf` / `l2` are
    {eps, alpha, steps} or null to skip that norm. The random starts come from a generator seeded
    with `seed` at every evaluation, so epochs are compared on the same random starts. `limit`
    attacks only the first N examples (whole batches).

    ODE models are attacked through their own solver and gradient method, or, with `solver` (keys
    of conf/solver, e.g. {method: rk4, steps: 8}), through that solver; the adversarial images are
    then judged by the model as it is, with its own solver."""

    def __init__(self, linf: dict | None = None, l2: dict | None = None, random_start: bool = True,
                 seed: int = 0, every: int | None = None, limit: int | None = None,
                 solver: dict | None = None):
        self.attacks: dict[str, dict] = {}
        for norm, spec in zip(NORMS, (linf, l2)):
            if spec is None:
                continue
            spec = dict(spec)
            unknown = set(spec) - {"eps", "alpha", "steps"}
            if unknown or "eps" not in spec or "alpha" not in spec:
                raise ConfigError(f"eval.pgd.{norm} takes eps, alpha and steps, got {sorted(spec)}")
            self.attacks[norm] = {"eps": parse_eps(spec["eps"])[0], "alpha": parse_eps(spec["alpha"])[0],
                                  "steps": int(spec.get("steps", 10))}
        if not self.attacks:
            raise ConfigError("eval=pgd with both eval.pgd.linf and eval.pgd.l2 null attacks nothing")
        if every is not None and every < 1:
            raise ConfigError(f"eval.pgd.every must be >= 1 or null, got {every}")
        self.random_start, self.seed, self.every, self.limit = random_start, seed, every, limit
        self.solver = None if solver is None else dict(solver)
        if self.solver is not None:     # unknown keys and bad values fail now, not after training
            if "t1" in self.solver:
                raise ConfigError("eval.pgd.solver cannot change t1 (it is part of the model)")
            try:
                replace(Solver(), **self.solver)
            except TypeError as e:
                raise ConfigError(f"eval.pgd.solver: {e}") from None

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for norm, spec in self.attacks.items():
            correct, n, generator, t0 = None, 0, None, time.perf_counter()
            for x, y in batches:
                if self.limit is not None and n >= self.limit:
                    break
                if generator is None:
                    generator = torch.Generator(device=x.device).manual_seed(self.seed)
                with solver_changed(model, self.solver):
                    adv = pgd(model, x, y, norm=norm, random_start=self.random_start, generator=generator, **spec)
                with attack_mode(model), torch.no_grad():
                    c = (model(adv).argmax(1) == y).sum()
                correct = c if correct is None else correct + c
                n += len(y)
            if correct is None:
                continue
            _sync(correct.device)
            out[f"{prefix}/pgd_{norm}_acc"] = correct.float() / n
            # on the device of the other metrics: the trainer reads them all back in one stack
            out[f"{prefix}/pgd_{norm}_time_s"] = torch.tensor(time.perf_counter() - t0, device=correct.device)
        return out


class CertifiedAccuracy:
    """Certified l2 accuracy: the fraction of examples classified correctly whose certified radius
    (the model's `certified_radius(logits)`, from its Lipschitz constant) exceeds eps, for each eps:
    `<prefix>/cert_acc@<eps as written>`. A model without a certificate is refused."""

    def __init__(self, eps=("36/255", "72/255", "108/255")):
        self.eps = [parse_eps(e) for e in eps]
        if not self.eps:
            raise ConfigError("eval.certified.eps is empty")

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        radius_of = getattr(model, "certified_radius", None)
        if not callable(radius_of):
            raise ConfigError(f"eval=certified needs a model with a Lipschitz certificate (model=cpl); "
                              f"{type(model).__name__} has none")
        was_training = model.training
        model.eval()
        counts, n = None, 0
        with torch.no_grad(), full_fp32():     # margins read from TF32 logits could overstate a radius
            for x, y in batches:
                logits = model(x)
                radius = radius_of(logits)
                correct = logits.argmax(1) == y
                c = torch.stack([(correct & (radius > eps)).sum() for eps, _ in self.eps])
                counts = c if counts is None else counts + c
                n += len(y)
        model.train(was_training)
        acc = counts.float() / n
        return {f"{prefix}/cert_acc@{label}": acc[i] for i, (_, label) in enumerate(self.eps)}


def _due(evaluator, epoch: int | None, final: bool) -> bool:
    if final or not hasattr(evaluator, "every"):
        return True
    every = evaluator.every
    return every is not None and epoch is not None and epoch % every == 0


def evaluate(evaluators: dict, model: nn.Module, batches, prefix: str = "test", *,
             epoch: int | None = None, final: bool = True) -> dict[str, torch.Tensor]:
    """Every evaluator that is due at `epoch` (all of them when `final`). Evaluators marked
    `test_only` (attacks: their cost is a multiple of an evaluation) skip the validation part."""
    out: dict[str, torch.Tensor] = {}
    for ev in evaluators.values():
        if prefix != "test" and getattr(ev, "test_only", False):
            continue
        if _due(ev, epoch, final):
            out.update(ev(model, batches, prefix))
    return out
