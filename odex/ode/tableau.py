"""Explicit Runge-Kutta methods as data: a Butcher tableau, and for the adaptive ones the weights of
their embedded error estimate and of their dense output. Both stepping loops read these (odex's
loops step any tableau; torchdiffeq's loop uses torchdiffeq's own solver where it has the method
and a class built from the tableau where it does not), so a new explicit method is one tableau:

    register_tableau("heun3", ButcherTableau(c=(0, 1/3, 2/3), a=((), (1/3,), (0, 2/3)),
                                             b=(1/4, 0, 3/4), order=3))

and `solver.method=heun3` with `solver.steps=N` (a YAML in conf/solver/ to make it a choice).

An s-stage method with nodes c, matrix a and weights b takes the step (Hairer, Norsett, Wanner,
"Solving Ordinary Differential Equations I", II.1)

    k_i = f(t0 + c_i h, y0 + h sum_{j<i} a_ij k_j),     y1 = y0 + h sum_i b_i k_i,

and an adaptive one also estimates the local error as h sum_i e_i k_i (e = b - b_hat, the
difference to its embedded lower-order weights). A method whose last stage is evaluated at y1
itself (last row of a = b, "first same as last": dopri5, bosh3) lists that stage with weight 0. Its step size follows the error; the dense output between t0 and
t1 is torchdiffeq's fourth-order polynomial through y0, y1, the slopes at both ends and the
midpoint value y0 + h sum_i mid_i k_i.

This module is plain Python (no torch), so the validation stage (odex/config.py) can list the
methods before torch is loaded. The adaptive tableaux are torchdiffeq's coefficients, read from its
solver classes when first asked for (`adaptive_from_torchdiffeq`), so the numbers are the ones its
users have always run.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    c: tuple[float, ...]                       # nodes c_1 = 0, c_2, ..., c_s
    a: tuple[tuple[float, ...], ...]           # a[i] = (a_i1, ..., a_i,i-1): row i has i entries
    b: tuple[float, ...]                       # weights of y1, one per stage
    order: int                                 # order of y1 (sets the step-size exponent 1/order)
    b_error: tuple[float, ...] | None = None   # b - b_hat: the embedded error estimate (adaptive only)
    mid: tuple[float, ...] | None = None       # y(t0 + h/2) ~ y0 + h sum mid_i k_i (adaptive dense output)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"a Butcher tableau's a has rows of 0, 1, ..., {s - 1} entries (one per "
                             f"earlier stage); got {[len(r) for r in self.a]}")
        if self.c[0] != 0:
            raise ValueError("an explicit method's first node c_1 is 0")
        for key in ("b", "b_error", "mid"):
            if getattr(self, key) is not None and len(getattr(self, key)) != s:
                raise ValueError(f"{key} has one weight per stage ({s}); got {len(getattr(self, key))}")
        if (self.b_error is None) != (self.mid is None):
            raise ValueError("an adaptive tableau has both b_error and mid; a fixed-step one neither")

    @property
    def adaptive(self) -> bool:
        """Whether the method has an embedded error estimate (so its steps follow the tolerances)."""
        return self.b_error is not None

    @property
    def stages(self) -> int:
        return len(self.c)


#: Fixed-step methods, written here. torchdiffeq's `rk4` is Kutta's 3/8 rule, so ours is too.
FIXED_TABLEAUX: dict[str, ButcherTableau] = {
    "euler": ButcherTableau(c=(0.0,), a=((),), b=(1.0,), order=1),
    "midpoint": ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2),
    "heun2": ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2),
    "heun3": ButcherTableau(c=(0.0, 1 / 3, 2 / 3), a=((), (1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75), order=3),
    "rk4": ButcherTableau(c=(0.0, 1 / 3, 2 / 3, 1.0), a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
                          b=(0.125, 0.375, 0.375, 0.125), order=4),
}

#: torchdiffeq's adaptive Runge-Kutta solvers (their tableaux are read from torchdiffeq on first use).
ADAPTIVE_NAMES = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")

#: Methods only torchdiffeq's loop steps (multistep, not Runge-Kutta: no tableau).
TORCHDIFFEQ_ONLY = ("explicit_adams", "implicit_adams")

_registered: dict[str, ButcherTableau] = {}


def register_tableau(name: str, tableau: ButcherTableau) -> None:
    """Make `tableau` the solver `name` (`solver.method=name`) on both loops."""
    if name in FIXED_TABLEAUX or name in ADAPTIVE_NAMES or name in TORCHDIFFEQ_ONLY:
        raise ValueError(f"{name} is a built-in solver")
    _registered[name] = tableau


def names() -> tuple[str, ...]:
    """Every solver name, built-in and registered."""
    return (*ADAPTIVE_NAMES, *FIXED_TABLEAUX, *TORCHDIFFEQ_ONLY, *_registered)


def is_adaptive(name: str) -> bool:
    """Whether `name`'s steps follow error estimates (known without loading torch)."""
    if name in ADAPTIVE_NAMES:
        return True
    tableau = _registered.get(name)
    return tableau is not None and tableau.adaptive


def tableau(name: str) -> ButcherTableau | None:
    """The tableau of the Runge-Kutta method `name`; None for one without (the Adams methods)."""
    if name in FIXED_TABLEAUX:
        return FIXED_TABLEAUX[name]
    if name in _registered:
        return _registered[name]
    if name in ADAPTIVE_NAMES:
        return adaptive_from_torchdiffeq(name)
    return None


_from_torchdiffeq: dict[str, ButcherTableau] = {}


def adaptive_from_torchdiffeq(name: str) -> ButcherTableau:
    """torchdiffeq's tableau of its adaptive solver `name`, as a ButcherTableau (imports torch)."""
    if name not in _from_torchdiffeq:
        from torchdiffeq._impl.odeint import SOLVERS

        cls = SOLVERS[name]
        tab = cls.tableau                     # alpha, beta: the stages after the first
        _from_torchdiffeq[name] = ButcherTableau(
            c=(0.0, *(float(x) for x in tab.alpha)), a=((), *(tuple(float(x) for x in row) for row in tab.beta)),
            b=tuple(float(x) for x in tab.c_sol), order=int(cls.order),
            b_error=tuple(float(x) for x in tab.c_error), mid=tuple(float(x) for x in cls.mid))
    return _from_torchdiffeq[name]

