"""Counting host reads of tensor values (`if tensor`, `.item()`, `.tolist()`, `float(t)`, `int(t)`),
each a host-device synchronisation on a GPU, on any device: `with HostReads() as reads: ...; reads.n`.
Design notes: docs/design-notes.md, "odex/ode/loops/host_reads.py".
"""
from __future__ import annotations

from torch.overrides import TorchFunctionMode


class HostReads(TorchFunctionMode):
    """A torch function mode that counts tensor-to-Python reads while it is active: of tensors on
    `device_type` only ("cuda": the reads that are syncs), or of every tensor (None; on a CPU run
    this also counts reads of values that stay on the host in a GPU run, such as the step counts
    of a non-capturable Adam: an upper bound)."""
    NAMES = frozenset({"tolist", "item", "__bool__", "__float__", "__int__", "__index__"})

    def __init__(self, device_type: str | None = None):
        super().__init__()
        self.device_type = device_type
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.NAMES and (
                self.device_type is None or (args and getattr(args[0], "device", None) is not None
                                             and args[0].device.type == self.device_type)):
            self.n += 1
        return func(*args, **(kwargs or {}))
