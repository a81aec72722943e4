"""Sweeps (conf/sweep/, conf/hydra/launcher/): the end-of-sweep callbacks and the sweep id
(callbacks.py), per-job process isolation (process_state.py), a sweep's jobs as data (jobs.py),
`odex-report` (report.py, report_plots.py) and the SLURM launcher's handling of jobs without a
result (slurm_launcher.py)."""
