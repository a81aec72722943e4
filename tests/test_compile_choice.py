"""`trainer.compile: auto` (odex/training/compile_choice.py): the rule on given timings, and the probe with a
real compile (aot_eager, the cheap backend) whose timings are scripted, so the decision is
deterministic while the compiled field is the real one. No wall-clock assertions."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from odex.training.compile_choice import COMPILES_PER_RUN, MARGIN, choose_compile, decide
from odex.errors import ConfigError
from odex.training.fast_paths import FastPaths
from odex.models.layers import MLPField
from odex.ode.field_options import FieldOptions, building
from odex.ode.nfe import counted_fields
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver

from conftest import TINY, run_cli, train_in_process


# ------------------------------------------------------------------ the rule

def test_a_short_run_stays_eager_without_compiling():
    ok, why = decide(eager_s=0.01, evaluations=1000, prior_compile_s=20.0)   # 10 s of field work
    assert ok is False and "too short" in why


def test_a_long_run_asks_for_the_compiled_timings():
    ok, _ = decide(eager_s=0.01, evaluations=100_000, prior_compile_s=20.0)  # 1000 s
    assert ok is None


def test_compiled_field_must_be_clearly_faster():
    ok, why = decide(0.01, 100_000, compiled_s=0.01 * (MARGIN + 0.01), compile_s=1.0)
    assert ok is False and "not faster" in why
    ok, why = decide(0.01, 100_000, compiled_s=0.0109, compile_s=1.0)          # slower (MLP case)
    assert ok is False


def test_the_cold_compiles_are_counted_against_the_runs_length():
    # 0.8x eager saves 0.002 s per evaluation: 20 s per 10,000 evaluations; a run compiles
    # COMPILES_PER_RUN times (3: 90 s for a 30 s cold compile)
    assert COMPILES_PER_RUN == 3
    assert decide(0.01, 40_000, compiled_s=0.008, compile_s=30.0)[0] is False     # saves 80 s
    assert decide(0.01, 50_000, compiled_s=0.008, compile_s=30.0)[0] is True      # saves 100 s
    ok, why = decide(0.01, 50_000, compiled_s=0.008, compile_s=30.0)
    assert "0.80x" in why and "30.0 s" in why


# ------------------------------------------------------------------ the probe, real compile

class Net(nn.Module):
    """BatchNorm before the block, so a probe that moved the model's statistics would show."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.ode = ODEBlock(MLPField(3, 8, act="softplus"), Solver(method="rk4", steps=2, max_num_steps=None))
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(self.ode(self.bn(x)))


def scripted(eager=(0.01, 0.01), compiled=(2.0, 0.005)):
    """A `measure` that runs the probe for real (so the compile happens) and returns fixed times."""
    calls = []

    def measure(fn, repeats, device, label):
        fn()
        calls.append(label)
        return eager if label == "eager" else compiled
    measure.calls = calls
    return measure


def _net():
    torch.manual_seed(0)
    return Net(), torch.randn(16, 3)


def test_probe_compiles_when_it_pays_and_leaves_the_model_as_it_was():
    net, x = _net()
    state, rng = copy.deepcopy(net.state_dict()), torch.get_rng_state()
    m = scripted()
    choice = choose_compile(net, x, iterations=10_000, backend="aot_eager", measure=m, prior_compile_s=1.0)
    assert choice.compile and m.calls == ["eager", "compiled"]
    assert choice.evaluations == 8 * 10_000               # rk4 x 2 steps: 8 forward evaluations
    field = counted_fields(net)[0]
    assert field.options == FieldOptions() and field.field._compiled_call_impl is None     # not touched
    assert int(field.nfe_forward) == 0                      # the probe's evaluations are not counted
    torch.testing.assert_close(net.state_dict(), state, rtol=0, atol=0)   # BN statistics untouched
    assert torch.equal(torch.get_rng_state(), rng)
    assert choice.summary() == {"compile": "aot_eager", "compile_reason": choice.reason}


def test_a_model_built_with_the_choice_computes_what_eager_does():
    net, x = _net()
    with building(FieldOptions(backend="aot_eager")):
        compiled, _ = _net()                               # the same seed: the same weights
    assert counted_fields(compiled)[0].field._compiled_call_impl is not None
    net.train(), compiled.train()
    out_c, out_e = compiled(x), net(x)
    out_c.sum().backward(), out_e.sum().backward()
    torch.testing.assert_close(out_c, out_e)
    for a, b in zip(compiled.parameters(), net.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_probe_stays_eager_when_compiled_is_slower():
    net, x = _net()
    choice = choose_compile(net, x, iterations=10_000, backend="aot_eager",
                            measure=scripted(compiled=(2.0, 0.0112)), prior_compile_s=1.0)
    assert not choice.compile and "not faster" in choice.reason
    assert counted_fields(net)[0].field._compiled_call_impl is None
    assert choice.summary()["compile"] == "eager"


def test_probe_compiles_nothing_for_a_short_run():
    net, x = _net()
    m = scripted()
    choice = choose_compile(net, x, iterations=10, backend="aot_eager", measure=m, prior_compile_s=20.0)
    assert not choice.compile and m.calls == ["eager"] and "too short" in choice.reason
    assert counted_fields(net)[0].field._compiled_call_impl is None


# ------------------------------------------------------------------ the config key

def test_auto_is_accepted_and_compiles_nothing_itself():
    fast = FastPaths(compile="auto")
    assert fast.auto_compile and fast.backend is None
    for v in (False, True, "aot_eager", "none"):
        assert not FastPaths(compile=v).auto_compile
    assert FastPaths(compile=True).backend == "inductor"
    with pytest.raises(ConfigError, match="auto"):
        FastPaths(compile="autoo")


def test_auto_in_a_run_logs_and_records_its_choice(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "trainer.compile=auto"])
    assert summary["status"] == "completed"
    assert summary["compile"] == "eager" and "too short" in summary["compile_reason"]


def test_a_bad_compile_value_is_one_error_line(tmp_path):
    proc = run_cli(tmp_path, *TINY, "trainer.compile=autoo")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("odex: error: ") and "auto" in lines[-1]
    assert sum(ln.startswith("odex: error:") for ln in lines) == 1


@pytest.mark.parametrize("model", ["heavy_ball", "lyanet"])
def test_probe_handles_every_kind_of_field(model):
    """Momentum fields (state and velocity in one tensor) and LyaNet's field (an output that does
    not depend on every input) go through the probe; a short run stays eager."""
    from conftest import compose_cfg
    from odex.config import build
    from odex.data.batches import to_unit_float

    cfg = compose_cfg(["logger=none", f"model={model}", "dataset.limit_train=16", "dataset.limit_test=8",
                       "solver=rk4"])
    data = build(cfg.dataset)
    net = build(cfg.model, info=data.info, solver=build(cfg.solver), grad=build(cfg.grad))
    choice = choose_compile(net, to_unit_float(data.train.x[:4]), iterations=1)
    assert not choice.compile and "too short" in choice.reason and choice.evaluations > 0
