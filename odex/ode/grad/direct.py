"""Direct backpropagation ("discretise-then-optimise" through the solver's own operations).

autograd records every stage of every step (accepted and rejected), so the gradient is the exact
gradient of the computed solution, at memory O(steps). The backward pass calls no vector field:
its backward NFE is 0 and its cost shows in the wall-clock.
"""
from __future__ import annotations

from odex import schema
from odex.ode.grad.base import GradientMethod
from odex.ode.loops import integrate


class Direct(GradientMethod):
    schema = schema.Direct
    name = "direct"

    def solve(self, func, y0, t, *, method, rtol, atol, options, loop="torchdiffeq", times=None):
        return integrate(func, y0, t, method=method, loop=loop, rtol=rtol, atol=atol, options=options, times=times)
