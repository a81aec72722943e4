"""`odex-train`: compose the configs, build every part by `instantiate`, train, record.

    odex-train dataset=mnist model=augmented grad=adjoint optim.lr=1e-3 trainer.max_epochs=5
    odex-train -m optim.lr=1e-2,1e-3 dataset.batch_size=32,64

`run(cfg, run_dir)` does the work and returns the summary (also written to summary.json); it never
raises for a failed run, so a sweep goes on when one of its jobs fails. `main` is the Hydra entry
point: a failed single run prints one line to stderr and exits non-zero; in a sweep it returns the
value a sweeper optimises (val/acc, else test/acc; None for a failed job, which the basic sweeper
ignores and the Optuna sweeper records as a failed trial).

Sweeps (conf/sweep/, hydra/launcher=joblib|submitit_*): every job runs inside `isolated_job()`
(odex/process_state.py), since launchers run several jobs in one process, and under `StopSignals`
(odex/signals.py): SIGTERM/SIGUSR1 stop the job at a batch boundary with a checkpoint, and
`trainer.resume=auto` (odex/resume.py) continues it when it is run again in the same folder.
"""
from __future__ import annotations

import logging
import random
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import resume as resuming
from .config import build, config_dir
from .errors import OdexError
from .optim import build_optimizer, build_schedule
from .process_state import isolated_job
from .signals import StopSignals
from .tracking import ConsoleSink, JsonlSink, Tracker

log = logging.getLogger("odex")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _swept_keys(hc) -> set[str]:
    """The keys a sweep varies: sweep-syntax command-line overrides (recorded by Hydra in the sweep
    folder's multirun.yaml) and the sweeper's own `params` (sweep configs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = set((hc.sweeper.get("params") or {}).keys())
    recorded = Path(hc.sweep.dir) / "multirun.yaml"
    if recorded.is_file():
        task = OmegaConf.load(recorded).hydra.overrides.task
        for o in OverridesParser.create().parse_overrides(list(task)):
            if o.is_sweep_override():
                keys.add(o.get_key_element())
    return keys


def _job_info() -> dict[str, Any]:
    """Group, name and tags for the tracker. Inside a Hydra sweep: the sweep folder's name as the
    group, the values of the swept keys (e.g. `optim.lr=0.01,dataset.batch_size=32`) as the name,
    and tags naming the job, the sweep config and the launcher."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    task = list(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN:
        return {"name": ",".join(task) or None}
    swept = _swept_keys(hc)
    varied = [o for o in task if o.split("=", 1)[0].lstrip("+~") in swept] or task
    choices = hc.runtime.choices
    tags = [f"job{hc.job.num}", "sweep", f"launcher:{choices.get('hydra/launcher', 'basic')}"]
    if choices.get("sweep"):
        tags.append(f"sweep:{choices.get('sweep')}")
    return {"group": Path(hc.sweep.dir).name, "name": ",".join(varied) or f"job{hc.job.num}", "tags": tags}


def chosen_parts(node, group: str) -> dict[str, Any]:
    """Build a list-valued group (eval=[clean,pgd], callbacks=[swa]): one object per entry. An entry
    with settings but no `_target_` is a choice an experiment configured and the command line left
    out (experiment=lyanet_fmnist eval=[clean]): it is skipped, with a note."""
    out: dict[str, Any] = {}
    for name, sub in (node or {}).items():
        if sub is None:
            continue
        if not (hasattr(sub, "get") and sub.get("_target_")):
            log.info("%s.%s has settings but %s is not among the chosen %s: not used", group, name, name, group)
            continue
        out[name] = build(sub)
    return out


def checkpoint_epoch(checkpoint: dict | None) -> int:
    """Epochs a resumed run has already completed (0 for a new run)."""
    return 0 if checkpoint is None else int(checkpoint.get("epoch", 0))


def _status(e: BaseException) -> str:
    if isinstance(e, OdexError):
        return f"failed: {e}"
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "failed: out of memory (try a smaller dataset.batch_size)"
    return f"failed: {type(e).__name__}: {e}"


def _config(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 -- e.g. ${hydra:...} outside a Hydra run: record it unresolved
        return OmegaConf.to_container(cfg, resolve=False)


def run(cfg: DictConfig, run_dir: str | Path, *, stop: StopSignals | None = None) -> dict[str, Any]:
    """Train one configuration; returns the summary (with `status`), never raises for the run.

    With trainer.resume=auto|must an earlier attempt in `run_dir` is continued from its checkpoint,
    or, when it completed, skipped (its summary is returned as it is). `stop` (see odex.signals)
    ends training at a batch boundary with a checkpoint; the status then says how to resume.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(run_dir, [JsonlSink(), ConsoleSink()])
    extra: dict[str, Any] = {"run_dir": str(run_dir)}
    status = "failed: did not start"
    completed_before = None
    try:
        # float32 CPU math in its fast state for the whole run; changes no result (odex/cpu_math.py)
        from .cpu_math import warm_up_vector_math
        warm_up_vector_math()
        trainer = build(cfg.trainer)
        config = _config(cfg)
        previous = resuming.prepare(run_dir, trainer.resume, config, trainer.max_epochs)
        if previous.completed is not None:
            completed_before = previous.completed
            log.info("%s already holds this completed run: skipped (trainer.resume=never runs it again)", run_dir)
            return completed_before
        seed_everything(trainer.seed)
        data = build(cfg.dataset)
        solver = build(cfg.solver)
        grad = build(cfg.grad)
        model = build(cfg.model, info=data.info, solver=solver, grad=grad).to(trainer.device)
        trainer.fast_paths.apply(model)     # trainer.precision / compile / channels_last
        data = data.to(trainer.device)
        objective = build(cfg.objective)
        evaluators = chosen_parts(cfg.eval, "eval")
        optimizer = build_optimizer(cfg.optim, model)
        steps_per_epoch = -(-len(data.train) // data.batch_size)
        schedule = build_schedule(cfg.schedule, optimizer, steps_per_epoch=steps_per_epoch,
                                  max_epochs=trainer.max_epochs)
        if trainer.fast_paths.auto_compile:
            from .compile_choice import choose_compile
            from .data.batches import to_unit_float
            done = checkpoint_epoch(previous.checkpoint)
            choice = choose_compile(model, to_unit_float(data.train.x[:data.batch_size]),
                                    iterations=steps_per_epoch * max(trainer.max_epochs - done, 0))
            log.info("trainer.compile=auto: %s (%s)", "compiled (" + choice.backend + ")" if choice.compile
                     else "eager", choice.reason)
            extra.update(choice.summary())
        generator = torch.Generator(device=trainer.device).manual_seed(trainer.seed)
        extra["params"] = sum(p.numel() for p in model.parameters())
        log.info("%s on %s: %d parameters, %d train / %d test examples, run folder %s",
                 type(model).__name__, trainer.device, extra["params"], len(data.train), len(data.test), run_dir)
        checkpoint = previous.checkpoint
        if checkpoint is not None:
            where = (f"epoch {checkpoint['epoch'] + 1}, batch {checkpoint['progress']['step']}"
                     if checkpoint.get("progress") else f"the end of epoch {checkpoint['epoch']}")
            log.info("resuming from %s (%s)", resuming.checkpoint_path(run_dir), where)

        logger = build(cfg.logger)
        if logger is not None:
            tracker.sinks.append(logger)
        job = _job_info()
        if checkpoint is not None and checkpoint.get("tracker", {}).get("wandb_id"):
            job["wandb_id"] = checkpoint["tracker"]["wandb_id"]     # the same wandb run goes on
        tracker.start(config, job)
        callbacks = chosen_parts(cfg.get("callbacks"), "callbacks")
        extra.update(trainer.fit(model=model, data=data, objective=objective, optimizer=optimizer,
                                 schedule=schedule, evaluators=evaluators, tracker=tracker,
                                 run_dir=run_dir, generator=generator, callbacks=callbacks,
                                 resume=checkpoint, stop=stop, config=config))
        status = "completed"
    except KeyboardInterrupt:
        status = "failed: interrupted"
        raise
    except Exception as e:  # noqa: BLE001 -- a failed run is recorded, not raised (sweeps go on)
        status = _status(e)
        (run_dir / "error.log").write_text(traceback.format_exc())
        if not isinstance(e, (OdexError, torch.cuda.OutOfMemoryError)):
            log.error("unexpected error (traceback also in %s)", run_dir / "error.log", exc_info=True)
    finally:
        if completed_before is None:
            summary = tracker.finish(status, extra)
    return summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode == RunMode.RUN and hc.runtime.choices.get("sweep"):
        log.warning("sweep=%s sets up a multirun: add -m to run its jobs (this is one run)",
                    hc.runtime.choices.get("sweep"))
    with isolated_job(), StopSignals() as stop:
        summary = run(cfg, hc.runtime.output_dir, stop=stop)
    if summary["status"] != "completed":
        print(f"odex: error: {summary['status'][len('failed: '):]}", file=sys.stderr)
    if stop.requested:        # the checkpoint is written: hand the signal on (submitit requeues) and exit
        stop.hand_over()
    if summary["status"] != "completed":
        if hc.mode == RunMode.RUN:
            sys.exit(1)
        return None
    return summary.get("val/acc", summary.get("test/acc"))


if __name__ == "__main__":
    main()
