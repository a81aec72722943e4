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

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from odex.config import check_value
from odex.evaluate.attacks import NORMS, classifies, pgd, no_input_gradient
from odex.errors import ConfigError
from odex.ode.nfe import reset_nfe, total_nfe
from odex.ode.block import solver_changed
from odex.ode.precision import full_fp32
from odex.schema import Radius

log = logging.getLogger("odex")


def parse_eps(value) -> tuple[float, str]:
    """A radius from the config (a number, or a quotient such as "8/255" or "7.2/255") and its label.
    Read by odex/schema.py's one parser (`Radius.parse`), which validation applied before the run; the
    same check refuses a bad value given through the Python API."""
    check_value(value, Radius, "eps")
    return Radius.parse(value), str(value).replace(" ", "")


def first_examples(batches, limit: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches holding the first `limit` examples (all when None), the last one cut to size."""
    chosen, n = [], 0
    for x, y in batches:
        if limit is not None and n >= limit:
            break
        if limit is not None and n + len(y) > limit:
            x, y = x[: limit - n], y[: limit - n]
        chosen.append((x, y))
        n += len(y)
    return chosen


class CleanAccuracy:
    """Accuracy and mean cross-entropy on unperturbed inputs, and the mean forward NFE per batch
    of the solves (`<prefix>/nfe`, the inference cost)."""

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        was_training = model.training
        model.eval()
        reset_nfe(model)
        correct = loss = n = 0
        with torch.no_grad():
            for x, y in batches:
                logits = model(x)
                correct = correct + (logits.argmax(1) == y).sum()
                loss = loss + F.cross_entropy(logits, y, reduction="sum")
                n += len(y)
        model.train(was_training)
        out = {f"{prefix}/acc": correct.float() / n, f"{prefix}/loss": loss / n}
        nfe = total_nfe(model)
        if nfe is not None:
            out[f"{prefix}/nfe"] = nfe[0].float() / len(batches)
        return out


class PGDAccuracy:
    """Accuracy under PGD attacks (odex.evaluate.attacks.pgd, torchattacks' update rules), one per norm,
    with every loss in `losses` (cross-entropy `ce`, Croce & Hein's scale-invariant `dlr`) and
    `restarts` random starts each. An example counts as robust only if it survives all of them:
    `<prefix>/pgd_linf_acc`, `<prefix>/pgd_l2_acc` are the accuracy over the worst of the
    (loss, restart) attacks per example; `<prefix>/pgd_<norm>_acc_<loss>` each loss's own figure;
    `<prefix>/pgd_<norm>_time_s` each norm's wall time (one device synchronisation per attack).
    `linf` / `l2` are {eps, alpha, steps} or null to skip that norm. The random starts come from a
    generator seeded with `seed` at every evaluation, so epochs are compared on the same starts.
    `limit` attacks only the first N examples.

    Gradient masking (Carlini et al., "On Evaluating Adversarial Robustness", 2019) is checked on
    the same examples, and `<prefix>/pgd_masking_flag` is 1 (with a warning line) when
      - the robust accuracy exceeds the clean accuracy of the attacked examples
        (`<prefix>/pgd_clean_acc`),
      - the attack at `larger_radius` times eps and alpha (`<prefix>/pgd_<norm>_acc@<f>eps`, null
        = not checked) does not lower a non-zero robust accuracy,
      - the input gradient of some loss is exactly zero or not finite at the clean image for more
        than `zero_grad_share` of the examples (`<prefix>/pgd_zero_grad`).

    ODE models are attacked through their own solver and gradient method, or, with `solver` (keys
    of conf/solver, e.g. {method: rk4, steps: 8}), through that solver; the adversarial images are
    then judged by the model as it is, with its own solver."""

    test_only = True       # an attack costs (steps + 1) evaluations: not on the validation part

    def __init__(self, linf: dict | None = None, l2: dict | None = None, random_start: bool = True,
                 seed: int = 0, every: int | None = None, limit: int | None = None,
                 solver: dict | None = None, losses=("ce", "dlr"), restarts: int = 1,
                 larger_radius: float | None = 2.0, zero_grad_share: float = 0.1):
        # the keys' types and ranges, and eval.pgd's rules (a norm to attack, distinct losses,
        # restarts with random starts, the solver's keys): odex/schema.py and odex.config, before the run
        self.attacks: dict[str, dict] = {}
        for norm, spec in zip(NORMS, (linf, l2)):
            if spec is not None:
                self.attacks[norm] = {"eps": parse_eps(spec["eps"])[0], "alpha": parse_eps(spec["alpha"])[0],
                                      "steps": int(spec.get("steps", 10))}
        self.losses = [losses] if isinstance(losses, str) else list(losses)
        self.restarts, self.larger_radius, self.zero_grad_share = int(restarts), larger_radius, zero_grad_share
        self.random_start, self.seed, self.every, self.limit = random_start, seed, every, limit
        self.solver = None if solver is None else dict(solver)

    def pgd_figure(self, norm: str, eps: float, limit: int | None, prefix: str) -> str | None:
        """The metric of this evaluator's robust accuracy in `norm` at radius `eps` on the first
        `limit` examples, for a comparison by another evaluator (eval=square); None if it attacked
        another norm, radius or set of examples."""
        spec = self.attacks.get(norm)
        if spec is None or limit != self.limit or abs(spec["eps"] - eps) > 1e-12:
            return None
        return f"{prefix}/pgd_{norm}_acc"

    def _survivors(self, model, x, y, spec, generator, losses, restarts) -> dict[str, torch.Tensor]:
        """Per loss, which examples every restart of that loss's attack leaves correctly classified."""
        out = {}
        for loss in losses:
            alive = torch.ones_like(y, dtype=torch.bool)
            for _ in range(restarts):
                with solver_changed(model, self.solver):
                    adv = pgd(model, x, y, random_start=self.random_start, generator=generator,
                              loss=loss, **spec)
                alive &= classifies(model, adv, y)
            out[loss] = alive
        return out

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        chosen = first_examples(batches, self.limit)
        if not chosen:
            return {}
        n = sum(len(y) for _, y in chosen)
        clean = zero = 0
        for x, y in chosen:
            clean = clean + classifies(model, x, y).sum()
            with solver_changed(model, self.solver):
                zero = zero + torch.stack([no_input_gradient(model, x, y, loss) for loss in self.losses]).any(0).sum()
        out = {f"{prefix}/pgd_clean_acc": clean.float() / n, f"{prefix}/pgd_zero_grad": zero.float() / n}
        device = clean.device
        for norm, spec in self.attacks.items():
            t0 = time.perf_counter()
            generator = torch.Generator(device=device).manual_seed(self.seed)
            per_loss = dict.fromkeys(self.losses, 0)
            robust = larger = 0
            for x, y in chosen:
                alive = self._survivors(model, x, y, spec, generator, self.losses, self.restarts)
                for loss, a in alive.items():
                    per_loss[loss] = per_loss[loss] + a.sum()
                robust = robust + torch.stack(list(alive.values())).all(0).sum()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            out[f"{prefix}/pgd_{norm}_acc"] = robust.float() / n
            for loss, a in per_loss.items():
                out[f"{prefix}/pgd_{norm}_acc_{loss}"] = a.float() / n
            # on the device of the other metrics: the trainer reads them all back in one stack
            out[f"{prefix}/pgd_{norm}_time_s"] = torch.tensor(time.perf_counter() - t0, device=device)
            if self.larger_radius is not None and spec["eps"] > 0:
                f = self.larger_radius
                big = {**spec, "eps": spec["eps"] * f, "alpha": spec["alpha"] * f}
                generator = torch.Generator(device=device).manual_seed(self.seed)
                for x, y in chosen:
                    alive = self._survivors(model, x, y, big, generator, self.losses, 1)
                    larger = larger + torch.stack(list(alive.values())).all(0).sum()
                out[f"{prefix}/pgd_{norm}_acc@{f:g}eps"] = larger.float() / n
        # the checks need host values: one read after the attacks (which synchronised anyway)
        host = {k: v.item() for k, v in out.items() if not k.endswith("_time_s")}
        clean_acc = host[f"{prefix}/pgd_clean_acc"]
        reasons = []
        for norm in self.attacks:
            acc = host[f"{prefix}/pgd_{norm}_acc"]
            if acc > clean_acc:
                reasons.append(f"{norm} robust accuracy {acc:.4f} > clean accuracy {clean_acc:.4f}")
            key = f"{prefix}/pgd_{norm}_acc@{self.larger_radius:g}eps" if self.larger_radius else None
            if key in host and acc > 0 and host[key] >= acc:
                reasons.append(f"{norm} accuracy {host[key]:.4f} at {self.larger_radius:g} x eps is not below "
                               f"{acc:.4f} at eps")
        zero_share = host[f"{prefix}/pgd_zero_grad"]
        if zero_share > self.zero_grad_share:
            reasons.append(f"the input gradient is exactly zero or not finite for {zero_share:.1%} of the examples "
                           f"(> {self.zero_grad_share:.0%})")
        if reasons:
            log.warning("eval=pgd: possible gradient masking (%s): %s; trust the worst-case figure "
                        "%s/pgd_<norm>_acc (all losses), and check the model", prefix, "; ".join(reasons), prefix)
        out[f"{prefix}/pgd_masking_flag"] = torch.tensor(float(bool(reasons)), device=device)
        return out


class CertifiedAccuracy:
    """Certified l2 accuracy: the fraction of examples classified correctly whose certified radius
    exceeds eps, for each eps: `<prefix>/cert_acc@<eps as written>`. The radius is the model's
    `certified_radius(logits)`, which must be a guarantee (model=cpl: from guaranteed bounds of each
    layer's norm, odex/evaluate/lipschitz.py). A model that also offers an estimated radius (`power_iteration_
    radius`, the CPL paper's figure, which trusts a power-iteration estimate from below) gets it
    beside, as `<prefix>/cert_acc_power_iter@<eps>`, and a model with `lipschitz_bound()` logs it
    as `<prefix>/lipschitz_bound`. A model without a certificate is refused."""

    def __init__(self, eps=("36/255", "72/255", "108/255")):
        self.eps = [parse_eps(e) for e in eps]      # at least one: odex/schema.py CertifiedAccuracy

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        radius_of = getattr(model, "certified_radius", None)
        if not callable(radius_of):
            raise ConfigError(f"eval=certified needs a model with a Lipschitz certificate (model=cpl); "
                              f"{type(model).__name__} has none")
        radii = {"cert_acc": radius_of}
        estimated = getattr(model, "power_iteration_radius", None)
        if callable(estimated):
            radii["cert_acc_power_iter"] = estimated
        was_training = model.training
        model.eval()
        counts, n = {}, 0
        with torch.no_grad(), full_fp32():     # margins read from TF32 logits could overstate a radius
            for x, y in batches:
                logits = model(x)
                correct = logits.argmax(1) == y
                for name, fn in radii.items():
                    radius = fn(logits)
                    c = torch.stack([(correct & (radius > eps)).sum() for eps, _ in self.eps])
                    counts[name] = counts.get(name, 0) + c
                n += len(y)
            out = {}
            bound = getattr(model, "lipschitz_bound", None)
            if callable(bound):
                out[f"{prefix}/lipschitz_bound"] = bound().float()
        model.train(was_training)
        for name, c in counts.items():
            acc = c.float() / n
            out.update({f"{prefix}/{name}@{label}": acc[i] for i, (_, label) in enumerate(self.eps)})
        return out


def _due(evaluator, epoch: int | None, final: bool) -> bool:
    if final or not hasattr(evaluator, "every"):
        return True
    every = evaluator.every
    return every is not None and epoch is not None and epoch % every == 0


def evaluate(evaluators: dict, model: nn.Module, batches, prefix: str = "test", *,
             epoch: int | None = None, final: bool = True) -> dict[str, torch.Tensor]:
    """Every evaluator that is due at `epoch` (all of them when `final`). Evaluators marked
    `test_only` (attacks: their cost is a multiple of an evaluation) skip the validation part.
    Evaluators with a `review(evaluators, metrics, prefix)` method then see every metric of this
    evaluation (eval=square compares its figure with eval=pgd's and may raise its masking flag)."""
    out: dict[str, torch.Tensor] = {}
    ran = []
    for ev in evaluators.values():
        if prefix != "test" and getattr(ev, "test_only", False):
            continue
        if _due(ev, epoch, final):
            out.update(ev(model, batches, prefix))
            ran.append(ev)
    for ev in ran:
        if callable(getattr(ev, "review", None)):
            ev.review(evaluators, out, prefix)
    return out
