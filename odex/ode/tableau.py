"""Explicit Runge-Kutta methods as data: a Butcher tableau, and for the adaptive ones the weights of
their embedded error estimate and of their dense output (Hairer, Norsett, Wanner I, II.1 and II.4).
odex's loop steps any of them (odex/ode/loops/); a new explicit method is one tableau, in a module of your own:

    >>> KUTTA3 = ButcherTableau(c=(0, 1/2, 1), a=((), (1/2,), (-1, 2)), b=(1/6, 2/3, 1/6), order=3)
    >>> KUTTA3.adaptive, KUTTA3.stages
    (False, 3)

saved as my_methods.py, it is `solver.method=my_methods.KUTTA3 solver.steps=N solver.loop=odex`.
The coefficients are written as torchdiffeq 0.2.5 writes them. Plain Python (no torch).
Design notes: docs/design-notes.md, "odex/ode/tableau.py".
"""
from __future__ import annotations

import functools
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

    @property
    def fsal(self) -> bool:
        """First same as last: the last stage is evaluated at y1, so y1 is that stage's input."""
        return self.b[-1] == 0 and tuple(self.b[:-1]) == tuple(self.a[-1])


def embedded(b: tuple[float, ...], b_hat: tuple[float, ...]) -> tuple[float, ...]:
    """The error weights b - b_hat, each the difference of the two rounded weights (as torchdiffeq
    computes them, so the floats agree to the last bit)."""
    return tuple(x - y for x, y in zip(b, b_hat))


def _at_half(*polynomial: float) -> float:
    """A dense-output weight of dopri8 at theta = 1/2: (p5 h^5 + ... + p1 h + p0) / (1 / h), h = 1/2,
    summed in torchdiffeq's order (highest power first)."""
    h = 1 / 2
    return sum(p * (h ** power) for power, p in zip(reversed(range(len(polynomial))), polynomial)) / (1 / h)


#: Fixed-step methods. torchdiffeq's `rk4` is Kutta's 3/8 rule, so ours is too.
FIXED_TABLEAUX: dict[str, ButcherTableau] = {
    "euler": ButcherTableau(c=(0.0,), a=((),), b=(1.0,), order=1),
    "midpoint": ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2),
    "heun2": ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2),
    "heun3": ButcherTableau(c=(0.0, 1 / 3, 2 / 3), a=((), (1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75), order=3),
    "rk4": ButcherTableau(c=(0.0, 1 / 3, 2 / 3, 1.0), a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
                          b=(0.125, 0.375, 0.375, 0.125), order=4),
}

# Dormand & Prince, "A family of embedded Runge-Kutta formulae" (1980), with the embedded weights
# and the dense output of Shampine, "Some practical Runge-Kutta formulas" (1986), as torchdiffeq's.
_DOPRI5_B = (35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0)
_DOPRI5 = ButcherTableau(
    c=(0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1., 1.),
    a=((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
       _DOPRI5_B[:-1]),
    b=_DOPRI5_B, order=5,
    b_error=embedded(_DOPRI5_B, (1951 / 21600, 0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60)),
    mid=(6025192743 / 30085553152 / 2, 0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
         187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2))

# Bogacki & Shampine, "A 3(2) pair of Runge-Kutta formulas" (1989).
_BOSH3 = ButcherTableau(
    c=(0, 1 / 2, 3 / 4, 1.), a=((), (1 / 2,), (0., 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.), order=3,
    b_error=embedded((2 / 9, 1 / 3, 4 / 9, 0.), (7 / 24, 1 / 4, 1 / 3, 1 / 8)), mid=(0., 0.5, 0., 0.))

# Fehlberg's RKF1(2) (NASA TR R-315, 1969), stepped with its second-order weights.
_FEHLBERG2 = ButcherTableau(
    c=(0, 1 / 2, 1.0), a=((), (1 / 2,), (1 / 256, 255 / 256)), b=(1 / 512, 255 / 256, 1 / 512), order=2,
    b_error=embedded((1 / 512, 255 / 256, 1 / 512), (1 / 256, 255 / 256, 0)), mid=(0.0, 0.5, 0.0))

# Heun's method with the error against its second stage's Euler step (torchdiffeq's sign).
_ADAPTIVE_HEUN = ButcherTableau(c=(0, 1.), a=((), (1.,)), b=(0.5, 0.5), order=2,
                                b_error=embedded((0.5, 0.5), (0, 1)), mid=(0.5, 0.))

# Prince & Dormand, "High order embedded Runge-Kutta formulae" (1981), RK8(7)13M, its rational
# approximations; the dense output is torchdiffeq's polynomials at theta = 1/2.
_DOPRI8_B = (14005451 / 335480064, 0, 0, 0, 0, -59238493 / 1068277825, 181606767 / 758867731,
             561292985 / 797845732, -1041891430 / 1371343529, 760417239 / 1151165299, 118820643 / 751138087,
             -528747749 / 2220607170, 1 / 4, 0)
_DOPRI8 = ButcherTableau(
    c=(0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200, 5490023248 / 9719169821, 13 / 20,
       1201146811 / 1299019798, 1, 1, 1),
    a=((), (1 / 18,), (1 / 48, 1 / 16), (1 / 32, 0, 3 / 32), (5 / 16, 0, -75 / 64, 75 / 64),
       (3 / 80, 0, 0, 3 / 16, 3 / 20),
       (29443841 / 614563906, 0, 0, 77736538 / 692538347, -28693883 / 1125000000, 23124283 / 1800000000),
       (16016141 / 946692911, 0, 0, 61564180 / 158732637, 22789713 / 633445777, 545815736 / 2771057229,
        -180193667 / 1043307555),
       (39632708 / 573591083, 0, 0, -433636366 / 683701615, -421739975 / 2616292301, 100302831 / 723423059,
        790204164 / 839813087, 800635310 / 3783071287),
       (246121993 / 1340847787, 0, 0, -37695042795 / 15268766246, -309121744 / 1061227803,
        -12992083 / 490766935, 6005943493 / 2108947869, 393006217 / 1396673457, 123872331 / 1001029789),
       (-1028468189 / 846180014, 0, 0, 8478235783 / 508512852, 1311729495 / 1432422823,
        -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
        -45442868181 / 3398467696, 3065993473 / 597172653),
       (185892177 / 718116043, 0, 0, -3185094517 / 667107341, -477755414 / 1098053517,
        -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563, -4093664535 / 808688257,
        3962137247 / 1805957418, 65686358 / 487910083),
       (403863854 / 491063109, 0, 0, -5068492393 / 434740067, -411421997 / 543043805, 652783627 / 914296604,
        11173962825 / 925320556, -13158990841 / 6184727034, 3936647629 / 1978049680, -160528059 / 685178525,
        248638103 / 1413531060, 0),
       _DOPRI8_B[:-1]),
    b=_DOPRI8_B, order=8,
    b_error=embedded(_DOPRI8_B, (13451932 / 455176623, 0, 0, 0, 0, -808719846 / 976000145,
                                 1757004468 / 5645159321, 656045339 / 265891186, -3867574721 / 1518517206,
                                 465885868 / 322736535, 53011238 / 667516719, 2 / 45, 0, 0)),
    mid=(_at_half(-6.3448349392860401388, 22.1396504998094068976, -30.0610568289666450593,
                  19.9990069333683970610, -6.6910181737837595697, 1.0), 0., 0., 0., 0.,
         _at_half(-39.6107919852202505218, 116.4422149550342161651, -121.4999627731334642623,
                  52.2273532792945524050, -7.6142658045872677172, 0.0),
         _at_half(20.3761213808791436958, -67.1451318825957197185, 83.1721004639847717481,
                  -46.8919164181093621583, 10.7281392630428866124, 0.0),
         _at_half(7.3347098826795362023, -16.5672243527496524646, 9.5724507555993664382,
                  -0.1890893225010595467, 0.5526637063753648783, 0.0),
         _at_half(32.8801774352459155182, -89.9916014847245016028, 87.8406057677205645007,
                  -35.7075975946222072821, 4.2186562625665153803, 0.0),
         _at_half(-10.1588990526426760954, 22.6237489648532849093, -17.4152107770762969005,
                  6.2736448083240352160, -0.6627209125361597559, 0.0),
         _at_half(-12.5401268098782561200, 32.2362340167355370113, -28.5903289514790976966,
                  10.3160881272450748458, -1.2636789001135462218, 0.0),
         _at_half(29.5553001484516038033, -82.1020315488359848644, 81.6630950584341412934,
                  -34.7650769866611817349, 5.4106037898590422230, 0.0),
         _at_half(-41.7923486424390588923, 116.2662185791119533462, -114.9375291377009418170,
                  47.7457971078225540396, -7.0321379067945741781, 0.0),
         _at_half(20.3006925822100825485, -53.9020777466385396792, 50.2558364226176017553,
                  -19.0082099341608028453, 2.3537586759714983486, 0.0)))

#: Adaptive methods (torchdiffeq's names), with error weights and dense output.
ADAPTIVE_TABLEAUX: dict[str, ButcherTableau] = {
    "dopri5": _DOPRI5, "dopri8": _DOPRI8, "bosh3": _BOSH3, "fehlberg2": _FEHLBERG2,
    "adaptive_heun": _ADAPTIVE_HEUN,
}
ADAPTIVE_NAMES = tuple(ADAPTIVE_TABLEAUX)

#: Methods only torchdiffeq's loop steps (multistep, not Runge-Kutta: no tableau).
TORCHDIFFEQ_ONLY = ("explicit_adams", "implicit_adams")


def names() -> tuple[str, ...]:
    """The methods odex ships, every one also torchdiffeq's (same name, same coefficients); a
    tableau of the user's own is named by its path (`of_user`)."""
    return (*ADAPTIVE_NAMES, *FIXED_TABLEAUX, *TORCHDIFFEQ_ONLY)


def is_adaptive(name: str) -> bool:
    """Whether `name`'s steps follow error estimates (odex's own known without loading torch)."""
    tab = tableau(name)
    return tab is not None and tab.adaptive


def exists(name: str) -> bool:
    """Whether `name` is odex's own method or the path of a tableau of the user's own."""
    return name in names() or tableau(name) is not None


def tableau(name: str) -> ButcherTableau | None:
    """The tableau of the Runge-Kutta method `name` (odex's own, or the path <module>.<NAME> of one
    of the user's own); None for a method without (the Adams methods) or an unknown name."""
    found = FIXED_TABLEAUX.get(name) or ADAPTIVE_TABLEAUX.get(name)
    if found is None and name not in names():
        try:
            found = of_user(name)
        except LookupError:
            return None
    return found


@functools.cache
def of_user(path: str) -> ButcherTableau:
    """The ButcherTableau object at the importable path `path` (`my_methods.KUTTA3`). Raises
    `LookupError` with a one-line reason: no such module or name, or not a tableau."""
    from odex import plugins

    if "." not in str(path):
        raise LookupError(f"is not one of odex's methods ({', '.join(names())}) nor a path <module>.<NAME> "
                          "of a ButcherTableau of your own")
    obj = plugins.locate(path)
    if not isinstance(obj, ButcherTableau):
        raise LookupError(f"is a {type(obj).__name__}, not an odex.ode.tableau.ButcherTableau")
    return obj
