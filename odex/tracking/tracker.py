"""The one metrics path: the trainer hands each epoch's values to a `Tracker`, which writes them to
every sink (metrics.jsonl in the run folder, the console log, Weights & Biases) and, at the end,
summary.json. Nothing else prints or logs metrics.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from odex.errors import ConfigError
from odex.training.atomic import append_text, write_text

log = logging.getLogger("odex")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)        # JSON has no NaN/inf
    return v


class Sink:
    """A destination for metrics. Subclasses override what they need."""

    def start(self, run_dir: Path, config: dict, job: dict) -> None: ...
    def log(self, metrics: dict[str, Any], epoch: int) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...
    def state(self) -> dict: return {}
    def summary_fields(self) -> dict[str, Any]: return {}     # what summary.json records about the sink


class NullSink(Sink):
    """logger=none."""


class JsonlSink(Sink):
    """One JSON object per epoch in <run>/metrics.jsonl (appended, flushed every line)."""

    def start(self, run_dir, config, job):
        self.path = Path(run_dir) / "metrics.jsonl"

    def log(self, metrics, epoch):
        # a failed append (a full disk) is cut back: the file keeps its earlier lines, whole
        append_text(self.path, json.dumps({"epoch": epoch, **{k: _clean(v) for k, v in metrics.items()}}) + "\n")


class ConsoleSink(Sink):
    """One line per epoch in the log (console and Hydra's <run>/train.log)."""

    KEYS = ("train/loss", "train/acc", "val/acc", "test/acc", "nfe/forward", "nfe/backward", "time/epoch_s")
    ALWAYS = ("grad/",)      # eval=grad_check's figures: the reason to choose it, so always shown

    def __init__(self, every: bool = False):
        self.every = every   # odex-eval: every figure it computed (PGD, certified, ...), not only KEYS

    def log(self, metrics, epoch):
        extra = [k for k in metrics if k not in self.KEYS and (self.every or k.startswith(self.ALWAYS))]
        parts = [f"{k} {metrics[k]:.4g}" for k in (*self.KEYS, *extra)
                 if k in metrics and isinstance(metrics[k], (int, float)) and not isinstance(metrics[k], bool)]
        log.info("epoch %d | %s", epoch, " | ".join(parts))


class WandbSink(Sink):
    """Weights & Biases. `mode`: offline (default; in the run folder, uploaded later with `odex-sync
    <folder>`), online (needs `wandb login` or WANDB_API_KEY), disabled. The run's config holds a
    `run` block (odex.train._job_info); a sweep's runs are grouped, named and tagged by the sweep;
    a resumed run goes on in its earlier run (job["wandb_id"]) (docs/design-notes.md)."""

    def __init__(self, mode: str | None = "offline", project: str = "odex", entity: str | None = None,
                 group: str | None = None, job_type: str = "train", tags: list[str] | None = None,
                 name: str | None = None, notes: str | None = None):
        self.mode = mode or "offline"
        self.project, self.entity, self.group = project, entity, group
        self.job_type, self.tags, self.name, self.notes = job_type, list(tags or []), name, notes
        self.run = None

    def start(self, run_dir, config, job):
        import wandb

        self.run_dir = run_dir
        if self.mode == "online" and not (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()):
            raise ConfigError("logger.mode=online needs a W&B API key: run `wandb login` or set "
                              "WANDB_API_KEY (or use the default offline mode and `odex-sync <folder>` later)")
        seed = (config.get("trainer") or {}).get("seed") if isinstance(config, dict) else None
        self.run = wandb.init(
            project=self.project, entity=self.entity, dir=str(run_dir), mode=self.mode,
            group=self.group or job.get("group"), job_type=self.job_type,
            tags=list(dict.fromkeys(self.tags + list(job.get("tags", []))
                                    + ([f"seed:{seed}"] if seed is not None else []))) or None,
            name=self.name or job.get("name"), notes=self.notes,
            config={**config, **({"run": job["run"]} if job.get("run") else {})},
            id=job.get("wandb_id"), resume="allow" if job.get("wandb_id") else None,
            # "wrap" hooks sys.stdout/stderr's write in this process (log lines, bars, the error);
            # "redirect" would take over the file descriptors, which parallel jobs share
            settings=wandb.Settings(silent=True, console="wrap"),
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def log(self, metrics, epoch):
        if self.run is not None:
            self.run.log({"epoch": epoch, **metrics})

    def finish(self, summary):
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})
            status = str(summary.get("status", ""))
            kind, _, reason = status.partition(":")
            kind = kind if kind in ("completed", "diverged", "pruned") else "failed"
            self.run.summary["state"], self.run.summary["reason"] = kind, reason.strip()
            self.run.tags = tuple(dict.fromkeys([*(self.run.tags or ()), f"status:{kind}"]))
            offline_dir = self.run.dir if self.mode == "offline" else None
            self.run.finish(exit_code=1 if kind == "failed" else 0)
            if offline_dir:
                run_folder = Path(offline_dir).parent
                from odex.tracking.wandb_offline import wait_written
                wait_written(run_folder)       # the file complete before the run is reported done
                log.info("wandb: offline run in %s; upload it with: odex-sync %s", run_folder, self.run_dir)
        finally:
            self.run = None

    def state(self):
        return {"wandb_id": self.run.id} if self.run is not None else {}

    def summary_fields(self):
        if self.run is None or self.mode == "disabled":
            return {}
        return {"wandb/group": self.run.group or None, "wandb/id": self.run.id}


def _netrc_has_wandb() -> bool:
    import netrc
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class Tracker:
    def __init__(self, run_dir: str | Path, sinks: list[Sink]):
        self.run_dir = Path(run_dir)
        self.sinks = sinks
        self.last: dict[str, Any] = {}
        self.started = False

    def start(self, config: dict, job: dict) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.started = True
        for s in self.sinks:
            s.start(self.run_dir, config, job)

    def start_late(self, make_logger, config: dict, job: dict) -> None:
        """A job that failed before training (a value its own validation refused, inside a sweep)
        still gets its logger's run, so W&B shows every job of the sweep with its state. Best
        effort: the logger itself may be what was refused."""
        try:
            logger = make_logger()
            if logger is None:
                return
            self.sinks.append(logger)
            self.start(config, job)
        except Exception as e:  # noqa: BLE001 -- the job's own failure is what the summary must say
            log.warning("no logger run for this failed job: %s: %s", type(e).__name__, e)

    def log(self, metrics: dict[str, Any], epoch: int) -> None:
        self.last.update(metrics)
        self.last["epoch"] = epoch
        for s in self.sinks:
            s.log(metrics, epoch)

    def state(self) -> dict:
        return {k: v for s in self.sinks for k, v in s.state().items()}

    def finish(self, status: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write summary.json (final values and status; atomically: a full disk leaves the earlier
        one and raises `DiskFull`, after the sinks are closed) and close every sink; returns the summary."""
        fields = {k: v for s in self.sinks for k, v in s.summary_fields().items()}
        summary = {**self.last, **(extra or {}), **fields, "time/end_unix": time.time(), "status": status}
        try:
            write_text(self.run_dir / "summary.json",
                       json.dumps({k: _clean(v) for k, v in summary.items()}, indent=2) + "\n")
        finally:
            for s in self.sinks:
                try:
                    s.finish(summary)
                except Exception as e:  # a sink failing at the end must not hide the run's own status
                    log.warning("could not close %s: %s", type(s).__name__, e)
        return summary
