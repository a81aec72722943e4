"""Map torch's CPU-kernel constants into the process at start-up, and the probe that says which state
a process is in: on some x86 VMs float32 log1p/expm1 run ~10x slower until a page of
libtorch_cpu.so is mapped. No library does this. Investigation: docs/benchmarks.md, "The float32
log1p slow state".
"""
from __future__ import annotations

import ctypes
import errno
import os
import time

MADV_POPULATE_READ = 22      # linux/mman.h, since 5.14
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def kernel_constant_ranges(library: str = "libtorch_cpu") -> list[tuple[int, int]]:
    """[start, end) of the read-only, non-executable mappings of `library` in this process (its
    constant data: .rodata, .eh_frame, relocated read-only data), from /proc/self/maps; [] where
    there is no such file (not Linux)."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "r--p" and os.path.basename(fields[5]).startswith(library):
                    start, end = (int(v, 16) for v in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        pass
    return ranges


def map_kernel_constants() -> int:
    """Map every page of libtorch_cpu's read-only data into this process's page table (see the
    module docstring and docs/benchmarks.md); returns the bytes covered. Call after `import torch`."""
    import torch  # noqa: F401  (the library must be loaded for its mappings to exist)

    ranges = kernel_constant_ranges()
    if not ranges:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for start, end in ranges:
        if libc.madvise(start, end - start, MADV_POPULATE_READ) != 0:
            if ctypes.get_errno() != errno.EINVAL:       # EINVAL: a kernel before 5.14
                continue
            for page in range(start, end, PAGE):         # read, not write: the pages stay shared
                ctypes.string_at(page, 1)
    return sum(end - start for start, end in ranges)


def unmapped_pages(ranges: list[tuple[int, int]]) -> int:
    """How many pages of `ranges` are not present in this process's page table (/proc/self/pagemap,
    bit 63 of each page's entry; readable without privileges)."""
    absent = 0
    with open("/proc/self/pagemap", "rb") as pagemap:
        for start, end in ranges:
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            absent += sum(1 for i in range(7, len(entries), 8) if not entries[i] & 0x80)
    return absent


def log1p_us(repeats: int = 200) -> float:
    """Median microseconds of float32 `torch.log1p` on a 256x64 CPU tensor: the state probe the
    benchmark records for each process (about 14 us mapped, 140-170 us in the slow state)."""
    import torch

    x = torch.linspace(-3.0, 3.0, 256 * 64, dtype=torch.float32).view(256, 64)
    for _ in range(10):
        torch.log1p(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.log1p(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6
