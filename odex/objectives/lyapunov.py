"""Lyapunov training of neural-ODE classifiers (Rodriguez, Ames, Yue, "LyaNet: A Lyapunov
Framework for Training Neural ODEs", ICML 2022; reference code ivandariojr/LyapunovLearning).

With V(h, y) = CE(readout(h), y), the loss is the violation relu(dV/dt + kappa V) of exponential
decay (V detached in kappa V, dV/dt by torch.func.jvp): `LyapunovMC` (objective=lyanet_mc, sampled
states), `LyapunovPath` (objective=lyanet_path, along the trajectory), `InferenceDynamics`
(eval=dynamics). Design notes: docs/design-notes.md, "odex/objectives/lyapunov.py".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from odex.errors import ConfigError
from odex.ode.nfe import reset_nfe, total_nfe
from odex.objectives.classification import Step
from odex.ode.block import ODEBlock, solver_changed

State = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass
class LogitDynamics:
    """What objective=lyanet_mc needs from a model whose ODE state is the logits, for one batch."""
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (t, h: (B, S, K)) -> dh/dt, S states per input
    dim: int                                                       # K
    t1: float                                                      # the model's time horizon
    radius: float                                                  # states are sampled in this ball


@dataclass
class LyapunovParts:
    """What objective=lyanet_path and eval=dynamics need from an ODE model, for one batch: the ODE
    block (its field, solver and gradient method), the initial state, and the map from a state to
    logits (an nn.Module, so that an adjoint finds its parameters)."""
    block: ODEBlock
    h0: State
    readout: nn.Module


class FlatReadout(nn.Module):
    """logits = head(h.flatten(1)): the readout of a model whose state is a feature map."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h.flatten(1))


def model_kappa(model: nn.Module, kappa: float | None) -> float:
    if kappa is not None:       # >= 0: odex/schema.py, checked before the run
        return float(kappa)
    return float(getattr(model, "kappa", 1.0))


def lyapunov_parts(model: nn.Module, x: torch.Tensor, who: str) -> LyapunovParts:
    parts = getattr(model, "lyapunov_parts", None)
    if not callable(parts):
        raise ConfigError(f"{who} needs an ODE model that exposes its state and readout (lyapunov_parts): "
                          f"model=lyanet or model=augmented; {type(model).__name__} does not")
    return parts(x)


def _as_tuple(s: State) -> tuple[torch.Tensor, ...]:
    return s if isinstance(s, tuple) else (s,)


def _from_tuple(parts) -> State:
    return parts[0] if len(parts) == 1 else tuple(parts)


def potential(readout: nn.Module, state: State, y: torch.Tensor) -> torch.Tensor:
    """V(h, y) = CE(readout(h), y) per example."""
    return F.cross_entropy(readout(state), y, reduction="none")


class LyapunovMC:
    """objective=lyanet_mc: mean over sampled states h and the batch's inputs x of

        relu(grad_h V(h, y) . f(t, h; x) + kappa V(h, y)),   V(h, y) = CE(h, y),

    with `samples` states shared by the whole batch (as in the reference code): a Gaussian
    direction times a radius uniform in [0, radius] (null: the model's, LyaNet's 15 sqrt K), and t
    uniform in [0, t1] (LyaNet's dynamics are autonomous). No ODE solve.

    Logged: `lyapunov/loss` and `lyapunov/violation_rate` (the fraction of (state, input) pairs
    that violate the condition). NFE: the batch's one vectorised call of f (at B x samples states)
    is counted as one forward evaluation; the backward pass calls f no more (nfe/backward 0).
    """

    def __init__(self, kappa: float | None = None, samples: int = 512, radius: float | None = None):
        self.kappa, self.samples, self.radius = kappa, samples, radius

    def sample_states(self, dim: int, radius: float, like: torch.Tensor) -> torch.Tensor:
        """(samples, dim) states: uniform radius in [0, radius], uniform direction."""
        direction = F.normalize(torch.randn(self.samples, dim, device=like.device, dtype=like.dtype), dim=1)
        r = torch.rand(self.samples, 1, device=like.device, dtype=like.dtype) * radius
        return direction * r

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
        dynamics_of = getattr(model, "logit_dynamics", None)
        if not callable(dynamics_of):
            raise ConfigError(f"objective=lyanet_mc samples the logit space, so it needs a model whose ODE "
                              f"state is the logits (model=lyanet); {type(model).__name__} is not: "
                              f"use objective=lyanet_path")
        dyn: LogitDynamics = dynamics_of(x)
        kappa = model_kappa(model, self.kappa)
        b, s = len(y), self.samples
        like = x if x.is_floating_point() else x.float()
        # one copy per input: forward-mode AD cannot take an expanded view as its primal
        h = self.sample_states(dyn.dim, self.radius or dyn.radius, like).expand(b, s, dyn.dim).contiguous()
        t = torch.rand((), device=x.device) * dyn.t1
        f = dyn.field(t, h)
        labels = y[:, None].expand(b, s).reshape(-1)

        def v(h_):
            return F.cross_entropy(h_.reshape(b * s, -1), labels, reduction="none")

        value, vdot = torch.func.jvp(v, (h,), (f,))
        violation = torch.relu(vdot + kappa * value.detach())
        loss = violation.mean()
        return Step(loss, None, {"lyapunov/loss": loss.detach(),
                                 "lyapunov/violation_rate": (violation > 0).float().mean()})


class PathIntegrand(nn.Module):
    """The vector field of the state with the violation integral appended:

        d/dt (h, q) = (f(t, h), relu(dV/dt + kappa V)),  dV/dt = grad_h V(h, y) . f(t, h).

    A module holding the field and the readout, so an adjoint differentiates through both."""

    def __init__(self, field: nn.Module, readout: nn.Module, y: torch.Tensor, kappa: float):
        super().__init__()
        self.field = field
        self.readout = readout
        self.y = y
        self.kappa = kappa

    def forward(self, t: torch.Tensor, z: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        state = z[:-1]
        f = _as_tuple(self.field(t, _from_tuple(state)))
        value, vdot = torch.func.jvp(lambda *s: potential(self.readout, _from_tuple(s), self.y), state, f)
        return (*f, torch.relu(vdot + self.kappa * value.detach()))


def solve_with_violation(parts: LyapunovParts, y: torch.Tensor, kappa: float,
                         t: torch.Tensor | None = None) -> tuple[State, torch.Tensor]:
    """Solve the model's ODE with the violation integral q(t) = int_0^t relu(dV/dt + kappa V) ds
    appended to its state. Returns the state and q at the times `t` (default [0, t1]; first
    dimension time)."""
    h0 = _as_tuple(parts.h0)
    q0 = h0[0].new_zeros(len(y))
    times = parts.block.t if t is None else t
    zs = parts.block.integrate(PathIntegrand(parts.block.field, parts.readout, y, kappa), (*h0, q0), times)
    return _from_tuple(zs[:-1]), zs[-1]


class LyapunovPath:
    """objective=lyanet_path: the mean over the batch of the violation integrated along the
    trajectory from h(0) over [0, t1] (the paper's path-integral algorithm),

        loss = mean_x int_0^t1 relu(dV/dt + kappa V) dt,

    solved with the model's solver and backpropagated with its gradient method (grad=adjoint
    solves the augmented system backwards). Logged: `lyapunov/loss` and `lyapunov/violation_rate`,
    the fraction of trajectories on which the condition fails somewhere (at some solver stage: q(t1)
    > 0). The logits h(t1) give train/acc."""

    def __init__(self, kappa: float | None = None):
        self.kappa = kappa

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
        parts = lyapunov_parts(model, x, "objective=lyanet_path")
        states, q = solve_with_violation(parts, y, model_kappa(model, self.kappa))
        final = _from_tuple(tuple(s[-1] for s in _as_tuple(states)))
        violation = q[-1]
        loss = violation.mean()
        return Step(loss, parts.readout(final),
                    {"lyapunov/loss": loss.detach(), "lyapunov/violation_rate": (violation > 0).float().mean()})


class InferenceDynamics:
    """What LyaNet claims to improve, measured at test on the solve from h(0):

    - `<prefix>/lyapunov_decay`: the fraction of examples whose V decays at rate at least kappa
      along the trajectory, V(t_i) <= V(0) exp(-kappa t_i) at `times` evenly spaced times in (0, t1];
    - `<prefix>/lyapunov_rate`: the mean over examples of the empirical rate log(V(0) / V(t1)) / t1;
    - `<prefix>/dynamics_nfe`: forward NFE per batch of that solve.

    `solver` (keys of conf/solver, e.g. {method: dopri5, rtol: 1e-3, atol: 1e-3}) solves with another
    solver than the model's, so models trained with different solvers are compared on the same one.
    Intermediate times do not add steps (adaptive solvers interpolate)."""

    def __init__(self, kappa: float | None = None, times: int = 10, solver: dict | None = None):
        # the keys' ranges and the solver's keys: odex/schema.py InferenceDynamics, checked before the run
        self.kappa, self.times = kappa, times
        self.solver = None if solver is None else dict(solver)

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        kappa = model_kappa(model, self.kappa)
        was_training = model.training
        model.eval()
        reset_nfe(model)
        decayed = rate = n = 0
        with torch.no_grad(), solver_changed(model, self.solver):
            for x, y in batches:
                parts = lyapunov_parts(model, x, "eval=dynamics")
                t1 = float(parts.block.solver.t1)
                t = torch.linspace(0.0, t1, self.times + 1, device=x.device)
                states = _as_tuple(parts.block(parts.h0, t))
                v = torch.stack([potential(parts.readout, _from_tuple(tuple(s[i] for s in states)), y)
                                 for i in range(len(t))])                                   # (T, B)
                envelope = v[0] * torch.exp(-kappa * t[1:, None])
                decayed = decayed + (v[1:] <= envelope).all(0).sum()
                tiny = torch.finfo(v.dtype).tiny
                rate = rate + ((v[0].clamp_min(tiny).log() - v[-1].clamp_min(tiny).log()) / t1).sum()
                n += len(y)
        model.train(was_training)
        out = {f"{prefix}/lyapunov_decay": decayed.float() / n, f"{prefix}/lyapunov_rate": rate / n}
        nfe = total_nfe(model)
        if nfe is not None:
            out[f"{prefix}/dynamics_nfe"] = nfe[0].float() / len(batches)
        return out


def anchor_kappa(anchor: float, classes: int) -> float:
    """LyaNet's rate kappa = log(anchor sqrt(K)): log of the anchors' distance from the origin."""
    return math.log(anchor * math.sqrt(classes))
