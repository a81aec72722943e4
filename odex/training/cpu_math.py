"""A start-up warm-up of torch's vectorised float32 CPU math (issue 18), and the probe that says
which state a process is in.

What was reported (torch 2.14.1, 2-core AMD EPYC development VMs, one thread;
/work/shared/REFERENCES.md section 14): in a fresh process float32 `torch.log1p` on a 256x64
tensor took about 140-170 us, and 15-45 us for the rest of the process once any float32
`torch.pow` with a non-integer exponent had run on a vector; softplus (log1p(exp(x))) paid it, one
evaluation of the GQ conv field went from 15.5 to 8.5 ms. float64 pow, sqrt, torch.compile and
`set_flush_denormal(True)` did not switch the state.

What this session found (torch 2.14.1, AMD EPYC family 25 model 17 (Zen 4, AVX-512) KVM guest,
microcode 0x1000065, Debian 12 glibc 2.36): the slow state does NOT occur. Over 20 fresh
processes `log1p` on 256x64 float32 took 14 us from the first timed loop on (about 0.85 ns per
element), before and after the pow, with or without odex's, torchvision's, wandb's and dynamo's
imports; softplus, exp, tanh, sigmoid, the GQ field's forward and its backward were unchanged by
the pow too (docs/benchmarks.md, "log1p"). Checked:
- dispatch: `torch.backends.cpu.get_cpu_capability()` is AVX512 and `perf record` of a fresh
  process puts 38 % of a log1p loop in `Sleef_finz_log1pf16_u10avx512f` called from
  `at::native::AVX512::log1p_kernel`: the vectorised SLEEF kernel from the first call (no lazy
  scalar fallback). `ATEN_CPU_CAPABILITY=default` (scalar std::log1p) gives 99 us, `=avx2` 22 us:
  the reported slow figure is of the scalar path's size, so a process that ran a scalar or
  mis-dispatched kernel fits it, but nothing here made the default dispatch do that;
- page faults: 0 minor faults per call in the fast state; forcing glibc to mmap each 64 KiB output
  (`MALLOC_MMAP_THRESHOLD_=32768`) gives 17 faults and 50-75 us per call, a slow state of the same
  kind, but torch.pow does not change glibc's thresholds, so this does not explain the report.
The cause on the reporting machine stays unverified (it may depend on the host CPU or hypervisor
behind the VM). The warm-up below is the fix the report points to: it costs microseconds, runs the
very op that switched the state there, and changes no result (it computes into a temporary and
touches no setting: no flush-denormal, no capability, no RNG; tests/test_cpu_math.py compares the
outputs and gradients of every activation odex uses, bit for bit, between fresh processes with
and without it). Where the slow state exists it makes odex-train run in the fast one; where it
does not, it is a no-op.
"""
from __future__ import annotations

import time

import torch


def warm_up_vector_math() -> None:
    """Run a float32 `torch.pow` with a non-integer exponent on a CPU vector once (see the module
    docstring). The input is a constant, not random, so the global RNG is untouched; the result
    is discarded. Exponents 0.5, -0.5, 2, 3 take special paths (sqrt, rsqrt, square) and would
    not run the vectorised pow, hence 0.2."""
    torch.pow(torch.linspace(0.5, 1.5, 256, dtype=torch.float32), 0.2)


def log1p_us(repeats: int = 200) -> float:
    """Median microseconds of float32 `torch.log1p` on a 256x64 CPU tensor: the state probe the
    benchmark records for each process (about 14 us fast, 140-170 us in the reported slow state)."""
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
