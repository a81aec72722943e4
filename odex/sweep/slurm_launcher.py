"""hydra/launcher=slurm: Hydra's submitit launcher, with a job that ends without a result recorded
as failed (its own summary.json) instead of ending the sweep; the class that Hydra loads is
`hydra_plugins.odex_launchers.SlurmLauncher`. Design notes: docs/design-notes.md.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

from odex.training import atomic

log = logging.getLogger("odex")


class RecordLostJobs:
    """For a subclass of the plugin's launcher: a job without a result is recorded as failed (see above)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        assert len(job_overrides) > 0
        params = self.params
        init_params = {"folder": self.params["submitit_folder"]}
        specific_init_keys = {"max_num_timeout"}
        init_params.update(**{f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys})
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {x if x in baseparams else f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x not in init_keys}
        executor.update_parameters(**params)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        returns = []
        for (overrides, _, num, _, _), job in zip(job_params, jobs):
            try:
                returns.append(job.results()[0])
            except Exception as e:  # noqa: BLE001 -- any job without a result: recorded, the sweep goes on
                returns.append(self._record_lost(overrides, num, job, e))
        return returns

    def _job_dir(self, overrides: list[str], num: int) -> Path:
        """The folder the job runs in: hydra.sweep.dir / hydra.sweep.subdir, composed as the job does."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config.hydra.job) as job:
                job.num = num
                job.id = f"job_id_for_{num}"
            return sweep_dir / str(sweep_config.hydra.sweep.subdir)
        except Exception:  # noqa: BLE001 -- a custom subdir that needs the job's runtime: the default
            return sweep_dir / str(num)

    def _record_lost(self, overrides: list[str], num: int, job, error: Exception) -> JobReturn:
        """Write the failed job's record into its folder (a completed record is kept as it is)."""
        try:
            state = str(job.state)
        except Exception:  # noqa: BLE001 -- the watcher could not say
            state = "UNKNOWN"
        reason = (f"SLURM job {job.job_id} ended without a result (state {state}): cancelled (scancel), "
                  f"or lost with its node")
        folder = self._job_dir(overrides, num)
        summary_path = folder / "summary.json"
        try:
            summary: dict[str, Any] = json.loads(summary_path.read_text())
        except (OSError, ValueError):       # none (it never started), or unreadable
            summary = {}
        if summary.get("status") == "completed":
            log.warning("job %d (%s): %s, but its summary says completed: kept", num, folder, reason)
        else:
            earlier = summary.get("status")
            summary.update({"run_dir": str(folder), "time/end_unix": time.time(),
                            "status": f"failed: {reason}" + (f" (it had recorded: {earlier})" if earlier else "")})
            hydra_dir = folder / ".hydra"
            hydra_dir.mkdir(parents=True, exist_ok=True)
            if not (hydra_dir / "overrides.yaml").exists():     # it never started: Hydra's record of the job
                OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
            atomic.write_text(summary_path, json.dumps(summary, indent=2) + "\n")
            log.error("job %d (%s): %s (%s: %s)", num, folder, reason, type(error).__name__,
                      str(error).splitlines()[0] if str(error) else "")
        # as odex's own failed jobs: None to the sweeper, no exception
        return JobReturn(overrides=list(overrides), working_dir=str(folder), task_name="",
                         status=JobStatus.COMPLETED, _return_value=None)
