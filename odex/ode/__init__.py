"""The ODE machinery (conf/solver/, conf/grad/): `odeint` (odeint.py, public as `odex.odeint`), the
ODE block (block.py), the solver description (solver.py), NFE counting (nfe.py), the field's
precision (precision.py), the stepping loops (loops/) and the gradient methods (grad/).
Nothing is imported here: `import odex.ode...` stays cheap and torch loads only with a module."""
