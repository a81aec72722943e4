"""Optimizers (conf/optim/: parameter groups, Nero; optimizers.py) and learning-rate schedules
(conf/schedule/; schedules.py)."""
