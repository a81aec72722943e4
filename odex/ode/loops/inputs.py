"""A solve's input, brought to the one form the steppers take: a flat tensor state on increasing
times, with the times also on the host (tuple states flattened, decreasing times negated, the time
perturbed by one ulp where a stepper asks): what torchdiffeq's `odeint` does, with at most one host
read of `t` per solve. Design notes: docs/design-notes.md, "odex/ode/loops/inputs.py".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """sqrt(mean |x|^2): the step-size control's measure of a tensor state."""
    return x.abs().pow(2).mean().sqrt()


def mixed_norm(xs) -> torch.Tensor | float:
    """max_i rms(x_i): the measure of a tuple state (0 for an empty tuple)."""
    return max([rms_norm(x) for x in xs]) if len(xs) else 0.


def flat_to_shape(flat: torch.Tensor, length: tuple[int, ...], shapes) -> tuple[torch.Tensor, ...]:
    """The flat state(s) `flat` (leading dimensions `length`) cut back into the tuple's shapes."""
    out, total = [], 0
    for shape in shapes:
        out.append(flat[..., total:total + shape.numel()].view((*length, *shape)))
        total += shape.numel()
    return tuple(out)


class Field:
    """func(t, y) as a stepper calls it: `y` flat, `t` increasing, `perturb` in {-1, 0, +1}."""

    def __init__(self, func: Callable, shapes=None, reversed_time: bool = False):
        self.func, self.shapes, self.reversed_time = func, shapes, reversed_time

    def __call__(self, t: torch.Tensor, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        t = t.to(y.real.dtype if y.is_complex() else y.dtype)
        if perturb:
            t = _nextafter(t, t + perturb)
        if self.reversed_time:
            return -1.0 * self._eval(-t, y)
        return self._eval(t, y)

    def _eval(self, t, y):
        if self.shapes is None:
            return self.func(t, y)
        f = self.func(t, flat_to_shape(y, (), self.shapes))
        return torch.cat([f_.reshape(-1) for f_ in f])


class _Stitch(torch.autograd.Function):
    """The moved time, with the gradient of the time it was moved from."""

    @staticmethod
    def forward(ctx, x, moved):
        return moved

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _nextafter(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        moved = torch.nextafter(x, direction)
    return _Stitch.apply(x, moved)


@dataclass
class Problem:
    func: Field
    y0: torch.Tensor                 # flat
    t: torch.Tensor                  # increasing, on y0's device
    times: tuple[float, ...]         # the same times on the host
    rtol: Any
    atol: Any
    norm: Callable                   # of the flat state
    shapes: list | None              # the tuple's shapes (None: a tensor state)

    def solution(self, ys: torch.Tensor):
        """The stepper's flat solution in the caller's form (a tuple again where y0 was one)."""
        return ys if self.shapes is None else flat_to_shape(ys, (len(self.times),), self.shapes)


def prepare(func: Callable, y0, t: torch.Tensor, rtol, atol, norm: Callable | None = None,
            times: tuple[float, ...] | None = None) -> Problem:
    """The solve of dy/dt = func(t, y), y(t[0]) = y0, at the times `t` (`times`: their host copy,
    where the caller has one), in the steppers' form."""
    if not (isinstance(t, torch.Tensor) and t.ndim == 1 and torch.is_floating_point(t)):
        raise TypeError("t must be a one-dimensional floating-point tensor")
    times = tuple(t.tolist()) if times is None else tuple(times)        # the one read, if any
    reversed_time = len(times) > 1 and times[0] > times[1]
    if not all((a > b) if reversed_time else (a < b) for a, b in zip(times, times[1:])):
        raise ValueError("t must be strictly increasing or decreasing")
    shapes = None
    if not isinstance(y0, torch.Tensor):
        shapes = [y.shape for y in y0]
        rtol, atol = _tuple_tol(rtol, shapes), _tuple_tol(atol, shapes)
        y0 = torch.cat([y.reshape(-1) for y in y0])
        tuple_norm = norm or mixed_norm
        norm = lambda flat: tuple_norm(flat_to_shape(flat, (), shapes))      # noqa: E731
    if reversed_time:
        t, times = -t, tuple(-x for x in times)
    return Problem(Field(func, shapes, reversed_time), y0, t.to(y0.device), times, rtol, atol,
                   norm or rms_norm, shapes)


def _tuple_tol(tol, shapes):
    """A tolerance per tuple element, spread over that element's entries of the flat state."""
    if not isinstance(tol, (tuple, list)):
        return tol
    if len(tol) != len(shapes):
        raise ValueError("a tolerance per tuple element: as many as y0 has")
    return torch.cat([torch.as_tensor(x).expand(shape.numel()) for x, shape in zip(tol, shapes)])
