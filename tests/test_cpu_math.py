"""Mapping torch's CPU-kernel constants at start-up (odex/training/cpu_math.py): every page of
libtorch_cpu's read-only data is then in the page table, by the kernel's own account
(/proc/self/smaps), also through the fallback for kernels without MADV_POPULATE_READ; and it changes
no result: the outputs and gradients of every activation odex's fields use, and of the GQ conv
field, are the same bits in a fresh process with it as in one without (each computed before
anything else ran, so the process without it is in whatever start-up state torch has here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

# Computes, in a fresh process, every activation odex uses (odex/models/layers.py ACTIVATIONS,
# softplus/sigmoid of momentum.py, the exp/log1p inside them) and the GQ conv field, forward and
# backward, float32 and float64, on fixed inputs spanning the saturating ranges; saves all to argv[2].
CHILD = r"""
import sys, torch
from torch import nn
import torch.nn.functional as F
torch.set_num_threads(1)
if sys.argv[1] == "warm":
    from odex.training.cpu_math import map_kernel_constants
    map_kernel_constants()
out = {}
fns = {"relu": F.relu, "softplus": F.softplus, "tanh": torch.tanh, "elu": F.elu, "sigmoid": torch.sigmoid,
       "exp": torch.exp, "log1p": lambda x: torch.log1p(x.abs()), "pow0.2": lambda x: x.abs().pow(0.2)}
for dtype in (torch.float32, torch.float64):
    base = torch.linspace(-30, 30, 256 * 64, dtype=dtype).view(256, 64)
    base = base * torch.linspace(0.01, 1, 64, dtype=dtype)      # dense near 0, saturating at +-30
    for name, f in fns.items():
        x = base.clone().requires_grad_(True)
        y = f(x)
        (g,) = torch.autograd.grad(y, x, torch.cos(base))
        out[f"{name}/{dtype}/out"], out[f"{name}/{dtype}/grad"] = y.detach(), g
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(10, 50, 3, padding=1), nn.Softplus(), nn.Conv2d(50, 50, 3, padding=1),
                    nn.Softplus(), nn.Conv2d(50, 10, 3, padding=1))
h = torch.randn(64, 10, 11, 11, requires_grad=True)
y = net(h)
grads = torch.autograd.grad(y, [h, *net.parameters()], torch.ones_like(y))
out["gq_field/out"] = y.detach()
for i, g in enumerate(grads):
    out[f"gq_field/grad{i}"] = g
torch.save(out, sys.argv[2])
"""


def _run(mode: str, path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], check=True, env=env, timeout=120)
    return torch.load(path)


def test_mapping_leaves_every_activation_output_and_gradient_bit_identical(tmp_path):
    cold = _run("cold", tmp_path / "cold.pt")
    warm = _run("warm", tmp_path / "warm.pt")
    assert cold.keys() == warm.keys() and len(cold) == 2 * 8 * 2 + 1 + 7
    for key in cold:
        a, b = cold[key], warm[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        # the same bits (also for NaN/inf and signed zeros, which torch.equal would not tell apart)
        ints = torch.int32 if a.dtype == torch.float32 else torch.int64
        assert torch.equal(a.view(ints), b.view(ints)), key


# In a fresh process: map the constants (argv[1] = "populate", or "fallback" with an advice the
# kernel rejects with EINVAL, as a kernel before 5.14 rejects MADV_POPULATE_READ), then print, per
# read-only mapping of libtorch_cpu, its Size and Rss in kB from /proc/self/smaps.
SMAPS = r"""
import json, os, sys
import torch
from odex.training import cpu_math
if sys.argv[1] == "fallback":
    cpu_math.MADV_POPULATE_READ = 10**6
covered = cpu_math.map_kernel_constants()
ranges = cpu_math.kernel_constant_ranges()
rows, current = [], None
for line in open("/proc/self/smaps"):
    fields = line.split()
    if "-" in fields[0] and len(fields) >= 5:
        start, end = (int(v, 16) for v in fields[0].split("-"))
        current = {"size": 0, "rss": 0} if (start, end) in ranges else None
        if current is not None:
            rows.append(current)
    elif current is not None and fields[0] in ("Size:", "Rss:"):
        current[fields[0][:-1].lower()] = int(fields[1])
print(json.dumps({"covered": covered, "rows": rows, "absent": cpu_math.unmapped_pages(ranges)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="Linux page tables")
@pytest.mark.parametrize("how", ["populate", "fallback"])
def test_every_page_of_the_kernel_constants_is_mapped(how):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", SMAPS, how], check=True, env=env, timeout=120,
                         capture_output=True, text=True).stdout
    got = json.loads(out.splitlines()[-1])
    rows = got["rows"]
    # libtorch_cpu has several read-only data segments (.rodata of some 40 MB among them)
    assert len(rows) >= 2 and sum(r["size"] for r in rows) > 10_000, rows
    assert got["covered"] == sum(r["size"] for r in rows) * 1024
    # the kernel's own count: every page of every such mapping is resident in this process
    assert all(r["rss"] == r["size"] for r in rows), rows
    assert got["absent"] == 0


def test_mapping_touches_no_state():
    from odex.training.cpu_math import log1p_us, map_kernel_constants

    rng = torch.get_rng_state()
    flush = torch.set_flush_denormal(False)      # returns whether the CPU supports it; state off
    map_kernel_constants()
    assert torch.equal(torch.get_rng_state(), rng)
    # no flush-to-zero switched on: a float32 denormal survives
    assert torch.tensor(1e-40, dtype=torch.float32).item() != 0.0
    assert flush in (True, False)
    assert 0 < log1p_us(repeats=5) < 1e6
