"""`odex-report`'s own offline W&B run (job_type `report`) in the sweep's group, in
`<report folder>/wandb/`: the report's table and plots, the job counts and the decision. Re-running
the report replaces it. Design notes: docs/design-notes.md, "odex/tracking/report_run.py".
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any


def log_report(jobs, out: Path, pngs: list[str], counts: str, decision: list[str]) -> tuple[Any, list[str]]:
    """Write the report's offline W&B run; returns (its folder or None, a line for report.md)."""
    groups = sorted({(j.summary or {}).get("wandb/group") for j in jobs} - {None})
    if not groups:
        return None, ["W&B: no report run (the jobs did not log to W&B)"]
    if os.environ.get("WANDB_MODE") == "disabled":
        return None, ["W&B: no report run (WANDB_MODE=disabled)"]
    if len(groups) > 1:
        return None, [f"W&B: no report run: the jobs logged into {len(groups)} groups ({', '.join(groups)})"]
    group = groups[0]
    logger = next((j.config.get("logger") for j in jobs if isinstance(j.config.get("logger"), dict)), {}) or {}
    import wandb

    run_id = "report-" + hashlib.sha1(group.encode()).hexdigest()[:12]
    for old in (out / "wandb").glob(f"offline-run-*-{run_id}"):
        shutil.rmtree(old)                   # the earlier report of this sweep: replaced
    run = wandb.init(project=logger.get("project") or "odex", entity=logger.get("entity"), group=group,
                     job_type="report", name=f"report {group}", id=run_id, dir=str(out), mode="offline",
                     notes="\n".join(decision), tags=["report"],
                     config={"sweep_dir": str(out.parent), "report_dir": str(out)},
                     settings=wandb.Settings(silent=True, console="off"))
    try:
        with open(out / "report.csv", newline="") as f:
            rows = list(csv.reader(f))
        table = wandb.Table(columns=rows[0], data=[[str(v) for v in r] for r in rows[1:]])
        run.log({"configurations": table, **{f"plots/{Path(p).stem}": wandb.Image(str(out / p)) for p in pngs}})
        run.summary["jobs"] = counts
        run.summary["decision"] = "\n".join(decision)
        folder = Path(run.dir).parent
    finally:
        run.finish()
    from odex.tracking.wandb_offline import wait_written
    wait_written(folder)           # the file complete before anyone reads it
    return folder, [f"W&B: the report's own run (table and plots) in group `{group}`: {folder}; "
                    f"upload with the jobs' runs: odex-sync {out.parent}"]
