"""The vector fields' fast paths (odex/training/fast_paths.py), given to each ODE block when it is built
(odex/ode/field_options.py): bf16 autocast keeps the solver in float32
and stays close to float32 gradients; compile and channels_last compute what eager does; bad
values are one-line ConfigErrors; on CUDA, a fixed-step training epoch makes no host sync of
odex's own (torchdiffeq's are listed)."""
from __future__ import annotations

import copy
import math
from dataclasses import replace
import warnings
from pathlib import Path

import pytest
import torch

from odex.errors import ConfigError
from odex.training.fast_paths import FastPaths
from odex.models.layers import ConvField
from odex.ode.field_options import FieldOptions, building
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver

from conftest import TINY, train_in_process


def conv_block(grad="direct", method="rk4", steps=4, seed=0, fast: FastPaths | None = None) -> ODEBlock:
    """A block whose weights depend on `seed` alone, built with `fast`'s field options."""
    torch.manual_seed(seed)
    solver = Solver(method=method, steps=steps, max_num_steps=None) if method == "rk4" else Solver(method=method)
    return ODEBlock(ConvField(4, 8, act="softplus"), solver, grad,
                    options=None if fast is None else fast.field_options())


def test_blocks_built_inside_building_get_its_options_and_others_do_not():
    bf16 = FieldOptions(dtype=torch.bfloat16)
    with building(bf16):
        inside = conv_block()
    assert inside.field.options == bf16
    assert conv_block().field.options == FieldOptions()


@pytest.fixture
def compiling():
    """The process as a run with compiled fields sets it (functorch's donated buffers off, which
    the adjoint's retained graphs need), put back afterwards."""
    from odex.sweep.process_state import job_settings

    with job_settings(threads=1, tf32=False, device=torch.device("cpu"), compiles=True):
        yield


def loss_and_grads(block: ODEBlock, y0: torch.Tensor):
    block.zero_grad()
    y0 = y0.clone().requires_grad_(True)
    out = block(y0)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
    loss.backward()
    return out.detach(), [y0.grad] + [p.grad.clone() for p in block.parameters()]


def rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    fa, fb = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
    return float((fa - fb).norm() / fb.norm())


def test_bf16_runs_the_field_in_bf16_and_the_solver_in_fp32():
    block = conv_block(fast=FastPaths(precision="bf16"))
    seen = []
    block.field.field.conv3.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    y0 = torch.randn(2, 4, 5, 5)
    out = block(y0)
    assert seen and set(seen) == {torch.bfloat16}       # autocast is really on inside the field
    assert out.dtype == torch.float32                   # what the solver combines and returns
    assert block.field(torch.zeros(()), y0).dtype == torch.float32


@pytest.mark.parametrize("grad", ["direct", "adjoint", "gq", "anode"])
def test_bf16_gradients_stay_close_to_fp32(grad):
    y0 = torch.randn(3, 4, 6, 6)
    fp32 = conv_block(grad)
    bf16 = conv_block(grad, fast=FastPaths(precision="bf16"))      # the same weights (same seed)
    out32, g32 = loss_and_grads(fp32, y0)
    out16, g16 = loss_and_grads(bf16, y0)
    err = rel_err(g16, g32)
    # bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op): about 1e-3 here, and visibly
    # not the float32 computation itself
    assert 1e-5 < err < 1e-2, err
    assert 1e-5 < rel_err([out16], [out32]) < 1e-2


def test_bf16_adjoint_keeps_its_backward_state_in_fp32():
    block = conv_block("adjoint", fast=FastPaths(precision="bf16"))
    dtypes = []
    block.field.register_forward_hook(lambda m, i, o: dtypes.append((i[1].dtype, o.dtype)))
    loss_and_grads(block, torch.randn(2, 4, 5, 5))
    assert block.field.nfe_backward.item() > 0
    assert set(dtypes) == {(torch.float32, torch.float32)}


def test_bf16_trains_like_fp32(tmp_path):
    fp32 = train_in_process(tmp_path / "fp32", TINY)
    bf16 = train_in_process(tmp_path / "bf16", [*TINY, "trainer.precision=bf16"])
    assert fp32["status"] == bf16["status"] == "completed"
    assert math.isfinite(bf16["train/loss"])
    assert bf16["train/loss"] != fp32["train/loss"]          # bf16 really ran
    assert abs(bf16["train/loss"] - fp32["train/loss"]) < 0.05
    assert abs(bf16["test/acc"] - fp32["test/acc"]) <= 0.05


@pytest.mark.parametrize("grad", ["direct", "adjoint", "gq"])
def test_compile_gives_the_eager_outputs_and_gradients(grad, compiling):
    torch._dynamo.reset()
    y0 = torch.randn(2, 4, 5, 5)
    eager = conv_block(grad)
    compiled = conv_block(grad, fast=FastPaths(compile="aot_eager"))
    assert compiled.state_dict().keys() == eager.state_dict().keys()     # checkpoints stay compatible
    out_e, g_e = loss_and_grads(eager, y0)
    out_c, g_c = loss_and_grads(compiled, y0)
    assert compiled.field.options.backend == "aot_eager"
    assert compiled.field.field._compiled_call_impl is not None        # torch really compiled it
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_channels_last_gives_the_same_outputs():
    y0 = torch.randn(2, 4, 5, 5)
    plain = conv_block()
    cl = FastPaths(channels_last=True).to_device(conv_block(), torch.device("cpu"))
    assert cl.field.field.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    out_p, g_p = loss_and_grads(plain, y0)
    out_c, g_c = loss_and_grads(cl, y0)
    torch.testing.assert_close(out_c, out_p, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_c, g_p):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("override, words", [
    ("trainer.precision=fp16", "trainer.precision=fp16: must be one of fp32, bf16"),
    ("trainer.compile=warp_speed", "trainer.compile=warp_speed: must be false, true (inductor), auto"),
])
def test_bad_fast_path_values_are_config_errors(tmp_path, override, words):
    summary = train_in_process(tmp_path, [*TINY, override])
    assert summary["status"].startswith("failed: ") and words in summary["status"]
    with pytest.raises(ConfigError):
        FastPaths(**{override.split("=")[0].split(".")[1]: override.split("=")[1]})


def test_defaults_are_off():
    from conftest import compose_cfg
    t = compose_cfg().trainer
    assert (t.precision, t.compile, t.channels_last) == ("fp32", False, False)
    fast = FastPaths(t.precision, t.compile, t.channels_last)
    block = conv_block(fast=fast)
    assert block.field.options == FieldOptions() and fast.backend is None


# ---------------------------------------------------------------------------------------------
# CUDA: no host synchronisation in the training loop

class SyncWatch:
    """Trainer callback: CUDA sync debugging in "warn" mode from the first batch of the first
    epoch to the end of its last batch; every synchronising call is recorded with the Python file
    and line it was made from."""
    records: list[tuple[str, int, str]] = []

    def __init__(self, batches: int):
        self.batches, self.steps = batches, 0
        self._catch = None

    def on_epoch_start(self, epoch):
        if epoch != 1:
            return
        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def on_step_end(self, epoch, step):
        if epoch != 1:
            return
        self.steps += 1
        if self.steps == self.batches:
            self.close()

    def close(self):
        torch.cuda.set_sync_debug_mode(0)
        if self._catch is not None:
            self._catch.__exit__(None, None, None)
            SyncWatch.records = [(w.filename, w.lineno, str(w.message)) for w in self._seen
                                 if "synchroniz" in str(w.message)]
            self._catch = None


def watched_run(tmp_path, overrides):
    """train_in_process with a SyncWatch callback; sync debugging is off again whatever happens."""
    SyncWatch.records = []
    try:
        return train_in_process(tmp_path, [*overrides, "+callbacks.sync_watch._target_=test_fast_paths.SyncWatch",
                                           "+callbacks.sync_watch.batches=8"])
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.gpu
def test_fixed_step_training_epoch_has_no_host_sync_of_odex(tmp_path):
    """The loop, the device-side batches, the objective, the NFE counters and Adam make no host
    sync per batch. torchdiffeq's fixed-grid solver itself does (the `.item()` of its grid
    constructor, `t` comparisons in its input checks and in its output loop): those are listed
    and allowed here; removing them needs odex's own sync-free stepping (docs/benchmarks.md)."""
    import torchdiffeq

    summary = watched_run(tmp_path, [*TINY, "trainer.device=cuda", "dataset.batch_size=32", "solver=rk4",
                                     "solver.steps=4"])
    assert summary["status"] == "completed", summary["status"]
    records = SyncWatch.records
    assert records, "sync debug mode recorded nothing: the check would not see a sync"
    solver_dir = str(Path(torchdiffeq.__file__).parent)
    ours = [r for r in records if not r[0].startswith(solver_dir)]
    assert not ours, "host syncs outside torchdiffeq:\n" + "\n".join(f"{f}:{n}" for f, n, _ in ours)


@pytest.mark.gpu
@pytest.mark.parametrize("grad", ["direct", "adjoint"])
def test_bf16_on_cuda_stays_close_to_fp32(grad):
    y0 = torch.randn(3, 4, 6, 6, device="cuda")
    fp32 = conv_block(grad).cuda()
    bf16 = conv_block(grad, fast=FastPaths(precision="bf16")).cuda()
    torch.backends.cudnn.allow_tf32 = False
    out32, g32 = loss_and_grads(fp32, y0)
    out16, g16 = loss_and_grads(bf16, y0)
    assert 1e-5 < rel_err([g.cpu() for g in g16], [g.cpu() for g in g32]) < 0.05
    assert out16.dtype == torch.float32


@pytest.mark.gpu
def test_inductor_compile_on_cuda_gives_the_eager_outputs(compiling):
    torch._dynamo.reset()
    y0 = torch.randn(2, 4, 5, 5, device="cuda")
    eager = conv_block("adjoint").cuda()
    compiled = conv_block("adjoint", fast=FastPaths(compile=True)).cuda()
    out_e, g_e = loss_and_grads(eager, y0)
    out_c, g_c = loss_and_grads(compiled, y0)
    torch.testing.assert_close(out_c, out_e, rtol=1e-3, atol=1e-4)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# solver.loop=odex with a fixed-step solver: torchdiffeq's fixed-grid arithmetic without its host reads

@pytest.mark.parametrize("method, steps, step_size", [
    ("rk4", 4, None), ("rk4", None, 0.3), ("midpoint", 3, None), ("euler", None, 0.1)])
def test_sync_free_grid_computes_what_torchdiffeq_computes(method, steps, step_size, monkeypatch):
    torch.manual_seed(0)
    solver = Solver(method=method, steps=steps, step_size=step_size, t1=1.0, max_num_steps=None)
    ref = ODEBlock(ConvField(4, 8, act="softplus"), solver, "direct")
    fast = copy.deepcopy(ref)
    fast.solver = replace(solver, loop="odex")
    y0 = torch.randn(2, 4, 5, 5)
    out_r, g_r = loss_and_grads(ref, y0)
    from torchdiffeq._impl import solvers

    def no_torchdiffeq(*a, **k):
        raise AssertionError("the sync-free grid fell back to torchdiffeq")
    monkeypatch.setattr(solvers.FixedGridODESolver, "integrate", no_torchdiffeq)
    out_f, g_f = loss_and_grads(fast, y0)
    torch.testing.assert_close(out_f, out_r, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_f, g_r):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert fast.field.nfe_forward.item() == ref.field.nfe_forward.item()
    n_steps = steps or math.ceil(1.0 / step_size)
    assert fast.field.nfe_forward.item() == n_steps * {"rk4": 4, "midpoint": 2, "euler": 1}[method]


def test_sync_free_grid_serves_trajectories_and_every_gradient_method():
    torch.manual_seed(0)
    block = conv_block("direct")
    block.solver = replace(block.solver, loop="odex")
    copied = copy.deepcopy(block)                     # the copy keeps its loop
    assert copied.solver.loop == "odex"
    y0 = torch.randn(2, 4, 5, 5)
    times = torch.tensor([0.0, 0.5, 1.0])            # a trajectory: torchdiffeq's interpolation
    traj = block(y0, times)
    assert traj.shape == (3, *y0.shape)
    torch.testing.assert_close(traj[-1], block(y0), rtol=1e-6, atol=1e-7)
    for grad in ("adjoint", "gq", "anode"):
        ref = conv_block(grad)
        other = copy.deepcopy(ref)
        other.solver = replace(ref.solver, loop="odex")
        out_r, g_r = loss_and_grads(ref, y0)
        out_o, g_o = loss_and_grads(other, y0)
        torch.testing.assert_close(out_o, out_r, rtol=1e-6, atol=1e-7)
        assert rel_err(g_o, g_r) < 1e-5


def test_sync_free_grid_trains_like_torchdiffeq(tmp_path):
    fixed = [*TINY, "solver=rk4", "solver.steps=3"]
    ref = train_in_process(tmp_path / "ref", fixed)
    fast = train_in_process(tmp_path / "fast", [*fixed, "solver.loop=odex"])
    assert ref["status"] == fast["status"] == "completed"
    assert fast["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-5)
    assert fast["test/acc"] == ref["test/acc"]


@pytest.mark.gpu
def test_fixed_step_training_epoch_with_sync_free_grid_never_syncs(tmp_path):
    """With solver.loop=odex nothing in a training epoch's batches reads the GPU back: sync
    debugging records no synchronising call at all (warn mode, so a failure lists every place)."""
    summary = watched_run(tmp_path, [*TINY, "trainer.device=cuda", "dataset.batch_size=32", "solver=rk4",
                                     "solver.steps=4", "solver.loop=odex"])
    assert summary["status"] == "completed", summary["status"]
    assert SyncWatch.records == [], "\n".join(f"{f}:{n}" for f, n, _ in SyncWatch.records)
