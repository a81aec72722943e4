"""Metrics (conf/logger/): one tracker writing every sink (tracker.py), the offline wandb reader
(wandb_offline.py), a run's provenance (provenance.py), `odex-sync` (sync.py) and odex-report's
own W&B run (report_run.py)."""
