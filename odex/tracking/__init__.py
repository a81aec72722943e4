"""Metrics (conf/logger/): one tracker writing every sink (tracker.py), the offline wandb reader
(wandb_offline.py), a run's provenance (provenance.py) and `odex-sync` (sync.py)."""
