"""Sweeps (conf/sweep/, conf/hydra/launcher/): the end-of-sweep callbacks (callbacks.py), per-job
process isolation (process_state.py) and `odex-report` (report.py, report_plots.py)."""
