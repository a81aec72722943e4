"""Hydra callbacks (conf/train.yaml: hydra.callbacks). Hydra calls them in the process that runs the
sweep, whatever the launcher, so they see the whole sweep; the jobs themselves may have run in
other processes or on other machines, hence they read the job folders rather than return values."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("odex")

# How many jobs of the last multirun in this process failed (read by odex.train.main for the exit
# status: 1 when any failed, after the summary).
LAST_SWEEP: dict[str, int] = {}


class SweepSummary(Callback):
    """At the end of a multirun: 'N of M jobs failed' with each failed job's folder and reason,
    the command that writes the sweep report and the one that uploads its offline W&B runs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .report import collect

        sweep_dir = str(config.hydra.sweep.dir)
        try:
            jobs = collect(sweep_dir)
        except Exception as e:  # noqa: BLE001 -- a summary must never turn a finished sweep into a crash
            log.warning("could not summarise the sweep in %s: %s", sweep_dir, e)
            return
        # an earlier attempt that a rerun moved aside (<job>/attempt-N/, odex/resume.py) is not a job
        jobs = [j for j in jobs if not any(p.startswith("attempt-") for p in Path(j.folder).relative_to(sweep_dir).parts)]
        failed = [j for j in jobs if not j.completed]
        LAST_SWEEP.update(jobs=len(jobs), failed=len(failed))
        lines = [f"odex: sweep finished: {len(jobs)} jobs, {len(failed)} failed"
                 + (":" if failed else f"; report: odex-report {sweep_dir}")]
        for j in failed:
            lines.append(f"  {j.folder}: {j.status}")
        if failed:
            lines.append(f"odex: {len(failed)} of {len(jobs)} jobs failed (see above); "
                         f"report: odex-report {sweep_dir}")
        from .sync import offline_runs
        runs = offline_runs(sweep_dir)
        if runs:
            lines.append(f"odex: {len(runs)} offline W&B runs; upload them with: odex-sync {sweep_dir}")
        # print, not only log: this is the sweep's last word on the console, whatever the logging setup
        print("\n".join(lines), flush=True)
