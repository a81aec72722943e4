"""`scripts/bench.py iteration` and `grad` at toy sizes: every figure and ratio is in the JSON and
the Markdown, the counts agree with the solver's arithmetic, and the FLOPs with the drift's
hand-counted ones."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from conftest import PLUGINS, REPO

from odex.ode.grad import names


def subcommand(name: str):
    """scripts/benchmarks/<name>.py, the module behind `scripts/bench.py <name>`."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture(scope="module")
def bench():
    return subcommand("iteration")


KEYS = {"model", "width", "batch", "grad", "solver", "path", "label", "precision", "compile",
        "channels_last", "loop", "ms_iter", "ms_eval", "nfe_forward", "nfe_backward", "peak_mb",
        "images_per_s", "flops_call", "flops_vjp", "tflops_iter", "tflops_eval", "ratio_ms_iter",
        "ratio_ms_eval", "params", "host_reads", "cuda_graph"}


def test_bench_smoke_run(bench, tmp_path):
    w, b = 4, 2
    result = bench.main(["--device", "cpu", "--threads", "1", "--widths", str(w), "--batches", str(b),
                         "--grads", "direct", "adjoint", "--solvers", "rk4:2", "dopri5",
                         "--precision", "fp32", "bf16", "--loop", "torchdiffeq", "odex", "--iters", "2", "--rounds", "1",
                         "--warmup", "1", "--eval-calls", "2", "--dataset-batches", "2",
                         "--out", str(tmp_path / "bench")])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert {"command", "device", "torch", "torchdiffeq", "tf32"} <= set(saved["meta"])
    rows = saved["rows"]
    # grads x solvers x (reference + 2 precisions x 2 loops): solver.loop=odex serves every
    # gradient method, fixed-step and adaptive solvers alike
    assert len(rows) == 2 * 2 * 5
    assert sum(r["loop"] == "odex" for r in rows) == 2 * 2 * 2
    assert all(r["label"].endswith(" loop=odex") == (r["loop"] == "odex") for r in rows)
    # odex's loop drops torchdiffeq's host reads (all of a fixed grid's, all but one per step of
    # an adaptive solve), with either gradient method
    by_loop = {(r["grad"], r["solver"], r["precision"], r["loop"]): r for r in rows if r["path"] == "odex"}
    for (grad, solver, precision, loop), r in by_loop.items():
        if loop == "odex":
            assert r["host_reads"] < by_loop[grad, solver, precision, "torchdiffeq"]["host_reads"], r["label"]
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
    assert md.startswith("`python scripts/bench.py iteration --device cpu") and "| odex bf16 |" in md and "x ref" in md


def test_cuda_graph_variants_are_skipped_off_cuda(bench, tmp_path):
    result = bench.main(["--device", "cpu", "--threads", "1", "--widths", "4", "--batches", "2",
                         "--grads", "direct", "--solvers", "rk4:2", "--loop", "odex", "--cuda-graph",
                         "--iters", "1", "--rounds", "1", "--warmup", "1", "--eval-calls", "1",
                         "--dataset-batches", "2"])
    assert [r["label"] for r in result["rows"]] == ["torchdiffeq odeint + DataLoader", "odex fp32 loop=odex"]
    assert not any(r["cuda_graph"] for r in result["rows"])
    assert [r["loop"] for r in result["rows"]] == ["torchdiffeq", "odex"]


@pytest.mark.parametrize("grad, solver, graphed", [("direct", "rk4:2", True), ("direct", "dopri5", False),
                                                   ("adjoint", "rk4:2", False)])
def test_cuda_graph_variants_need_a_fixed_step_solver_on_odex_loop_and_grad_direct(bench, grad, solver, graphed):
    """Which variants a case gets (decided without a GPU: only the device's type is read)."""
    import torch

    args = bench.argparse.Namespace(precision=["fp32"], compile=["none"], channels_last=[False],
                                    loop=["torchdiffeq", "odex"], cuda_graph=True)
    s = bench.parse_solver(solver, 1e-3)
    base, _ = bench.build_model("gq_image", 4, s, grad, None)
    got = bench.case_variants(bench.variants(args), base, s, torch.device("cuda"))
    assert [(f.cuda_graph, loop) for f, loop in got] == \
        [(False, "torchdiffeq"), (False, "odex")] + ([(True, "odex")] if graphed else [])
    assert bench.case_variants(bench.variants(args), base, s, torch.device("cpu")) == got[:2]
    # a loop that cannot step the method falls back to torchdiffeq's, once
    adams = bench.Solver(method="explicit_adams", steps=2, max_num_steps=None)
    assert [loop for _, loop in bench.case_variants(bench.variants(args), base, adams, torch.device("cpu"))] \
        == ["torchdiffeq"]
    block = next(m for m in bench.with_loop(bench.copy.deepcopy(base), "odex").modules()
                 if isinstance(m, bench.ODEBlock))
    assert block.solver.loop == "odex" and block.solver.method == s.method


def test_bench_grad_smoke_run_and_its_cpu_memory_stand_in(tmp_path):
    module = subcommand("grad")
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
                 "--warmup", "1", "--plugins", str(PLUGINS), "--out", str(tmp_path / "grad")])
    rows = {r["method"]: r for r in json.loads((tmp_path / "grad.json").read_text())["rows"]}
    assert set(rows) == set(names([PLUGINS])) | {"torchdiffeq-adjoint", "torchdiffeq-seminorm"}
    assert "checkpointed" in rows           # tests/plugins/'s method, from its grad/checkpointed.yaml
    weights = 4 * rows["adjoint"]["params"] / 2**20
    for r in rows.values():
        assert r["ms"] > 0 and r["nfe_forward"] > 0
        assert r["peak_mb"] > 3 * weights        # weights, gradients and Adam's two moments at least
    assert rows["direct"]["nfe_backward"] == 0 and rows["gq"]["nfe_backward"] > 0
    assert rows["direct"]["peak_mb"] > rows["adjoint"]["peak_mb"]       # direct keeps every stage
    assert "x adjoint memory" in (tmp_path / "grad.md").read_text()


def test_the_tool_lists_its_subcommands_and_refuses_an_unknown_one():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(f"  {name} " in out.stdout for name in ("iteration", "epochs", "grad", "threads"))
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "subcommands:" in bad.stderr
