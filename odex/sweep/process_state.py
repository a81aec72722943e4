"""One job must not leak into the next one run by the same process: `isolated_job()` puts back the
global state a job may change; `job_settings()` is the one place a run sets process-wide state, and
restores it. Design notes: docs/design-notes.md, "odex/sweep/process_state.py".
"""
from __future__ import annotations

import gc
import logging
import random
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch._functorch import config as functorch_config   # no public setter

log = logging.getLogger("odex")


def _torch_settings() -> dict[str, Any]:
    return {
        "default_dtype": torch.get_default_dtype(),
        "grad_enabled": torch.is_grad_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "num_threads": torch.get_num_threads(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "functorch_donated_buffer": functorch_config.donated_buffer,
    }


def _restore_torch_settings(s: dict[str, Any]) -> None:
    torch.set_default_dtype(s["default_dtype"])
    torch.set_grad_enabled(s["grad_enabled"])
    torch.set_anomaly_enabled(s["anomaly"])
    torch.use_deterministic_algorithms(s["deterministic"], warn_only=s["deterministic_warn_only"])
    torch.set_num_threads(s["num_threads"])
    torch.set_float32_matmul_precision(s["matmul_precision"])
    # after the precision setter, which also moves the TF32 flags
    torch.backends.cuda.matmul.allow_tf32 = s["cuda_matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = s["cudnn_tf32"]
    torch.backends.cudnn.benchmark = s["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = s["cudnn_deterministic"]
    functorch_config.donated_buffer = s["functorch_donated_buffer"]


def _rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():        # never initialise CUDA just to read its state
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_initialized():
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])
        else:                              # CUDA started inside the job: back to a fixed state
            torch.cuda.manual_seed_all(0)


def _finish_wandb() -> None:
    wandb = sys.modules.get("wandb")      # a job that never imported wandb left nothing open
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1)


def _release_cuda() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def _reset_compiled() -> None:
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()


@contextmanager
def isolated_job() -> Iterator[None]:
    """Run one job and leave the process's global state as the job found it."""
    settings, rng = _torch_settings(), _rng()
    try:
        yield
    finally:
        # each step on its own: one failing (a CUDA error, say) must not skip the others
        for step in (_finish_wandb, gc.collect, _release_cuda, _reset_compiled,
                     lambda: _restore_rng(rng), lambda: _restore_torch_settings(settings)):
            try:
                step()
            except Exception as e:  # noqa: BLE001 -- cleanup must not hide the job's own outcome
                print(f"odex: warning: cleanup after the job failed: {type(e).__name__}: {e}", file=sys.stderr)


@contextmanager
def job_settings(*, threads: int | str, tf32: bool, device: torch.device, compiles: bool) -> Iterator[int]:
    """Inside the block, the process runs as the job asks; yields the thread count, and the previous
    settings come back afterwards (docs/design-notes.md)."""
    from odex.training import threads as cpu_threads
    from odex.training.cpu_math import map_kernel_constants

    saved = _torch_settings()
    try:
        map_kernel_constants()      # nothing to undo: it only maps pages of torch's own library
        n, why = cpu_threads.resolve(threads)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        log.info("torch threads: %d (%s)", n, why)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if compiles:
            functorch_config.donated_buffer = False
        yield n
    finally:
        _restore_torch_settings(saved)
