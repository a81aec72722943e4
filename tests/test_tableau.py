"""odex's Butcher tableaux (odex/ode/tableau.py): every coefficient is torchdiffeq's float, bit for
bit (torchdiffeq's solver classes are the oracle); the methods satisfy the order conditions of
their order (up to 4) and their embedded pairs those of a lower order; the module's docstring
example runs and gives a method of its stated order."""
from __future__ import annotations

import doctest
import math

import pytest
import torch
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ

from odex.ode import tableau as tableaux
from odex.ode.loops import integrate


@pytest.mark.parametrize("name", tableaux.ADAPTIVE_NAMES)
def test_adaptive_tableaux_are_torchdiffeqs_coefficients(name):
    tab, cls = tableaux.tableau(name), TORCHDIFFEQ[name]
    assert tab.order == cls.order and tab.adaptive
    assert list(tab.c[1:]) == cls.tableau.alpha.tolist()
    assert [list(row) for row in tab.a[1:]] == [row.tolist() for row in cls.tableau.beta]
    assert list(tab.b) == cls.tableau.c_sol.tolist() and list(tab.b_error) == cls.tableau.c_error.tolist()
    assert list(tab.mid) == cls.mid.tolist()
    assert tab.fsal == bool(cls.tableau.c_sol[-1] == 0 and (cls.tableau.c_sol[:-1] == cls.tableau.beta[-1]).all())


def conditions(b, c, a) -> list[tuple[float, float]]:
    """(elementary weight, 1/gamma) of the rooted trees up to order 4 (Hairer, Norsett, Wanner I,
    Table II.2.2): a method has order p iff the pairs of the trees up to order p agree."""
    s = len(b)
    A = [[a[i][j] if j < i else 0.0 for j in range(s)] for i in range(s)]
    Ac = [sum(A[i][j] * c[j] for j in range(s)) for i in range(s)]
    Ac2 = [sum(A[i][j] * c[j] ** 2 for j in range(s)) for i in range(s)]
    AAc = [sum(A[i][j] * Ac[j] for j in range(s)) for i in range(s)]
    dot = lambda u: sum(bi * ui for bi, ui in zip(b, u))         # noqa: E731
    return [(sum(b), 1.0),                                                           # order 1
            (dot(c), 1 / 2),                                                         # order 2
            (dot([x ** 2 for x in c]), 1 / 3), (dot(Ac), 1 / 6),                     # order 3
            (dot([x ** 3 for x in c]), 1 / 4), (dot([x * y for x, y in zip(c, Ac)]), 1 / 8),
            (dot(Ac2), 1 / 12), (dot(AAc), 1 / 24)]                                  # order 4


TREES_UP_TO = {1: 1, 2: 2, 3: 4, 4: 8}
EMBEDDED_ORDER = {"dopri5": 4, "dopri8": 7, "bosh3": 2, "fehlberg2": 1, "adaptive_heun": 1}


@pytest.mark.parametrize("name", [*tableaux.FIXED_TABLEAUX, *tableaux.ADAPTIVE_NAMES])
def test_order_conditions(name):
    tab = tableaux.tableau(name)
    for ci, row in zip(tab.c, tab.a):           # the nodes are the row sums
        assert ci == pytest.approx(sum(row), abs=1e-12)
    checks = [(tab.b, tab.order)]
    if tab.adaptive:
        b_hat = [x - e for x, e in zip(tab.b, tab.b_error)]
        checks.append((b_hat, EMBEDDED_ORDER[name]))
        assert sum(tab.mid) == pytest.approx(1 / 2, abs=1e-12)     # y(t0 + h/2) to first order
    for b, order in checks:
        pairs = conditions(b, tab.c, tab.a)
        for weight, target in pairs[:TREES_UP_TO[min(order, 4)]]:
            assert weight == pytest.approx(target, abs=1e-12)
        if order < 4:    # and no more: the conditions of the next order fail
            assert any(w != pytest.approx(g, abs=1e-6) for w, g in pairs[TREES_UP_TO[order]:TREES_UP_TO[order + 1]])


def test_the_docstring_example_runs_and_is_third_order():
    """The module docstring's tableau, held by a module as a user's would be, named by its path."""
    test = next(t for t in doctest.DocTestFinder().find(tableaux) if t.name == tableaux.__name__)
    runner = doctest.DocTestRunner()
    runner.run(test, clear_globs=False)
    assert runner.tries >= 2 and runner.failures == 0
    globals()["KUTTA3"] = test.globs["KUTTA3"]
    path = f"{__name__}.KUTTA3"
    assert tableaux.exists(path) and not tableaux.is_adaptive(path)
    lam = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    errors = []
    for n in (16, 32):
        y1 = integrate(lambda t, y: lam * y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                       method=path, loop="odex", options={"step_size": 1 / n})[-1]
        errors.append(float((y1 - torch.exp(lam)).abs().max()))
    assert abs(math.log2(errors[0] / errors[1]) - 3) < 0.15
    with pytest.raises(LookupError, match="is a module, not an odex.ode.tableau.ButcherTableau"):
        tableaux.of_user(f"{__name__}.math")
    with pytest.raises(LookupError, match="has no 'KUTTA4'"):
        tableaux.of_user(f"{__name__}.KUTTA4")
