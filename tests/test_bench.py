"""scripts/bench.py at toy sizes: every figure and ratio is in the JSON and the Markdown, the
counts agree with the solver's arithmetic, and the FLOPs with the drift's hand-counted ones."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import REPO

from odex.ode.grad import METHODS


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("odex_bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


KEYS = {"model", "width", "batch", "grad", "solver", "path", "label", "precision", "compile",
        "channels_last", "fixed_grid", "ms_iter", "ms_eval", "nfe_forward", "nfe_backward", "peak_mb",
        "images_per_s", "flops_call", "flops_vjp", "tflops_iter", "tflops_eval", "ratio_ms_iter",
        "ratio_ms_eval", "params", "host_reads", "adaptive_loop", "cuda_graph"}


def test_bench_smoke_run(bench, tmp_path):
    w, b = 4, 2
    result = bench.main(["--device", "cpu", "--threads", "1", "--widths", str(w), "--batches", str(b),
                         "--grads", "direct", "adjoint", "--solvers", "rk4:2", "dopri5",
                         "--precision", "fp32", "bf16", "--fixed-grid", "torchdiffeq", "odex", "--iters", "2", "--rounds", "1",
                         "--warmup", "1", "--eval-calls", "2", "--dataset-batches", "2",
                         "--out", str(tmp_path / "bench")])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert {"command", "device", "torch", "torchdiffeq", "tf32"} <= set(saved["meta"])
    rows = saved["rows"]
    # grads x solvers x (reference + 2 precisions), + 2 sync-free variants for direct with rk4
    assert len(rows) == 2 * 2 * 3 + 2
    assert sum(r["fixed_grid"] == "odex" for r in rows) == 2
    for r in rows:
        assert KEYS <= set(r), KEYS - set(r)
        assert r["ms_iter"] > 0 and r["ms_eval"] > 0 and r["images_per_s"] > 0 and r["tflops_iter"] > 0
    refs = [r for r in rows if r["path"] == "reference"]
    assert len(refs) == 4 and all(r["ratio_ms_iter"] == 1 for r in refs)
    assert {r["label"] for r in refs} == {"torchdiffeq odeint + DataLoader",
                                         "torchdiffeq odeint_adjoint + DataLoader"}
    for r in rows:
        if r["solver"] == "rk4:2":                      # 4 evaluations per rk4 step, both paths
            assert r["nfe_forward"] == 8
            assert r["nfe_backward"] == (8 if r["grad"] == "adjoint" else 0)
    # three 3x3 convs 10 -> w -> w -> 10 on an 11x11 state: 2 * 9 * (10w + w^2 + 10w) * 121 per image
    assert rows[0]["flops_call"] == 2 * 9 * (10 * w + w * w + w * 10) * 121 * b
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("`python scripts/bench.py") and "| odex bf16 |" in md and "x ref" in md


def test_cuda_graph_variants_are_skipped_off_cuda(bench, tmp_path):
    result = bench.main(["--device", "cpu", "--threads", "1", "--widths", "4", "--batches", "2",
                         "--grads", "direct", "--solvers", "rk4:2", "--fixed-grid", "odex", "--cuda-graph",
                         "--iters", "1", "--rounds", "1", "--warmup", "1", "--eval-calls", "1",
                         "--dataset-batches", "2"])
    assert [r["label"] for r in result["rows"]] == ["torchdiffeq odeint + DataLoader", "odex fp32 fixed_grid=odex"]
    assert not any(r["cuda_graph"] for r in result["rows"])


def test_bench_grad_smoke_run_and_its_cpu_memory_stand_in(tmp_path):
    spec = importlib.util.spec_from_file_location("odex_bench_grad", REPO / "scripts" / "bench_grad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    # three 1 MiB tensors alive at once, then two freed: the peak is 3 MiB
    def three_at_once():
        a = torch.ones(1024, 256)                # 1 MiB each
        b = a + 1
        c = b * 2
        del a, b
        return c.sum()
    assert module.cpu_peak_bytes(three_at_once) == pytest.approx(3 * 2**20, rel=0.01)

    module.main(["--device", "cpu", "--threads", "1", "--widths", "4", "--batches", "2", "--iters", "1",
                 "--warmup", "1", "--out", str(tmp_path / "grad")])
    rows = {r["method"]: r for r in json.loads((tmp_path / "grad.json").read_text())["rows"]}
    assert set(rows) == set(METHODS) | {"torchdiffeq-adjoint", "torchdiffeq-seminorm"}
    assert "checkpointed" in rows           # tests/sixth_gradient.py's method, from the registry
    weights = 4 * rows["adjoint"]["params"] / 2**20
    for r in rows.values():
        assert r["ms"] > 0 and r["nfe_forward"] > 0
        assert r["peak_mb"] > 3 * weights        # weights, gradients and Adam's two moments at least
    assert rows["direct"]["nfe_backward"] == 0 and rows["gq"]["nfe_backward"] > 0
    assert rows["direct"]["peak_mb"] > rows["adjoint"]["peak_mb"]       # direct keeps every stage
    assert "x adjoint memory" in (tmp_path / "grad.md").read_text()
