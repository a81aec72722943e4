"""The one training loop: per epoch, batches on the device, metrics accumulated in device tensors and
read back once at the epoch boundary; then evaluation, one tracker row and an atomic checkpoint.
Run health, resume and preemption hook in here. Design notes: docs/design-notes.md, "odex/training/trainer.py".
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import odex.training.checkpoint as ckpt
import odex.training.threads as cpu_threads
from odex.data import DataBundle
from odex.data.batches import Batches, RandomCropFlip
from odex.errors import ConfigError, Diverged, SolverError, TrainingFailed
from odex.evaluate.evaluators import evaluate
from odex.training.fast_paths import FastPaths
from odex.training.health import RunHealth
from odex.ode.nfe import counted_fields, reset_nfe, total_nfe
from odex.optim.optimizers import Schedule
from odex.training.resume import fingerprint as resume_fingerprint
from odex.training.signals import Preempted, StopSignals
from odex.tracking.tracker import Tracker

log = logging.getLogger("odex")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but CUDA is not available here; use trainer.device=auto or cpu")
    return dev


def call_hooks(parts, hook: str, **kwargs) -> None:
    """Call `hook(**kwargs)` on every part that defines it (model, objective, callbacks).

    Hooks: on_fit_start(trainer, model, optimizer, schedule) -- `trainer.run_dir` is the run's
    folder --, on_epoch_start(epoch), on_step_end(epoch, step), on_evaluate_start(epoch, model,
    train_batches, final) -- after the epoch's training, before its evaluation (stochastic weight
    averaging puts the averaged weights in here) --, on_epoch_end(epoch, metrics, model, optimizer)
    -- may add to `metrics` before they are logged --, on_epoch_saved(epoch, metrics) -- after the
    epoch's row is logged and its checkpoint written; may end the run by raising `RunStopped`
    (a sweep's pruning, odex/sweep/pruning.py) --, on_fit_end(model). A part that keeps state
    across epochs also defines state_dict() / load_state_dict(), saved in the checkpoint.
    """
    for p in parts:
        fn = getattr(p, hook, None)
        if callable(fn):
            fn(**kwargs)


def _host(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Read a dict of device scalars back in one transfer."""
    if not values:
        return {}
    keys = list(values)
    flat = torch.stack([torch.as_tensor(values[k]).detach().float().reshape(()) for k in keys])
    return dict(zip(keys, flat.tolist()))


class Trainer:
    def __init__(self, max_epochs: int = 10, device: str = "auto", seed: int = 0, eval_every: int = 1,
                 grad_clip: float | None = None, progress: bool | None = None, tf32: bool = True,
                 resume: str = "auto", precision: str = "fp32", compile: bool | str | None = None,
                 channels_last: bool = False, cuda_graph: bool = False, threads: int | str = "auto",
                 init_from: str | None = None, health: RunHealth | None = None):
        # the values' types and ranges, and init_from's file: odex/schema.py Trainer, checked before
        # anything is built (odex.config.validate)
        self.resume = resume              # read by odex.train.run (odex/training/resume.py)
        self.init_from = init_from        # a new run starts from these weights (fit)
        # process-wide: set by odex.sweep.process_state.job_settings around the run, not here
        cpu_threads.check(threads)
        self.threads, self.tf32 = threads, tf32
        # the speed settings the parts are built with (odex.build.build_run)
        self.fast_paths = FastPaths(precision, compile, channels_last, cuda_graph)
        self.health = health if health is not None else RunHealth(enabled=False)
        self.device = resolve_device(device)
        self.max_epochs, self.seed, self.eval_every, self.grad_clip = max_epochs, seed, eval_every, grad_clip
        self.progress = progress          # None: a bar only when the output is a terminal
        # set by odex.train.run inside a sweep: the job's label (job number and swept values) for
        # the bars, and whether the launcher runs jobs side by side, whose bars would overwrite each
        # other on one terminal line: there the default is no bar (the per-epoch log lines remain)
        self.job_label: str | None = None
        self.parallel = False

    def _bar_disabled(self) -> bool | None:
        """tqdm's `disable`: None (a bar only on a terminal) by default, no bar by default when jobs
        run in parallel, and what trainer.progress says when it is set."""
        if self.progress is not None:
            return not self.progress
        return True if self.parallel else None

    def progress_bar(self, epoch: int, n_batches: int) -> tqdm:
        """The epoch's bar, named after the job in a sweep: `job 3 optim.lr=0.01 epoch 1/10`."""
        return tqdm(total=n_batches, unit="batch", leave=True, disable=self._bar_disabled(),
                    desc=(f"{self.job_label} " if self.job_label else "") + f"epoch {epoch}/{self.max_epochs}")

    def fit(self, **kwargs) -> dict[str, Any]:
        """Train (see `_fit`). With run health on, a solver that gives up (step size underflow,
        max_num_steps) is a diverged run rather than a failed one."""
        try:
            return self._fit(**kwargs)
        except SolverError as e:
            if self.health.enabled:
                raise Diverged(str(e)) from e
            raise

    def _fit(self, *, model: nn.Module, data: DataBundle, objective, optimizer: torch.optim.Optimizer,
             schedule: Schedule, evaluators: dict, tracker: Tracker, run_dir: str | Path, generator: torch.Generator,
             callbacks: dict | None = None, resume: dict[str, Any] | None = None,
             stop: StopSignals | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train from the start (or from the `resume` checkpoint) to max_epochs. `stop.requested`
        ends the run at a batch boundary with a checkpoint and `Preempted`; `config` (the resolved
        run configuration) is stored in checkpoints so a resumption can check it is the same run."""
        callbacks = dict(callbacks or {})
        parts = [model, objective, *callbacks.values()]
        augment = None if data.augment is None else RandomCropFlip(**data.augment)
        loaders = {"train": Batches(data.train, data.batch_size, shuffle=True, generator=generator, augment=augment),
                   "test": Batches(data.test, data.eval_batch_size)}
        if data.val is not None:
            loaders["val"] = Batches(data.val, data.eval_batch_size)
        last_path = Path(run_dir) / "checkpoints" / "last.pt"
        fingerprint = None if config is None else resume_fingerprint(config)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.run_dir = Path(run_dir)
        if resume is None and self.init_from is not None:     # a resumed run has its own weights
            ckpt.load_weights(model, self.init_from, "trainer.init_from")
            log.info("starting from the weights in %s", self.init_from)
        call_hooks(parts, "on_fit_start", trainer=self, model=model, optimizer=optimizer, schedule=schedule)
        start_epoch, progress, elapsed = 0, None, 0.0
        if resume is not None:            # after on_fit_start, so callbacks' state exists to load into
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            schedule.load_state_dict(resume["schedule"])
            for name, c in callbacks.items():
                if hasattr(c, "load_state_dict") and name in resume.get("callbacks", {}):
                    c.load_state_dict(resume["callbacks"][name])
            tracker.last.update(resume.get("metrics", {}))
            self.health.load_state_dict(resume.get("health"))
            start_epoch, progress, elapsed = resume["epoch"], resume.get("progress"), resume.get("elapsed_s", 0.0)
            if progress is None:          # an epoch boundary: the random states are those at its end
                ckpt.set_rng_state(resume["rng"], generator)
        t_start = time.perf_counter() - elapsed
        # after the checkpoint's optimizer state is in (a CUDA graph moves it to the device), and
        # before any training, so a graph the model cannot have is a ConfigError up front
        train_step = self.fast_paths.train_step(model, objective, optimizer, grad_clip=self.grad_clip,
                                                device=self.device)

        def save(epoch_done: int, epoch_progress: dict | None = None) -> None:
            ckpt.save_atomic({
                "epoch": epoch_done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "rng": ckpt.rng_state(generator),
                "tracker": tracker.state(), "metrics": dict(tracker.last),
                "callbacks": {k: c.state_dict() for k, c in callbacks.items() if hasattr(c, "state_dict")},
                "elapsed_s": time.perf_counter() - t_start, "progress": epoch_progress,
                "config": fingerprint, "health": self.health.state_dict(),
            }, last_path)

        for epoch in range(start_epoch + 1, self.max_epochs + 1):
            t0 = time.perf_counter()
            call_hooks(parts, "on_epoch_start", epoch=epoch)
            model.train()
            reset_nfe(model)
            # The epoch's batch order (and augmentation) is drawn from here: kept for a mid-epoch
            # checkpoint, which replays it. get_state() copies the generator's state, no GPU sync.
            if progress is not None:
                generator.set_state(progress["batches_rng"])
            epoch_rng = generator.get_state()
            zero = torch.zeros((), device=self.device)
            # the epoch's running sums (device tensors but for the counts), kept in a mid-epoch checkpoint
            sums = {"loss_sum": zero.clone(), "correct": zero.clone(), "seen_logits": 0, "n_seen": 0, "stat_sums": {}}
            n_batches = len(loaders["train"])
            self.health.start_epoch(epoch, n_batches, t0)
            with self.progress_bar(epoch, n_batches) as bar:
                for k, (x, y) in enumerate(loaders["train"]):
                    if progress is not None:
                        if k < progress["step"]:   # done before the interruption: replayed, not trained
                            continue
                        sums = _restore_progress(progress, model, self.device)
                        t0 -= progress["epoch_s"]
                        bar.update(k)
                        progress = None
                    if stop is not None and stop.requested:     # a Python bool: no GPU sync
                        save(epoch - 1, _progress(k, epoch_rng, model, time.perf_counter() - t0, sums))
                        raise Preempted(f"preempted ({stop.name}) in epoch {epoch} after batch {k}/{n_batches}; "
                                        f"checkpoint in {last_path}")
                    step = train_step(x, y)          # objective, backward, clip, optimizer step
                    schedule.step("step")
                    call_hooks(parts, "on_step_end", epoch=epoch, step=step)
                    n = len(y)
                    sums["n_seen"] += n
                    sums["loss_sum"] += step.loss.detach() * n
                    if step.logits is not None:
                        sums["correct"] += (step.logits.detach().argmax(1) == y).sum()
                        sums["seen_logits"] += n
                    for key, v in step.stats.items():
                        sums["stat_sums"][key] = sums["stat_sums"].get(key, 0) + v.detach() * n
                    bar.update()
                    # a host decision (batch count, clock); the sums are read only a few times per epoch
                    self.health.after_batch(k, sums["loss_sum"], sums["n_seen"], model)
                if cuda:
                    torch.cuda.synchronize(self.device)
                epoch_s = time.perf_counter() - t0

                seen = max(sums["n_seen"], 1)
                device_values = {"train/loss": sums["loss_sum"] / seen,
                                 **{k: v / seen for k, v in sums["stat_sums"].items()}}
                if sums["seen_logits"]:
                    device_values["train/acc"] = sums["correct"] / sums["seen_logits"]
                nfe = total_nfe(model)
                if nfe is not None:
                    device_values["nfe/forward"] = nfe[0].float() / n_batches
                    device_values["nfe/backward"] = nfe[1].float() / n_batches
                metrics = _host(device_values)
                bar.set_postfix(loss=f"{metrics['train/loss']:.4f}",
                                nfe=f"{metrics.get('nfe/forward', 0):.1f}/{metrics.get('nfe/backward', 0):.1f}")
            self.health.end_epoch(epoch, metrics)
            if not math.isfinite(metrics["train/loss"]):
                raise TrainingFailed(
                    f"train/loss became {metrics['train/loss']} in epoch {epoch}: try a lower optim.lr "
                    f"or trainer.grad_clip (the last good checkpoint is kept in {last_path.parent})")
            metrics["lr"] = float(optimizer.param_groups[0]["lr"])
            if getattr(train_step, "captures", None) is not None:    # trainer.cuda_graph
                metrics["cuda_graph/captures"] = train_step.captures
            schedule.step("epoch")

            final = epoch == self.max_epochs     # all evaluators run; before, those with `every` only when due
            call_hooks(parts, "on_evaluate_start", epoch=epoch, model=model, train_batches=loaders["train"],
                       final=final)
            if "val" in loaders:
                metrics.update(_host(evaluate(evaluators, model, loaders["val"], "val", epoch=epoch, final=final)))
            if epoch % self.eval_every == 0 or final:
                metrics.update(_host(evaluate(evaluators, model, loaders["test"], "test", epoch=epoch, final=final)))
            metrics["time/epoch_s"] = epoch_s
            metrics["time/total_s"] = time.perf_counter() - t_start
            if cuda:
                metrics["mem/peak_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            call_hooks(parts, "on_epoch_end", epoch=epoch, metrics=metrics, model=model, optimizer=optimizer)
            tracker.log(metrics, epoch)
            save(epoch)
            if epoch < self.max_epochs:      # stopping after the last epoch would save nothing
                call_hooks(parts, "on_epoch_saved", epoch=epoch, metrics=metrics)
            if stop is not None and stop.requested and epoch < self.max_epochs:
                raise Preempted(f"preempted ({stop.name}) after epoch {epoch}; checkpoint in {last_path}")
        call_hooks(parts, "on_fit_end", model=model)
        return {"epochs": self.max_epochs}


def _progress(step: int, epoch_rng: torch.Tensor, model: nn.Module, epoch_s: float,
              sums: dict[str, Any]) -> dict[str, Any]:
    """What a mid-epoch checkpoint adds: where in the epoch, the epoch's running sums and NFE
    counters, and the global random states (the objective or the model may draw from them)."""
    return {"step": step, "batches_rng": epoch_rng, "epoch_s": epoch_s, "sums": sums,
            "nfe": [(m.nfe_forward.clone(), m.nfe_backward.clone()) for m in counted_fields(model)],
            "rng": ckpt.rng_state()}


def _restore_progress(progress: dict[str, Any], model: nn.Module, device: torch.device) -> dict:
    """Put back the state at the batch the interrupted run was about to train on; returns the sums."""
    for m, (fwd, bwd) in zip(counted_fields(model), progress["nfe"]):
        m.nfe_forward.copy_(fwd)
        m.nfe_backward.copy_(bwd)
    ckpt.set_rng_state(progress["rng"])
    sums = dict(progress["sums"])
    for key in ("loss_sum", "correct"):
        sums[key] = sums[key].to(device)
    sums["stat_sums"] = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in sums["stat_sums"].items()}
    return sums
