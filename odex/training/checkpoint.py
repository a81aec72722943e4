"""Checkpoints: everything needed to continue a run, written atomically (temporary file, fsync,
rename: odex/training/atomic.py), so a job killed mid-write or a full disk leaves the previous
checkpoint intact, with its SHA-256 kept beside it (`<file>.sha256`, odex/training/checksum.py):
a resume, odex-eval and trainer.init_from refuse a checkpoint whose bytes changed."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odex.errors import ChangedFile, ConfigError
from odex.training import atomic, checksum

def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["batches"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "batches" in state:
        generator.set_state(state["batches"])


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path`, atomically, with its checksum beside it. Serialised in memory
    first: its hash is known before the file is written, and a full disk is told with the exact size."""
    path = Path(path)
    atomic.makedirs(path.parent)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    new = checksum.digest(data)
    # the checksum file accepts the new file's hash (and the old one's) only once the new bytes are
    # on disk: a full disk before that leaves both files as they were
    atomic.write_bytes(path, data, before_replace=lambda: checksum.expect(path, new))
    checksum.settle(path, new)


def load(path: str | Path, map_location="cpu", *, verify: bool = True) -> dict[str, Any]:
    """The checkpoint at `path`, after checking its bytes against its checksum (`ChangedFile`)."""
    if verify:
        checksum.verify(path)
    return torch.load(path, map_location=map_location, weights_only=False)


def load_weights(model: torch.nn.Module, path: str | Path, key: str) -> dict[str, Any]:
    """Put a checkpoint's model weights into `model` (every tensor, same names and shapes) and
    return the checkpoint. A missing file, a file that is not an odex checkpoint, or weights of
    another model are a `ConfigError` naming `key=path` and the first differences."""
    path = Path(path)      # its existence: checked before the run (odex.config, odex-eval's arguments)
    try:
        checksum.verify(path, key)
    except ChangedFile as e:        # a file the user named: a usage error, one line naming key=path
        raise ConfigError(str(e)) from None
    try:
        state = load(path, verify=False)
    except Exception as e:  # noqa: BLE001 -- whatever torch.load says, the file is not a checkpoint
        raise ConfigError(f"{key}={path}: not a checkpoint torch can read ({type(e).__name__})") from None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError(f"{key}={path}: not an odex checkpoint (no model weights in it)")
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(items)} {what}: {', '.join(items[:2])}" + (", ..." if len(items) > 2 else "")
                 for what, items in (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes))
                 if items]
        raise ConfigError(f"{key}={path}: the checkpoint's weights do not fit this model "
                          f"({type(model).__name__}; {'; '.join(parts)}): use the model settings it was trained with")
    model.load_state_dict(weights)
    return state
