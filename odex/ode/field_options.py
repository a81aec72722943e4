"""How an ODE block evaluates its vector field: the autocast dtype (`trainer.precision`) and the
torch.compile backend (`trainer.compile`), given to each `ODEBlock` built inside `building(options)`
(a context variable, so a model need not know about speed settings).
Design notes: docs/design-notes.md, "odex/ode/field_options.py".
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class FieldOptions:
    """dtype: the field's autocast dtype (None: the state's own, float32); backend: the
    torch.compile backend the field is compiled with (None: eager)."""
    dtype: torch.dtype | None = None
    backend: str | None = None


EAGER = FieldOptions()
#: The options an ODE block built now gets (EAGER outside `building`).
CURRENT: contextvars.ContextVar[FieldOptions] = contextvars.ContextVar("odex_field_options", default=EAGER)


@contextmanager
def building(options: FieldOptions) -> Iterator[FieldOptions]:
    """Every ODE block built inside the block evaluates its field with `options`."""
    token = CURRENT.set(options)
    try:
        yield options
    finally:
        CURRENT.reset(token)
