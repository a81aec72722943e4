"""`odex-train`: compose the configs, build every part by `instantiate`, train, record.

`run(cfg, run_dir)` never raises for a failed run, so a sweep goes on when one job fails; `main` is
the Hydra entry point. Each job runs inside `isolated_job()` and under `StopSignals`.
Design notes: docs/design-notes.md, "odex/train.py".
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
import traceback
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import hydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import odex.tracking.provenance as provenance
import odex.training.resume as resuming
from odex.build import chosen_parts
from odex.config import USAGE_ERROR, build, config_dir, preflight, validate
from odex.errors import ConfigError, OdexError, ReadOnlyFolder, RunStopped
from odex.training import atomic, run_record
from odex.training.signals import Preempted, StopSignals, SweepParentSignals
from odex.training.threads import passive_openmp_waits
from odex.tracking.tracker import ConsoleSink, JsonlSink, Tracker

# torch, numpy and the modules that need them are imported inside the functions that use them:
# `odex-train --help`, `--cfg job` and a rejected override answer without loading torch
# (tests/test_startup.py).

log = logging.getLogger("odex")


def _swept_keys(hc) -> set[str]:
    """The keys a sweep varies: sweep-syntax command-line overrides (recorded by Hydra in the sweep
    folder's multirun.yaml) and the sweeper's own `params` (sweep configs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = set((hc.sweeper.get("params") or {}).keys())
    recorded = Path(hc.sweep.dir) / "multirun.yaml"
    if recorded.is_file():
        task = OmegaConf.load(recorded).hydra.overrides.task
        keys |= {o.get_key_element() for o in OverridesParser.create().parse_overrides(list(task))
                 if o.is_sweep_override()}
    return keys


def _sweep_group(hc, choices) -> str:
    """The W&B group of a sweep's jobs: the sweep folder's date and time, the sweep's name and the
    sweep's id, e.g. `2025-01-31_12-00-00-000000_lr_bs_grid_3f9a01c2` (the sweep config, else the
    experiment, else `multirun`; the id: odex.sweep.callbacks.sweep_id)."""
    from odex.sweep.callbacks import sweep_id

    folder = Path(hc.sweep.dir)
    name = choices.get("sweep") or choices.get("experiment") or "multirun"
    return f"{folder.parent.name}_{folder.name}_{name}_{sweep_id(folder)}"


def _job_info() -> dict[str, Any]:
    """What the tracker and the terminal say about this run: W&B group, name and tags, the `run`
    block added to the W&B config (Hydra group choices, experiment, overrides, odex version, git
    commit), and inside a sweep the job's label for log lines and progress bars (job number and
    swept values) and whether the launcher runs jobs side by side."""
    from odex.sweep.jobs import short

    hc = run_record.hydra_config()
    if hc is None:
        return {}

    task = list(hc.overrides.task)
    choices = OmegaConf.to_container(hc.runtime.choices)
    changed = provenance.non_default_choices(choices)
    run_block = {"choices": {g: c for g, c in choices.items() if not g.startswith("hydra/")},
                 "experiment": choices.get("experiment"), "overrides": task, **provenance.code_state()}
    # tags hold at most 64 characters in W&B
    tags = [f"{g}:{c}"[:64] for g, c in changed.items()]
    if hc.mode != RunMode.MULTIRUN:
        return {"name": ",".join(task) or None, "tags": tags, "run": run_block}
    swept = _swept_keys(hc)
    varied = [o for o in task if o.split("=", 1)[0].lstrip("+~") in swept] or task
    run_block.update(sweep_dir=str(hc.sweep.dir), job_num=hc.job.num)
    tags += [f"job{hc.job.num}", "sweep", f"launcher:{choices.get('hydra/launcher', 'basic')}"]
    if choices.get("sweep"):
        tags.append(f"sweep:{choices.get('sweep')}")
    label_values = " ".join(f"{o.split('=', 1)[0]}={short(o.split('=', 1)[1])}" for o in varied if "=" in o)
    n_jobs = (hc.launcher.get("n_jobs") if hasattr(hc.launcher, "get") else None) or 1
    return {"group": _sweep_group(hc, choices), "name": ",".join(varied) or f"job{hc.job.num}",
            "tags": list(dict.fromkeys(tags)), "run": run_block,
            "label": f"job {hc.job.num}" + (f" {label_values}" if label_values else ""),
            "parallel": n_jobs not in (1, None)}


@contextmanager
def labelled_logs(label: str | None) -> Iterator[None]:
    """Every odex log line written inside the block starts with `[label]` (the job in a sweep), so
    the interleaved lines of parallel jobs can be told apart. A record factory rather than a
    formatter: Hydra owns the handlers and their formats."""
    if not label:
        yield
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if record.name == "odex" or record.name.startswith("odex."):
            record.msg = f"[{label}] {record.msg}"
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def _status(e: BaseException) -> str:
    import torch

    if isinstance(e, RunStopped):       # diverged (run health) or pruned (a sweep's pruning)
        return f"{e.kind}: {e}"
    if isinstance(e, OdexError):
        return f"failed: {e}"
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "failed: out of memory (try a smaller dataset.batch_size)"
    return f"failed: {type(e).__name__}: {e}"


# what odex.training.run_record.claim adds (Hydra's record and log file, written by odex): not the user's
_ODEX_ADDED = ("hydra.output_subdir=", "hydra.job_logging.handlers.file.filename=")


def resume_command(run_dir: str | Path) -> str:
    """The command that continues a stopped run: the same overrides in the same folder (a job of a
    multirun: the same multirun in the same sweep folder, which finishes its unfinished jobs),
    with trainer.resume=auto. Shell-quoted, ready to paste."""
    hc = run_record.hydra_config()
    if hc is None:        # odex.train.run called from Python: no command line
        return f"odex-train <the same overrides> hydra.run.dir={shlex.quote(str(run_dir))} trainer.resume=auto"
    multirun = hc.mode == RunMode.MULTIRUN
    saved = hc.overrides            # a multirun: as its first command gave them
    if multirun and (Path(hc.sweep.dir) / "multirun.yaml").is_file():
        saved = OmegaConf.load(Path(hc.sweep.dir) / "multirun.yaml").hydra.overrides
    task, hydra_overrides = list(saved.task), list(saved.hydra)
    folder_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = hc.sweep.dir if multirun else run_dir
    keep = [o for o in hydra_overrides if not o.startswith((f"{folder_key}=", "hydra.mode=", *_ODEX_ADDED))]
    task = [o for o in task if not o.lstrip("+").startswith("trainer.resume=")]
    words = ["odex-train", *(["-m"] if multirun else []), *task, *keep, f"{folder_key}={folder}",
             "trainer.resume=auto"]
    return " ".join(shlex.quote(str(w)) for w in words)


def left_behind(run_dir: str | Path, status: str) -> str:
    """One line after a failed run: what its folder now holds (the next step is to look there), or
    that an earlier run's folder was left as it was."""
    folder = Path(run_dir)
    try:
        ours = json.loads((folder / "summary.json").read_text()).get("status") == status
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        return (f"odex: {folder} holds an earlier run, left as it was" if folder.is_dir()
                else f"odex: no run folder was made ({folder})")
    held = ["summary.json (the status)"]
    if (folder / "error.log").is_file():
        held.append("error.log (the traceback)")
    if (folder / "metrics.jsonl").is_file():
        epochs = sum(1 for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip())
        held.append(f"metrics.jsonl ({epochs} epoch{'s' * (epochs != 1)})")
    if (folder / "checkpoints" / "last.pt").is_file():
        held.append("checkpoints/last.pt (the last good epoch)")
    return f"odex: the run is in {folder}: {', '.join(held)}"


def _config(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 -- e.g. ${hydra:...} outside a Hydra run: record it unresolved
        return OmegaConf.to_container(cfg, resolve=False)


def _space_needed(model, trainer_logger) -> int:
    """About the bytes a run writes at most at one time: a checkpoint (weights and up to two
    optimizer moments per weight) three times over (the old one, the new one before its rename,
    best.pt), metrics, summary, record and log, and an offline W&B run when there is a logger."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    checkpoint = 3 * weights + (64 << 10)
    return 3 * checkpoint + (256 << 10) + ((4 << 20) if trainer_logger is not None else 0)


def run(cfg: DictConfig, run_dir: str | Path, *, stop: StopSignals | None = None,
        choices: dict | None = None) -> dict[str, Any]:
    """Train one configuration; returns the summary (with `status`), never raises for the run.

    Validate, lock, inspect the folder, read the data, build, check the disk; only then write the
    folder, so a failing command never changes an earlier result (docs/design-notes.md)."""
    import torch

    from odex.build import build_run
    from odex.sweep.process_state import job_settings

    run_dir = Path(run_dir)
    out_dir = run_dir           # where this attempt writes: run_dir, or a new attempt-N/ beside a completed run
    tracker = Tracker(run_dir, [JsonlSink(), ConsoleSink()])
    # wall-clock start (and, from the tracker, end) as Unix times: odex-report marks jobs of a
    # sweep whose runs overlapped, i.e. shared the machine
    extra: dict[str, Any] = {"run_dir": str(run_dir), "time/start_unix": time.time()}
    status = "failed: did not start"
    committed = False           # the folder is ours to write
    earlier = True              # until looked at: assume the folder holds an earlier run
    lock = resuming.RunLock(run_dir)
    log_file = None
    usage_error = False
    job: dict[str, Any] = {}
    held = ExitStack()          # the run's locks and process-wide settings, let go at its end
    run_record.hold_log_lines()     # for the log file, opened once the folder is ours
    try:
        held.enter_context(lock)
        job = _job_info()       # before validation: a sweep's job refused by it still gets its W&B run
        # the code that ran, for summary.json (odex-report warns when a sweep's jobs ran different
        # code): from the job's W&B `run` block, or read here outside Hydra
        code = job.get("run") or provenance.code_state()
        extra.update({"odex/version": code["odex_version"], "odex/git_commit": code["git_commit"],
                      "odex/git_dirty": code["git_dirty"]})
        validate(cfg, choices)
        trainer = build(cfg.trainer)
        held.enter_context(job_settings(threads=trainer.threads, tf32=trainer.tf32, device=trainer.device,
                                        compiles=trainer.fast_paths.compiles))
        trainer.job_label, trainer.parallel = job.get("label"), job.get("parallel", False)
        config = _config(cfg)
        previous = resuming.inspect(run_dir, trainer.resume, config, trainer.max_epochs)
        earlier = previous.earlier
        if previous.completed is not None:
            log.info("%s already holds this completed run: skipped (trainer.resume=never runs it again)", run_dir)
            return previous.completed
        if lock.read_only:
            raise ReadOnlyFolder(f"{run_dir}: read-only folder, holding no completed run of this configuration: "
                                 "use a folder odex may write")
        if previous.elsewhere is not None:        # made (and locked) at commit, not before
            out_dir = tracker.run_dir = previous.elsewhere
            extra["run_dir"] = str(out_dir)
        checkpoint = previous.checkpoint
        built = build_run(cfg, trainer=trainer, epochs_done=int((checkpoint or {}).get("epoch", 0)))
        data, model = built.data, built.model
        # the split sizes, for odex-report's uncertainty (one example's share of an accuracy)
        extra.update({"data/train_size": len(data.train), "data/test_size": len(data.test),
                      "data/val_size": 0 if data.val is None else len(data.val)})
        if built.compile_choice is not None:
            extra.update(built.compile_choice.summary())
        generator = torch.Generator(device=trainer.device).manual_seed(trainer.seed)
        extra["params"] = sum(p.numel() for p in model.parameters())
        log.info("%s on %s: %d parameters, %d train / %d test examples, run folder %s",
                 type(model).__name__, trainer.device, extra["params"], len(data.train), len(data.test), out_dir)
        if checkpoint is not None:
            where = (f"epoch {checkpoint['epoch'] + 1}, batch {checkpoint['progress']['step']}"
                     if checkpoint.get("progress") else f"the end of epoch {checkpoint['epoch']}")
            log.info("resuming from %s (%s)", resuming.checkpoint_path(run_dir), where)

        callbacks = chosen_parts(cfg.get("callbacks"), "callbacks")
        # every part is built (a value only a built part can check has been checked), and the disk
        # can take the run: now the folder is ours -- an earlier attempt continued, moved aside into
        # attempt-N/, or (resume=never beside a completed run) a new attempt-N/
        logger = build(cfg.logger)
        atomic.require_space(out_dir, _space_needed(model, logger), "this run")
        resuming.commit(run_dir, previous)
        if out_dir != run_dir:
            held.enter_context(resuming.RunLock(out_dir))
        committed = True
        run_record.write_job_record(out_dir, cfg)
        log_file = run_record.start_log_file(out_dir)
        if logger is not None:
            tracker.sinks.append(logger)
        if checkpoint is not None and checkpoint.get("tracker", {}).get("wandb_id"):
            job["wandb_id"] = checkpoint["tracker"]["wandb_id"]     # the same wandb run goes on
        tracker.start(config, job)
        extra.update(trainer.fit(model=model, data=data, objective=built.objective, optimizer=built.optimizer,
                                 schedule=built.schedule, evaluators=built.evaluators, tracker=tracker,
                                 run_dir=out_dir, generator=generator, callbacks=callbacks,
                                 resume=checkpoint, stop=stop, config=config))
        status = "completed"
    except KeyboardInterrupt:
        status = "failed: interrupted"
        raise
    except Exception as e:  # noqa: BLE001 -- a failed run is recorded, not raised (sweeps go on)
        if isinstance(e, OSError) and e.errno in atomic.FULL:       # a write outside odex's own (a library's)
            e = atomic.disk_full(out_dir, 1 << 20, getattr(e, "filename", None) or "")
        status = _status(e)
        if isinstance(e, Preempted):      # the next step: the exact command that continues it
            status += f"; resume with: {resume_command(run_dir)}"
        usage_error = isinstance(e, ConfigError)
        if lock.held and not committed:
            earlier = lock.read_only or resuming.holds_run(run_dir)
        elif not lock.held:
            committed, earlier = False, True     # another process's folder: never write into it
        if committed or not earlier:
            try:
                atomic.makedirs(out_dir)
                atomic.write_text(out_dir / "error.log", traceback.format_exc())
                if not committed:       # a new folder: its record, so that a sweep's report lists the failed job
                    run_record.write_job_record(out_dir, cfg)
            except (OSError, OdexError) as write_error:
                log.debug("could not record the failure in %s: %s", out_dir, write_error)
        if not isinstance(e, (OdexError, torch.cuda.OutOfMemoryError)):
            log.error("unexpected error (traceback also in %s)", out_dir / "error.log", exc_info=True)
    finally:
        summary = {**extra, "status": status}
        if committed or not earlier:
            if not tracker.started and job.get("group"):     # a sweep's job that failed before training
                tracker.start_late(lambda: build(cfg.logger), _config(cfg), job)
            try:
                summary = tracker.finish(status, extra)
            except (OSError, OdexError) as write_error:    # a full disk: the earlier summary.json stays
                log.debug("summary not written: %s", write_error)
        # else: an earlier run's folder, not ours to write: its files stay as they were
        run_record.stop_log_file(log_file)
        held.close()
    return {**summary, "usage_error": True} if usage_error else summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run, or one job of a multirun (validated here, per job)."""
    from odex.sweep.process_state import isolated_job

    hc = run_record.hydra_config()
    if hc.mode == RunMode.RUN and hc.runtime.choices.get("sweep"):
        log.warning("sweep=%s sets up a multirun: add -m to run its jobs (this is one run)",
                    hc.runtime.choices.get("sweep"))
    label = _job_info().get("label")
    with isolated_job(), StopSignals() as stop, labelled_logs(label):
        summary = run(cfg, hc.runtime.output_dir, stop=stop, choices=dict(hc.runtime.choices))
    status = summary["status"]
    if status != "completed":     # one line why: `odex: error: ...`, or `odex: diverged: ...` / `odex: pruned: ...`
        print(f"odex: error: {status[len('failed: '):]}" if status.startswith("failed: ") else f"odex: {status}",
              file=sys.stderr)
        if status.startswith("failed: ") and not summary.get("usage_error") and "resume with: " not in status:
            print(left_behind(hc.runtime.output_dir, status), file=sys.stderr)
    if stop.requested:        # the checkpoint is written: hand the signal on (submitit requeues) and exit
        stop.hand_over()
    if summary["status"] != "completed":
        if hc.mode == RunMode.RUN:
            sys.exit(USAGE_ERROR if summary.get("usage_error") else 1)
        if status.startswith(("diverged: ", "pruned: ")):
            # the last epoch's val/acc it reached: Optuna's TPE learns that the region is poor (a
            # value it takes as final, as Optuna itself ranks a pruned trial by its last value);
            # None (a failed trial) when it stopped before its first epoch ended
            return summary.get("val/acc")
        return None
    return summary.get("val/acc", summary.get("test/acc"))


def main(argv: list[str] | None = None) -> None:
    """`odex-train [overrides]`: compose and validate first (odex.config.preflight: one line and
    exit status 2 for a mistake, before a run folder exists), lock the run folder
    (odex.training.run_record.claim: a second process stops within a second), then hand over to Hydra."""
    passive_openmp_waits()
    argv = list(sys.argv[1:] if argv is None else argv)
    run_record.claim_early(argv)       # a named folder that held a run: locked before the config is composed
    argv = preflight(argv)

    argv = run_record.claim(argv)      # the run (or sweep) folder locked, before torch is imported
    sys.argv = [sys.argv[0] if sys.argv else "odex-train", *argv]
    if not ({"-m", "--multirun"} & set(argv)):
        _hydra_main()
        return
    from odex.sweep.callbacks import LAST_SWEEP

    LAST_SWEEP.clear()
    with SweepParentSignals(), run_record.sweep_record():
        _hydra_main()
    if LAST_SWEEP.get("failed"):
        sys.exit(1)     # after the summary: a sweep with failed jobs says so in its exit status


if __name__ == "__main__":
    main()
