"""Hydra callbacks (conf/train.yaml: hydra.callbacks). Hydra calls them in the process that runs the
sweep, whatever the launcher, so they see the whole sweep; the jobs themselves may have run in
other processes or on other machines, hence they read the job folders rather than return values."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("odex")

# How many jobs of the last multirun in this process failed (read by odex.train.main for the exit
# status: 1 when any failed, after the summary).
LAST_SWEEP: dict[str, Any] = {}
SWEEP_ID_FILE = ".odex_sweep_id"


def sweep_id(sweep_dir: str | Path) -> str:
    """The sweep's id (8 hex digits) in `<sweep_dir>/.odex_sweep_id`, made by the first process
    that asks, with a hard link (which fails if the file exists: parallel jobs agree)."""
    path = Path(sweep_dir) / SWEEP_ID_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{SWEEP_ID_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(4) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


class SweepSummary(Callback):
    """At the end of a multirun: the jobs that failed, diverged or were pruned (each with its folder
    and reason), and the commands that write the report and upload the offline W&B runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_id(str(config.hydra.sweep.dir))      # before any job starts: they all read it
        except OSError as e:
            log.warning("could not write the sweep id into %s: %s", config.hydra.sweep.dir, e)
        LAST_SWEEP["dir"] = str(config.hydra.sweep.dir)     # for the stop message's rerun command

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from odex.sweep.jobs import collect, tally

        sweep_dir = str(config.hydra.sweep.dir)
        try:
            jobs = collect(sweep_dir)
        except Exception as e:  # noqa: BLE001 -- a summary must never turn a finished sweep into a crash
            log.warning("could not summarise the sweep in %s: %s", sweep_dir, e)
            return
        failed = [j for j in jobs if j.kind == "failed"]
        stopped = [j for j in jobs if j.kind in ("diverged", "pruned")]     # stopped early, by design
        LAST_SWEEP.update(jobs=len(jobs), failed=len(failed))
        stopped_counts = f", {tally(stopped, ('diverged', 'pruned'))}" if stopped else ""
        lines = [f"odex: sweep finished: {len(jobs)} jobs, {len(failed)} failed{stopped_counts}"
                 + (":" if failed or stopped else f"; report: odex-report {sweep_dir}")]
        lines += [f"  {j.folder}: {j.status}" for j in failed + stopped]
        if stopped and not failed:
            lines.append(f"odex: report: odex-report {sweep_dir}")
        if failed:
            lines.append(f"odex: {len(failed)} of {len(jobs)} jobs failed (see above); "
                         f"report: odex-report {sweep_dir}")
        from odex.tracking.sync import offline_runs
        runs = offline_runs(sweep_dir)
        if runs:
            lines.append(f"odex: {len(runs)} offline W&B runs; upload them with: odex-sync {sweep_dir}")
        # print, not only log: this is the sweep's last word on the console, whatever the logging setup
        print("\n".join(lines), flush=True)


class SlurmJobStates(Callback):
    """hydra/launcher=slurm on a cluster without accounting storage (`sacct` disabled): submitit's
    job watcher asks squeue instead, and says so once (docs/design-notes.md)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if not target.endswith(".SlurmLauncher"):
            return
        import subprocess

        try:
            probe = subprocess.run(["sacct", "-n", "-j", "1"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("sacct could not be run (%s): following the array's jobs through squeue", e)
        else:
            if probe.returncode == 0:
                return
            log.info("sacct: %s: following the array's jobs through squeue",
                     (probe.stderr.strip() or f"exit status {probe.returncode}").splitlines()[-1])
        from submitit.slurm import slurm

        class SqueueInfoWatcher(slurm.SlurmInfoWatcher):
            """submitit's SLURM job watcher, reading squeue's output instead of sacct's (same columns)."""

            def _make_command(self):
                command = super()._make_command()
                if command is None:
                    return None
                ids = [command[i + 1] for i, a in enumerate(command) if a == "-j"]
                return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", "--jobs", ",".join(ids)]

            def read_info(self, string):
                if not isinstance(string, str):
                    string = string.decode()
                return super().read_info("JobID|State|NodeList\n" + string)

        slurm.SlurmJob.watcher = SqueueInfoWatcher(delay_s=slurm.SlurmJob.watcher._delay_s)
