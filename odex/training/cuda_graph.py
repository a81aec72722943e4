"""trainer.cuda_graph=true: the whole training step captured once as a CUDA graph and replayed for
every batch of the same shape (PyTorch's "whole network capture"); kernel-launch overhead, not
arithmetic, sets the speed of a small field's fixed-step solve on a GPU. Needs every ODE block on
odex's sync-free fixed grid. Design notes: docs/design-notes.md, "odex/training/cuda_graph.py" (capture, host values, limits).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

from odex.errors import ConfigError
from odex.objectives.classification import Step
from odex.ode.block import ODEBlock
from odex.training.train_step import TrainStep

#: re-captures after which a warning says the graph is re-recorded too often to pay
RECAPTURE_WARNING = 10


def graph_blockers(model: nn.Module) -> list[str]:
    """The ODE blocks of `model` whose solves read GPU values on the host (not on odex's sync-free
    fixed grid, or with a gradient method that does not support a graph), described for an error."""
    out = []
    for name, block in model.named_modules():
        if isinstance(block, ODEBlock) and not (block.solver.fixed and block.solver.loop == "odex"
                                                and block.grad.supports.cuda_graph):
            out.append(f"{name or '<model>'} (solver {block.solver.method}, loop {block.solver.loop}, "
                       f"grad {block.grad.name})")
    return out


def hyperparameters(optimizer: torch.optim.Optimizer, skip_lr: list[bool]) -> list[tuple]:
    """The param groups' host-side settings a capture bakes in (everything but the parameters,
    and the learning rate where it is read from a device tensor), to compare before a replay."""
    return [tuple((k, id(v) if torch.is_tensor(v) else (tuple(v) if isinstance(v, list) else v))
                  for k, v in sorted(group.items()) if k != "params" and not (skip and k == "lr"))
            for group, skip in zip(optimizer.param_groups, skip_lr)]


@contextmanager
def _stepping_uncaptured():
    """torch warns when a capturable optimizer steps outside a capture; the warm-up and partial
    batches do so on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
        yield


class GraphedTrainStep(TrainStep):
    """A TrainStep that replays one CUDA graph per batch shape (docs/design-notes.md)."""

    def __init__(self, model: nn.Module, objective, optimizer: torch.optim.Optimizer,
                 grad_clip: float | None = None, *, device: torch.device, warmup: int = 3):
        blockers = graph_blockers(model)        # a ConfigError before any training
        if blockers:
            raise ConfigError(
                "trainer.cuda_graph=true needs every ODE block on a fixed-step solver (euler, midpoint, "
                "rk4, ... with solver.steps or solver.step_size) stepped by solver.loop=odex, with grad=direct, "
                "whose solve makes no host sync; these blocks are not: " + ", ".join(blockers) + ". Use such "
                "a solver and grad, or trainer.cuda_graph=false")
        if device.type != "cuda":
            raise ConfigError(f"trainer.cuda_graph=true needs a CUDA device, but the run is on {device}; "
                              "use trainer.device=cuda or trainer.cuda_graph=false")
        super().__init__(model, objective, optimizer, grad_clip)
        self.device, self.warmup = device, warmup
        self.calls = self.captures = 0
        # An optimizer built capturable (odex.optim.optimizers.build_optimizer; its state, loaded
        # from any checkpoint, is on the device) reads the learning rate from a device tensor in a
        # graph.
        self.tensor_lr = [bool(group.get("capturable")) for group in optimizer.param_groups]
        self._lr: list[torch.Tensor | None] = [None] * len(optimizer.param_groups)
        self._lr_value: list[float | None] = [None] * len(optimizer.param_groups)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._step: Step | None = None
        self._captured_with: list[tuple] | None = None
        self._stream: torch.cuda.Stream | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Step:
        if self.calls < self.warmup:
            self.calls += 1
            with _stepping_uncaptured():
                return self._warm_up(x, y)
        if self._graph is not None and not self._fits(x, y):
            with _stepping_uncaptured():
                return super().__call__(x, y)      # another shape: eager, into the same gradients
        if self._graph is None or hyperparameters(self.optimizer, self.tensor_lr) != self._captured_with:
            return self._capture(x, y)
        return self._replay(x, y)

    def _fits(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        sx, sy = self._static
        return x.shape == sx.shape and y.shape == sy.shape and x.dtype == sx.dtype and y.dtype == sy.dtype

    def _warm_up(self, x: torch.Tensor, y: torch.Tensor) -> Step:
        main = torch.cuda.current_stream(self.device)
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        self._stream.wait_stream(main)
        with torch.cuda.stream(self._stream):
            step = super().__call__(x, y)
        main.wait_stream(self._stream)            # and the side stream waits for main's next reads
        return step

    def _refresh_lr(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            if self.tensor_lr[i] and group["lr"] != self._lr_value[i]:
                self._lr[i].fill_(group["lr"])
                self._lr_value[i] = group["lr"]

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> Step:
        groups = self.optimizer.param_groups
        self._graph = self._step = None           # the old graph's pool goes with it
        if self._static is None or not self._fits(x, y):
            self._static = (x.clone(), y.clone())
        else:
            self._static[0].copy_(x)
            self._static[1].copy_(y)
        for i, group in enumerate(groups):
            if self.tensor_lr[i] and self._lr[i] is None:
                self._lr[i] = torch.tensor(float(group["lr"]), device=self.device)
                self._lr_value[i] = float(group["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        floats = [g["lr"] for g in groups]
        graph = torch.cuda.CUDAGraph()
        try:
            for i, group in enumerate(groups):
                if self.tensor_lr[i]:
                    group["lr"] = self._lr[i]    # read from the device while captured
            with torch.cuda.graph(graph):
                step = self.run(*self._static)
        except RuntimeError as e:
            raise ConfigError(
                "trainer.cuda_graph=true: the training step cannot be captured as a CUDA graph ("
                + str(e).strip().splitlines()[0] + "). Something in it reads a GPU value on the host "
                "or needs a host decision per batch; run it with trainer.cuda_graph=false") from e
        finally:
            for group, lr in zip(groups, floats):
                group["lr"] = lr
        self._graph, self._step = graph, step
        self._captured_with = hyperparameters(self.optimizer, self.tensor_lr)
        self.grads_to_none = False
        self.captures += 1
        if self.captures == RECAPTURE_WARNING:
            warnings.warn(f"trainer.cuda_graph: the training step was captured {self.captures} times: an "
                          "optimizer setting changes often (a step-interval schedule with an optimizer "
                          "without a capturable mode, e.g. SGD); capture then costs more than it saves. "
                          "Use a capturable optimizer (adam), an epoch-interval schedule, or "
                          "trainer.cuda_graph=false", stacklevel=2)
        self._refresh_lr()
        graph.replay()
        return step

    def _replay(self, x: torch.Tensor, y: torch.Tensor) -> Step:
        self._refresh_lr()
        self._static[0].copy_(x)
        self._static[1].copy_(y)
        self._graph.replay()
        return self._step
