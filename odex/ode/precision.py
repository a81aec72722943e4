"""Arithmetic precision: `full_fp32()` turns TF32 off where a bound is at stake (a spectral-norm
estimate, a certificate's logits) and restores it after; nothing changes on the CPU.
Design notes: docs/design-notes.md, "odex/ode/precision.py".
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def full_fp32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


# trainer.precision: the dtype the vector field computes in (None: the state's own dtype). The
# state, the solver's arithmetic and the adjoint always stay in the state's dtype (float32).
# fp16 is left out on purpose: its range needs loss scaling, which an adjoint's backward solve
# (gradients computed inside autograd.Function.backward) cannot apply; bf16 has float32's range.
FIELD_PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def field_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for `trainer.precision`, or None for full precision."""
    try:
        return FIELD_PRECISIONS[precision]
    except KeyError:
        from odex.errors import ConfigError
        raise ConfigError(f"trainer.precision must be one of {', '.join(FIELD_PRECISIONS)}, "
                          f"got {precision!r}") from None
