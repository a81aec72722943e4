"""`build_run(cfg)`: every part of a run built from its config, in one order (seed, data, solver,
gradient method, model with its field options, device, objective, evaluators, optimizer, schedule),
with the speed settings given to each part as it is built; odex-train, odex-eval and the benchmarks
all build here. A run's initial weights depend on its seed alone. Design notes: docs/design-notes.md, "odex/build.py".
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("odex")


def chosen_parts(node, group: str) -> dict[str, Any]:
    """Build a list-valued group (eval=[clean,pgd], callbacks=[swa]): one object per entry. An entry
    with settings but no `_target_` is a choice an experiment configured and the command line left
    out (experiment=lyanet_fmnist eval=[clean]): it is skipped, with a note."""
    from odex.config import build

    out: dict[str, Any] = {}
    for name, sub in (node or {}).items():
        if sub is None:
            continue
        if not (hasattr(sub, "get") and sub.get("_target_")):
            log.info("%s.%s has settings but %s is not among the chosen %s: not used", group, name, name, group)
            continue
        out[name] = build(sub)
    return out


@dataclass
class BuiltRun:
    trainer: Any                  # odex.training.trainer.Trainer
    data: Any                     # odex.data.DataBundle, on the trainer's device
    model: Any                    # torch.nn.Module, on the trainer's device
    objective: Any
    evaluators: dict
    optimizer: Any                # torch.optim.Optimizer
    schedule: Any                 # odex.optim.optimizers.Schedule
    steps_per_epoch: int
    compile_choice: Any = None    # odex.training.compile_choice.CompileChoice (trainer.compile=auto)


def build_run(cfg, *, trainer=None, epochs_done: int = 0, training: bool = True) -> BuiltRun:
    """The run's parts for the composed, validated `cfg`. `trainer`: cfg.trainer already built;
    `epochs_done`: epochs a resumed run has behind it (trainer.compile=auto weighs the rest);
    `training=False` (an evaluation): trainer.compile=auto stays eager, no probe."""
    import numpy as np
    import torch

    from odex.config import build
    from odex.ode.field_options import building
    from odex.optim.optimizers import build_optimizer, build_schedule

    trainer = build(cfg.trainer) if trainer is None else trainer
    fast = trainer.fast_paths
    random.seed(trainer.seed)
    np.random.seed(trainer.seed)
    torch.manual_seed(trainer.seed)
    data = build(cfg.dataset).to(trainer.device)
    solver = build(cfg.solver)
    grad = build(cfg.grad)
    steps_per_epoch = -(-len(data.train) // data.batch_size)

    def make_model(backend: str | None = None):
        with building(fast.field_options(backend)):
            model = build(cfg.model, info=data.info, solver=solver, grad=grad)
        return fast.to_device(model, trainer.device)

    choice = None
    if fast.auto_compile and training:
        from odex.data.batches import to_unit_float
        from odex.training.compile_choice import choose_compile

        # a throwaway build, its random draws forked off, so the run's model gets the weights a
        # run without the probe gets
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            choice = choose_compile(make_model(), to_unit_float(data.train.x[:data.batch_size]),
                                    iterations=steps_per_epoch * max(trainer.max_epochs - epochs_done, 0))
        log.info("trainer.compile=auto: %s (%s)", f"compiled ({choice.backend})" if choice.compile else "eager",
                 choice.reason)
    model = make_model(choice.backend if choice is not None and choice.compile else None)
    objective = build(cfg.objective)
    evaluators = chosen_parts(cfg.eval, "eval")
    optimizer = build_optimizer(cfg.optim, model, capturable=fast.cuda_graph)
    schedule = build_schedule(cfg.schedule, optimizer, steps_per_epoch=steps_per_epoch,
                              max_epochs=trainer.max_epochs)
    return BuiltRun(trainer, data, model, objective, evaluators, optimizer, schedule, steps_per_epoch, choice)
