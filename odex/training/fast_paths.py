"""Speed settings (`trainer.precision`, `trainer.compile`, `trainer.channels_last`,
`trainer.cuda_graph`), given to the parts when they are built, never switched on afterwards. All off
by default; each is switched on only where a benchmark shows a gain at the same accuracy.
Design notes: docs/design-notes.md, "odex/training/fast_paths.py".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from odex.training.cuda_graph import GraphedTrainStep
from odex.errors import ConfigError
from odex.ode.field_options import FieldOptions
from odex.ode.precision import field_dtype
from odex.training.train_step import TrainStep


@dataclass
class FastPaths:
    precision: str = "fp32"
    compile: bool | str | None = None
    channels_last: bool = False
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        field_dtype(self.precision)          # a ConfigError for an unknown name
        if not isinstance(self.cuda_graph, bool):
            raise ConfigError(f"trainer.cuda_graph must be true or false, got {self.cuda_graph!r}")
        if self.compile is not None and not isinstance(self.compile, (bool, str)):
            raise ConfigError(f"trainer.compile must be false, true, auto or a torch.compile backend name, "
                              f"got {self.compile!r}")
        words = {"": None, "none": None, "false": None, "eager": None, "true": True, "auto": "auto"}
        if isinstance(self.compile, str) and self.compile.lower() in words:
            self.compile = words[self.compile.lower()]
        elif isinstance(self.compile, str):
            from torch._dynamo import list_backends
            known = set(list_backends(exclude_tags=())) | {"inductor"}
            if self.compile not in known:   # name the everyday backends, accept the debug ones too
                raise ConfigError(f"trainer.compile={self.compile}: must be false, true (inductor), auto "
                                  f"(inductor where a start-up probe says it pays) or a torch.compile "
                                  f"backend: {', '.join(sorted(set(list_backends()) | {'inductor'}))}")

    @property
    def auto_compile(self) -> bool:
        """trainer.compile=auto: odex.training.compile_choice decides before the model is built."""
        return self.compile == "auto"

    @property
    def backend(self) -> str | None:
        """The torch.compile backend, or None for eager (and for auto, until its probe decided)."""
        if not self.compile or self.auto_compile:
            return None
        return "inductor" if self.compile is True else self.compile

    @property
    def compiles(self) -> bool:
        """Whether a field may be compiled in this run (a backend, or auto)."""
        return bool(self.compile)

    def field_options(self, backend: str | None = None) -> FieldOptions:
        """The options every ODE block is built with: this precision, and `backend` (auto's
        choice) or the configured backend."""
        return FieldOptions(field_dtype(self.precision), backend if backend is not None else self.backend)

    def to_device(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model` moved to `device`, its 4-d weights in channels-last format with channels_last
        (cuDNN then picks NHWC kernels; the inputs follow the weights)."""
        if self.channels_last:
            return model.to(device, memory_format=torch.channels_last)
        return model.to(device)

    def train_step(self, model: nn.Module, objective, optimizer: torch.optim.Optimizer, *,
                   grad_clip: float | None = None, device: torch.device) -> TrainStep:
        """The training loop's step: eager, or replayed as a CUDA graph (trainer.cuda_graph)."""
        if self.cuda_graph:
            return GraphedTrainStep(model, objective, optimizer, grad_clip, device=device)
        return TrainStep(model, objective, optimizer, grad_clip)
