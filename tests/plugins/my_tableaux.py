"""A Butcher tableau of the user's own, outside odex: `solver.method=my_tableaux.RALSTON21
solver.loop=odex` (this folder on hydra.searchpath makes the module importable).

Ralston's second-order method (Ralston, "Runge-Kutta methods with minimum error bounds", 1962:
c2 = 2/3, b = (1/4, 3/4)) with Euler's step as its embedded first-order estimate, so an adaptive
2(1) pair: e = b - b_hat = (1/4 - 1, 3/4). Its dense output takes y(t0 + h/2) from the Euler half
step (first order, as torchdiffeq's adaptive_heun does).
"""
from odex.ode.tableau import ButcherTableau, embedded

RALSTON21 = ButcherTableau(c=(0.0, 2 / 3), a=((), (2 / 3,)), b=(0.25, 0.75), order=2,
                           b_error=embedded((0.25, 0.75), (1.0, 0.0)), mid=(0.5, 0.0))

NOT_A_TABLEAU = 0.5         # what a typo may name instead: refused by the validation stage
