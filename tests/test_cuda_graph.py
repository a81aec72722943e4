"""trainer.cuda_graph (odex/training/cuda_graph.py): the training step replayed as one CUDA graph.

On the CPU: a model or device a graph cannot serve is refused with a ConfigError before any
training, naming the blocks whose solves sync; what a capture bakes in is what the step compares
before a replay. On CUDA (`gpu`): graphed steps give the eager steps' losses, parameters and NFE,
with a per-step schedule (Adam reads the lr from a device tensor; SGD re-captures) and a partial
last batch; a graphed training run gives the eager run's metrics and makes no host sync between
replays."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from odex.training.cuda_graph import GraphedTrainStep, graph_blockers, hyperparameters
from odex.errors import ConfigError
from odex.training.fast_paths import FastPaths
from odex.models.layers import ConvField
from odex.objectives.classification import CrossEntropy
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver
from odex.training.train_step import TrainStep

from conftest import TINY, read_metrics, train_in_process


def block(method="rk4", grad="direct", steps=3, loop="odex") -> ODEBlock:
    solver = Solver(method=method, steps=steps, max_num_steps=None, loop=loop) if method in ("rk4", "euler") \
        else Solver(method=method, loop=loop)
    return ODEBlock(ConvField(4, 8, act="softplus"), solver, grad)


class Net(nn.Module):
    """encoder -> ODE block -> readout: the shape of every odex classifier."""

    def __init__(self, **block_kw):
        super().__init__()
        self.encoder = nn.Conv2d(1, 4, 3, padding=1)
        self.ode = block(**block_kw)
        self.readout = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.readout(self.ode(self.encoder(x)).flatten(1))


def test_blocks_whose_solves_sync_are_named():
    model = nn.ModuleDict({"fixed": block(), "adaptive": block("dopri5"), "adjoint": block(grad="adjoint"),
                           "torchdiffeq": block(loop="torchdiffeq")})
    blockers = graph_blockers(model)
    assert blockers == ["adaptive (solver dopri5, loop odex, grad direct)",
                        "adjoint (solver rk4, loop odex, grad adjoint)",
                        "torchdiffeq (solver rk4, loop torchdiffeq, grad direct)"]
    assert graph_blockers(model["fixed"]) == []
    assert model["fixed"].solver.loop == "odex"          # asking changed nothing


def test_a_graph_is_refused_before_training(tmp_path):
    summary = train_in_process(tmp_path / "adaptive", [*TINY, "trainer.cuda_graph=true"])
    assert summary["status"].startswith("failed: ")
    # refused by the validation stage: grad=direct declares it supports a graph, dopri5 is adaptive
    assert "trainer.cuda_graph=true: needs a fixed-step solver (euler, midpoint, rk4, ...) with solver.loop=odex " \
           "and grad=direct" in summary["status"]
    summary = train_in_process(tmp_path / "cpu", [*TINY, "trainer.cuda_graph=true", "trainer.device=cpu",
                                                  "solver=rk4", "solver.steps=2", "solver.loop=odex"])
    assert "trainer.cuda_graph=true: needs a CUDA device; trainer.device=cpu" in summary["status"]
    for run in ("adaptive", "cpu"):                       # refused before the first epoch
        metrics = tmp_path / run / "metrics.jsonl"
        assert not metrics.exists() or not metrics.read_text().strip()
    with pytest.raises(ConfigError, match="true or false"):
        FastPaths(cuda_graph="yes")


def test_what_a_capture_bakes_in_is_compared_before_a_replay():
    p = [nn.Parameter(torch.zeros(2))]
    sgd = torch.optim.SGD(p, lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(sgd, step_size=1, gamma=0.5)
    before = hyperparameters(sgd, [False])
    schedule.step()
    assert hyperparameters(sgd, [False]) != before       # SGD's lr is baked in: re-capture
    adam = torch.optim.Adam(p, lr=0.1)
    schedule = torch.optim.lr_scheduler.StepLR(adam, step_size=1, gamma=0.5)
    before = hyperparameters(adam, [True])
    schedule.step()
    assert adam.param_groups[0]["lr"] == pytest.approx(0.05)
    assert hyperparameters(adam, [True]) == before       # read from a device tensor instead
    adam.param_groups[0]["betas"] = (0.8, 0.999)
    assert hyperparameters(adam, [True]) != before       # any other setting re-captures


# ---------------------------------------------------------------------------------------------
# CUDA

def _batches(n_full=10, batch=8, partial=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [(torch.randn(batch, 1, 6, 6, generator=g), torch.randint(0, 3, (batch,), generator=g))
           for _ in range(n_full)]
    out.append((torch.randn(partial, 1, 6, 6, generator=g), torch.randint(0, 3, (partial,), generator=g)))
    return [(x.cuda(), y.cuda()) for x, y in out]


@pytest.fixture
def exact_cuda():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.deterministic)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    yield
    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.deterministic) = saved


@pytest.mark.gpu
@pytest.mark.parametrize("optim, captures", [("adam", 1), ("sgd", 3)])
def test_graphed_steps_give_the_eager_steps(exact_cuda, optim, captures):
    torch.manual_seed(0)
    base = Net().cuda()
    runs = {}
    for graphed in (False, True):
        model = copy.deepcopy(base)
        # capturable on both sides, as build_optimizer makes Adam for trainer.cuda_graph (its rounding differs)
        opt = (torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True) if optim == "adam"
               else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
        # the lr changes every 4 steps: Adam's graph reads it from a tensor, SGD's is re-captured
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        step = (GraphedTrainStep(model, CrossEntropy(), opt, grad_clip=1.0, device=torch.device("cuda"))
                if graphed else TrainStep(model, CrossEntropy(), opt, grad_clip=1.0))
        losses = []
        for x, y in _batches():                     # 3 eager warm-up, capture, replays, partial eager
            losses.append(step(x, y).loss.detach().clone())
            sched.step()
        runs[graphed] = (torch.stack(losses), [p.detach().clone() for p in model.parameters()],
                         int(model.ode.field.nfe_forward), step)
    (l_e, p_e, nfe_e, _), (l_g, p_g, nfe_g, graphed_step) = runs[False], runs[True]
    torch.testing.assert_close(l_g, l_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(p_g, p_e):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert nfe_g == nfe_e == 11 * 3 * 4                 # every replay counted its evaluations
    assert graphed_step.captures == captures
    assert l_g[1:].ne(l_g[:-1]).all()                  # the steps really trained (no stale replay)


class ReplayWatch:
    """Trainer callback: CUDA sync debugging over the training steps `start`..`stop` (1-based) of
    the first epoch; every synchronising call is recorded with its file and line."""
    records: list[tuple[str, int]] | None = None

    def __init__(self, start: int, stop: int):
        self.start, self.stop, self.steps, self._catch = start, stop, 0, None

    def on_step_end(self, epoch, step):
        if epoch != 1:
            return
        self.steps += 1
        if self.steps == self.start - 1:
            self._catch = warnings.catch_warnings(record=True)
            self._seen = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        elif self.steps == self.stop:
            torch.cuda.set_sync_debug_mode(0)
            self._catch.__exit__(None, None, None)
            ReplayWatch.records = [(w.filename, w.lineno) for w in self._seen if "synchroniz" in str(w.message)]


@pytest.mark.gpu
def test_graphed_training_run_gives_the_eager_metrics_and_never_syncs_between_replays(tmp_path, exact_cuda):
    # 250 images in batches of 32: 7 full batches (3 warm-up, 1 capture, 3 replays) and a partial one
    common = [*TINY, "trainer.device=cuda", "trainer.tf32=false", "solver=rk4", "solver.steps=4", "solver.loop=odex",
              "dataset.batch_size=32", "dataset.limit_train=250", "trainer.max_epochs=2"]
    eager = train_in_process(tmp_path / "eager", common)
    ReplayWatch.records = None
    try:
        graphed = train_in_process(tmp_path / "graphed", [
            *common, "trainer.cuda_graph=true",
            "+callbacks.watch._target_=test_cuda_graph.ReplayWatch", "+callbacks.watch.start=5",
            "+callbacks.watch.stop=7"])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert eager["status"] == graphed["status"] == "completed", graphed["status"]
    m_e, m_g = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "graphed")
    for e, g in zip(m_e, m_g):       # the graph's Adam is the capturable one: rounding differs
        assert g["train/loss"] == pytest.approx(e["train/loss"], rel=1e-4)
        assert abs(g["test/acc"] - e["test/acc"]) <= 1 / 128 + 1e-9      # at most one test image
        assert g["nfe/forward"] == e["nfe/forward"] == 16
    assert m_g[-1]["cuda_graph/captures"] == 1
    assert ReplayWatch.records == [], "host syncs between replays:\n" + "\n".join(
        f"{f}:{n}" for f, n in ReplayWatch.records or [])


SYNCING_STEP = """
import torch
from odex.training.cuda_graph import GraphedTrainStep
from odex.errors import ConfigError
from odex.objectives.classification import CrossEntropy
from test_cuda_graph import Net, _batches

class Syncing(CrossEntropy):
    def __call__(self, model, x, y):
        step = super().__call__(model, x, y)
        step.loss.item()                            # a host read of a GPU value
        return step

model = Net().cuda()
step = GraphedTrainStep(model, Syncing(), torch.optim.Adam(model.parameters(), capturable=True),
                        device=torch.device("cuda"))
batches = _batches()
for x, y in batches[:3]:                            # eager warm-up: a sync is merely slow there
    step(x, y)
try:
    step(*batches[3])
except ConfigError as e:
    print("ConfigError:", e)
"""


@pytest.mark.gpu
def test_a_step_that_syncs_is_a_clear_error_not_a_crash():
    # in a subprocess: a failed capture must not leave this process's CUDA context to other tests
    out = subprocess.run([sys.executable, "-c", SYNCING_STEP], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).parent, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [str(Path(__file__).parent), str(Path(__file__).parents[1])])})
    assert "ConfigError: trainer.cuda_graph=true: the training step cannot be captured" in out.stdout, \
        out.stdout + out.stderr
