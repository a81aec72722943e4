"""Counting function evaluations (NFE) of a vector field, forward and backward apart, in device
tensors (no host sync, correct inside CUDA graphs); the block's field options act here too.
Design notes: docs/design-notes.md, "odex/ode/nfe.py".
"""
from __future__ import annotations

import torch
from torch import nn

from odex.ode.field_options import EAGER, FieldOptions


class CountedField(nn.Module):
    """`field(t, y)` with device-side counters `nfe_forward` and `nfe_backward`."""

    def __init__(self, field: nn.Module, options: FieldOptions = EAGER):
        super().__init__()
        if options.backend is not None:
            field.compile(backend=options.backend)      # the field's own forward stays as it is
        self.field = field
        self.options = options
        self.register_buffer("nfe_forward", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("nfe_backward", torch.zeros((), dtype=torch.long), persistent=False)
        self.backward_phase = False

    def forward(self, t: torch.Tensor, y):
        (self.nfe_backward if self.backward_phase else self.nfe_forward).add_(1)
        if self.options.dtype is None:
            return self.field(t, y)
        device = (y[0] if isinstance(y, (tuple, list)) else y).device.type
        with torch.autocast(device, dtype=self.options.dtype):
            out = self.field(t, y)
        if isinstance(out, torch.Tensor):         # back in the dtype(s) of the state
            return out.to(y.dtype)
        return type(out)(o.to(s.dtype) for o, s in zip(out, y))

    def reset(self) -> None:
        self.nfe_forward.zero_()
        self.nfe_backward.zero_()
        self.backward_phase = False


def counted_fields(model: nn.Module) -> list[CountedField]:
    return [m for m in model.modules() if isinstance(m, CountedField)]


def reset_nfe(model: nn.Module) -> None:
    for m in counted_fields(model):
        m.reset()


def total_nfe(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(forward, backward) evaluations summed over every ODE block, as device tensors."""
    fields = counted_fields(model)
    return (sum(m.nfe_forward for m in fields), sum(m.nfe_backward for m in fields)) if fields else None
