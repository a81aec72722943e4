"""The debug group's training-loop parts (conf/debug/; trainer hooks, see odex.training.trainer.call_hooks):
`LossMustFall` (debug=overfit), `FiniteCheck` (debug=anomaly), `Profile` (debug=profile).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from odex.errors import TrainingFailed

log = logging.getLogger("odex")


class LossMustFall:
    """debug=overfit: after the last epoch, the training loss must be below `fraction` of the
    first epoch's (one batch seen again and again can be learnt by heart)."""

    def __init__(self, fraction: float = 0.5):
        # in (0, 1]: odex/schema.py LossMustFall, checked before the run
        self.fraction = fraction
        self.losses: list[float] = []

    def on_epoch_end(self, epoch: int, metrics: dict, model, optimizer) -> None:
        self.losses.append(metrics["train/loss"])

    def on_fit_end(self, model) -> None:
        if len(self.losses) < 2:
            return
        first, last = self.losses[0], self.losses[-1]
        if not last < self.fraction * first:
            raise TrainingFailed(f"debug=overfit: the training loss on one batch did not fall below "
                                 f"{self.fraction:g} x its first value ({first:.4g} -> {last:.4g} in "
                                 f"{len(self.losses)} epochs): check the model, the objective and optim.lr")
        log.info("debug=overfit: the loss on one batch fell from %.4g to %.4g in %d epochs",
                 first, last, len(self.losses))


def _first_bad(tensors) -> tuple[str, torch.Tensor] | None:
    for name, t in tensors:
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name, t
    return None


class FiniteCheck:
    """debug=anomaly: autograd anomaly detection, and a finite check at every step of each
    module's output (forward hooks: the state inside the ODE solves too), the loss, the gradients
    and the parameters; the first non-finite tensor ends the run with its name."""

    def __init__(self, detect_anomaly: bool = True):
        self.detect_anomaly = detect_anomaly
        self.where = "before training"
        self._hooks = []
        self._anomaly_before = torch.is_anomaly_enabled()

    def on_fit_start(self, trainer, model: nn.Module, optimizer, schedule) -> None:
        self._anomaly_before = torch.is_anomaly_enabled()
        torch.autograd.set_detect_anomaly(self.detect_anomaly)
        for name, module in model.named_modules():
            self._hooks.append(module.register_forward_hook(self._forward_hook(name or type(model).__name__)))
        self.model = model

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            outs = output if isinstance(output, (tuple, list)) else (output,)
            bad = _first_bad((f"output {i}" if len(outs) > 1 else "output", o) for i, o in enumerate(outs))
            if bad is not None:
                self._fail(f"the output of {name} ({type(module).__name__})", bad[1])
        return hook

    def _fail(self, what: str, t: torch.Tensor) -> None:
        self.on_fit_end(None)
        raise TrainingFailed(f"debug=anomaly: {what} is not finite {self.where} ({int(torch.isnan(t).sum())} nan "
                             f"and {int(torch.isinf(t).sum())} inf of {t.numel()} values, shape {tuple(t.shape)})")

    def on_epoch_start(self, epoch: int) -> None:
        self.where = f"in epoch {epoch}"

    def on_step_end(self, epoch: int, step) -> None:
        self.where = f"in epoch {epoch}"
        if not bool(torch.isfinite(step.loss.detach()).all()):
            self._fail("the loss", step.loss.detach())
        named = list(self.model.named_parameters())
        bad = (_first_bad((f"the gradient of {n}", p.grad) for n, p in named if p.grad is not None)
               or _first_bad((f"the parameter {n} (after the optimizer step)", p.detach()) for n, p in named)
               or _first_bad((f"the buffer {n}", b) for n, b in self.model.named_buffers()))
        if bad is not None:
            self._fail(*bad)

    def on_fit_end(self, model) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        torch.autograd.set_detect_anomaly(self._anomaly_before)


class Profile:
    """debug=profile: torch.profiler over `steps` training steps after `skip` warm-up steps (traced, not recorded); writes
    <run folder>/profile/trace.json (Chrome trace) and top_ops.txt (the `rows` operators with the
    most self time, CPU and, on a GPU, CUDA)."""

    def __init__(self, steps: int = 5, skip: int = 1, rows: int = 25):
        # the keys' ranges: odex/schema.py Profile, checked before the run
        self.steps, self.skip, self.rows = steps, skip, rows
        self.profiler = None
        self.done = False

    def on_fit_start(self, trainer, model, optimizer, schedule) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule as every

        self.out = Path(trainer.run_dir) / "profile"
        activities = [ProfilerActivity.CPU]
        self.cuda = trainer.device.type == "cuda"
        if self.cuda:
            activities.append(ProfilerActivity.CUDA)
        else:
            # libkineto probes for a GPU when the trace stops and, finding none, logs "ERROR ...
            # gpuGetDeviceCount failed" though nothing failed; on a CPU run its log is only that noise
            # (read from the environment when kineto starts, i.e. here)
            os.environ.setdefault("KINETO_LOG_LEVEL", "5")
        self.profiler = profile(activities=activities, record_shapes=True,
                                schedule=every(wait=0, warmup=self.skip, active=self.steps, repeat=1),
                                on_trace_ready=self._write)
        self.profiler.start()

    def _write(self, prof) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out / "trace.json"))
        sort = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=self.rows)
        (self.out / "top_ops.txt").write_text(f"{self.steps} training steps, sorted by {sort}\n{table}\n")
        log.info("debug=profile: %d steps profiled: %s, %s", self.steps, self.out / "trace.json",
                 self.out / "top_ops.txt")
        self.done = True

    def on_step_end(self, epoch: int, step) -> None:
        if self.profiler is not None and not self.done:
            self.profiler.step()
            if self.done:
                self.profiler.stop()
                self.profiler = None

    def on_fit_end(self, model) -> None:
        if self.profiler is not None:       # fewer steps than asked for: write what was profiled
            self.profiler.stop()
            if not self.done:
                log.warning("debug=profile: the run had fewer than %d steps after %d skipped; see %s",
                            self.steps, self.skip, self.out)
            self.profiler = None
