"""Hydra callbacks (conf/train.yaml: hydra.callbacks). Hydra calls them in the process that runs the
sweep, whatever the launcher, so they see the whole sweep; the jobs themselves may have run in
other processes or on other machines, hence they read the job folders rather than return values."""
from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("odex")


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
        failed = [j for j in jobs if not j.completed]
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
