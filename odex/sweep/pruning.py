"""Pruning across a sweep: a job stops, with status `pruned: <reason>`, when its configuration's mean
at the same epoch is worse than the median of the other configurations (Optuna's MedianPruner rule,
per configuration), read from the sweep folder's files. Design notes: docs/design-notes.md.
"""
from __future__ import annotations

import logging
import statistics
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from odex.errors import ConfigError, Pruned
from odex.sweep.jobs import read_job, split_override

log = logging.getLogger("odex")

LEFT_OUT = ("diverged: ", "failed: ", "pruned: ")


def configuration(overrides: list[str], replicate: str) -> tuple[str, ...]:
    """A job's configuration: its overrides without the replicate key (e.g. trainer.seed)."""
    return tuple(sorted(o for o in overrides if split_override(o)[0] != replicate))


class MedianPruning:
    """The median rule above. `metric` and `mode` (max | min) as the sweep's objective;
    `replicate`: the key whose values are replicates of one configuration."""

    def __init__(self, metric: str = "val/acc", mode: str = "max", replicate: str = "trainer.seed",
                 min_configs: int = 3, warmup_epochs: int = 1):
        if metric.startswith("test/"):
            raise ConfigError(f"callbacks.prune.metric={metric}: pruning on test data would select on it; "
                              "use a validation metric (val/acc, val/loss; set dataset.val_fraction)")
        self.metric, self.mode, self.replicate = metric, mode, replicate
        self.min_configs, self.warmup_epochs = min_configs, warmup_epochs
        self.sweep_dir: Path | None = None
        self.warned = False

    def on_fit_start(self, trainer, **_) -> None:
        try:
            hc = HydraConfig.get()
        except ValueError:       # not inside a Hydra run
            return
        if hc.mode != RunMode.MULTIRUN:
            return
        # the job folders' common parent (hydra.sweep.dir/<job number>): absolute, so a SLURM job
        # whose working directory differs from the launching one reads the same folder
        self.run_dir = Path(trainer.run_dir).resolve()
        self.sweep_dir = self.run_dir.parent
        self.config = configuration([str(o) for o in hc.overrides.task], self.replicate)

    def on_epoch_saved(self, epoch: int, metrics: dict, **_) -> None:
        if self.sweep_dir is None or epoch < self.warmup_epochs:
            return
        if self.metric not in metrics:
            if not self.warned:
                log.warning("callbacks.prune: no %s in this job's metrics (a validation split: "
                            "dataset.val_fraction=0.1): it is never pruned", self.metric)
                self.warned = True
            return
        own = [float(metrics[self.metric])]
        others: dict[tuple[str, ...], list[float]] = {}
        for folder in sorted(p for p in self.sweep_dir.iterdir() if p.is_dir()):
            if folder.resolve() == self.run_dir:
                continue
            job = read_job(folder, self.sweep_dir, config=False)
            status = str((job.summary or {}).get("status", ""))        # none yet while it runs
            values = job.series(self.metric)
            if job.unreadable or status.startswith(LEFT_OUT) or epoch not in values:
                continue
            config = configuration(job.overrides, self.replicate)
            if config == self.config:
                if any(e > epoch for e in values):
                    return          # this configuration was let through at this epoch: it stays
                own.append(values[epoch])
            else:
                others.setdefault(config, []).append(values[epoch])
        if len(others) < self.min_configs:
            return
        mine = statistics.fmean(own)
        median = statistics.median(statistics.fmean(v) for v in others.values())
        if mine < median if self.mode == "max" else mine > median:
            raise Pruned(f"{self.metric} {mine:.4g} at epoch {epoch} (mean of this configuration's {len(own)} "
                         f"job(s)) is {'below' if self.mode == 'max' else 'above'} the median {median:.4g} of "
                         f"{len(others)} other configurations at that epoch")
