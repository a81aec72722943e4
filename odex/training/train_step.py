"""One optimisation step of the training loop: objective, backward, gradient clipping, optimizer
step. `TrainStep` runs it eagerly; `odex.training.cuda_graph.GraphedTrainStep` (trainer.cuda_graph=true)
captures the same `run` once as a CUDA graph and replays it. The trainer (odex/training/trainer.py) and the
benchmark (scripts/bench.py) both call one of these, so what is timed is what trains.
"""
from __future__ import annotations

import torch
from torch import nn

from odex.objectives.classification import Step
from odex.ode.odeint import as_solver_error


class TrainStep:
    """`step(x, y) -> Step`: zero the gradients, then `run(x, y)`."""

    def __init__(self, model: nn.Module, objective, optimizer: torch.optim.Optimizer,
                 grad_clip: float | None = None):
        self.model, self.objective, self.optimizer, self.grad_clip = model, objective, optimizer, grad_clip
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        # None frees the gradients between steps; a CUDA graph instead keeps its gradient tensors
        # (they live in its memory pool) and an eager step then zeroes them in place.
        self.grads_to_none = True

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Step:
        self.optimizer.zero_grad(set_to_none=self.grads_to_none)
        return self.run(x, y)

    def run(self, x: torch.Tensor, y: torch.Tensor) -> Step:
        """The step after the gradients were zeroed: what a CUDA graph captures."""
        step = self.objective(self.model, x, y)
        try:
            step.loss.backward()
        except AssertionError as e:       # torchdiffeq's failed solves inside an adjoint
            raise as_solver_error(e) from e
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return step
