"""A sixth gradient method, defined only here, outside odex: its YAML is grad/checkpointed.yaml beside
this file, found with `hydra.searchpath=[file://tests/plugins]` (conftest.SEARCHPATH), which also
makes this module importable. No registration: the validation stage imports the YAML's `_target_`
and reads its `schema` (keys and `supports`), the lists of methods read grad/*.yaml.

Checkpointed backprop (Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016, applied
to the whole solve): the forward solve keeps no intermediate stages; `loss.backward()` runs the
solve again with autograd recording and backpropagates through it. Its gradient is the direct
method's, exactly, at the memory of one solve's output, for one extra forward solve (counted as
backward NFE). torch.utils.checkpoint does the recomputation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.utils.checkpoint import checkpoint

from odex import schema
from odex.ode.grad import GradientMethod
from odex.ode.loops import integrate


@dataclass
class CheckpointedSchema(schema.Grad):
    # the recomputation runs BatchNorm in training mode twice (its running statistics move twice);
    # a tuple state is left out to keep the example short
    supports: ClassVar = schema.GradSupports(tuple_states=False, train_batchnorm=False)


class CheckpointedBackprop(GradientMethod):
    name = "checkpointed"
    schema = CheckpointedSchema

    def solve(self, func, y0, t, *, method, rtol, atol, options, loop="torchdiffeq", times=None):
        def run(y0_):
            return integrate(func, y0_, t, method=method, loop=loop, rtol=rtol, atol=atol, options=options,
                             times=times)

        if not torch.is_grad_enabled():
            return run(y0)
        return checkpoint(run, y0, use_reentrant=False, preserve_rng_state=True)
