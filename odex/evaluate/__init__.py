"""Evaluation (conf/eval/): the evaluators (evaluators.py: clean, PGD, certified), the attacks they
use (attacks.py), Lipschitz bounds (lipschitz.py), the gradient-fidelity check (grad_check.py) and
the `odex-eval` command (run.py)."""
