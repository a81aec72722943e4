"""trainer.resume, stop signals and per-job isolation.

The central claim: a run stopped by a signal (mid-epoch or at an epoch boundary) and run again in
its folder ends with exactly the metrics of an uninterrupted run (on the CPU, time/* aside).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, compose_cfg, read_metrics, read_summary, run_cli

import odex.training.checkpoint as ckpt
from odex.sweep.process_state import isolated_job
from odex.training.resume import fingerprint, trim_metrics
from odex.training.signals import Preempted, StopSignals
from odex.train import run

TESTS = Path(__file__).resolve().parent
# One thread: bitwise-equal numbers between runs, and no oversubscription on a shared 2-core box.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}"}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def signal_at(tmp_path, epoch, step, name="SIGTERM", job=None):
    out = ["+callbacks.stop._target_=stop_helpers.SignalAt", f"+callbacks.stop.epoch={epoch}",
           f"+callbacks.stop.step={step}", f"+callbacks.stop.marker={tmp_path / 'signal-sent'}",
           f"+callbacks.stop.signal_name={name}"]
    return out + ([f"+callbacks.stop.job={job}"] if job is not None else [])


def train(run_dir, overrides, stop=None):
    return run(compose_cfg(["logger=none", *overrides]), run_dir, stop=stop)


# 256 examples / batch 64 = 4 batches an epoch; random crops draw from the batch generator, and a
# step-wise cosine schedule has state, so a resumption must restore both to match.
TWO_EPOCHS = [*TINY, "trainer.max_epochs=2", "solver=euler", "dataset.augment={padding: 1, flip: false}",
              "schedule=cosine", "schedule.interval=step"]


@pytest.mark.parametrize("epoch, step, where", [(2, 2, "mid-epoch"), (1, 4, "epoch boundary")])
def test_stopped_run_resumes_to_the_uninterrupted_metrics(tmp_path, epoch, step, where):
    reference = train(tmp_path / "reference", TWO_EPOCHS)
    assert reference["status"] == "completed"

    overrides = [*TWO_EPOCHS, *signal_at(tmp_path, epoch, step)]
    with StopSignals() as stop:
        first = train(tmp_path / "run", overrides, stop=stop)
    assert stop.name == "SIGTERM"
    assert first["status"].startswith("failed: preempted (SIGTERM)"), first["status"]
    saved = ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")
    if where == "mid-epoch":
        assert saved["epoch"] == 1 and saved["progress"]["step"] == 2
    else:
        assert saved["epoch"] == 1 and saved["progress"] is None
    assert len(read_metrics(tmp_path / "run")) == 1

    with StopSignals() as stop:
        second = train(tmp_path / "run", overrides, stop=stop)
    assert second["status"] == "completed" and not stop.requested
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert without_time(rows) == without_time(read_metrics(tmp_path / "reference"))
    assert second["train/loss"] == reference["train/loss"]


def test_completed_run_is_skipped_and_longer_run_continues(tmp_path):
    one = [*TINY, "solver=euler"]
    first = train(tmp_path / "run", one)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    again = train(tmp_path / "run", one)
    assert again == first                      # the kept summary, nothing trained
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics

    # a finished run given more epochs goes on from its last checkpoint, as if never stopped
    longer = train(tmp_path / "run", [*one, "trainer.max_epochs=2"])
    assert longer["status"] == "completed"
    straight = train(tmp_path / "straight", [*one, "trainer.max_epochs=2"])
    assert without_time(read_metrics(tmp_path / "run")) == without_time(read_metrics(tmp_path / "straight"))


def test_resume_modes_and_a_changed_configuration(tmp_path):
    one = [*TINY, "solver=euler"]
    train(tmp_path / "run", one)
    other = train(tmp_path / "run", [*one, "optim.lr=0.05"])
    assert other["status"].startswith("failed: ") and "another configuration" in other["status"]
    assert "optim.lr: 0.001 -> 0.05" in other["status"]

    fresh = train(tmp_path / "run", [*one, "optim.lr=0.05", "trainer.resume=never"])
    assert fresh["status"] == "completed" and len(read_metrics(tmp_path / "run")) == 1

    must = train(tmp_path / "empty", [*one, "trainer.resume=must"])
    assert must["status"].startswith("failed: trainer.resume=must: there is no checkpoint")
    bad = train(tmp_path / "bad", [*one, "trainer.resume=sometimes"])
    assert bad["status"].startswith("failed: trainer.resume=sometimes: must be one of never, auto, must")


def test_fingerprint_ignores_where_and_how_long():
    base = {"optim": {"lr": 0.1}, "trainer": {"seed": 0, "max_epochs": 3, "device": "cpu"}, "logger": {"mode": "x"}}
    same = {"optim": {"lr": 0.1}, "trainer": {"seed": 0, "max_epochs": 9, "device": "cuda"}, "logger": {}}
    assert fingerprint(base) == fingerprint(same)
    assert fingerprint(base) != fingerprint({**base, "trainer": {"seed": 1, "max_epochs": 3}})


def test_trim_metrics_keeps_checkpointed_epochs(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "x": e}) + "\n" for e in (1, 2, 3)))
    trim_metrics(tmp_path, 2)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    trim_metrics(tmp_path, 0)
    assert read_metrics(tmp_path) == []


def test_stop_signals_flag_restore_and_hand_over():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.requested and stop.name == "SIGUSR1" and seen == []
        os.kill(os.getpid(), signal.SIGUSR1)        # our handler is gone: the earlier one runs again
        assert seen == [signal.SIGUSR1]
        with pytest.raises(SystemExit) as exit_:
            stop.hand_over()                         # chains to the earlier handler (submitit's), then exits
        assert seen == [signal.SIGUSR1, signal.SIGUSR1]
        assert exit_.value.code == 128 + signal.SIGUSR1
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_second_stop_signal_stops_at_once():
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)        # the first only asks for a batch boundary
        assert stop.requested and stop.name == "SIGTERM"
        with pytest.raises(Preempted, match="SIGTERM, then SIGUSR1 again before a batch boundary"):
            os.kill(os.getpid(), signal.SIGUSR1)    # the second, during (say) a long evaluation
            for _ in range(1000):                   # Python runs the handler between bytecodes
                pass
    assert stop.signum == signal.SIGTERM


def test_isolated_job_restores_global_state():
    import wandb

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    import torch._functorch.config as functorch_config
    donated = functorch_config.donated_buffer
    with isolated_job():
        functorch_config.donated_buffer = not donated     # what a compiled field's job sets
        torch.set_default_dtype(torch.float64)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = True
        torch.set_num_threads(2)
        torch.rand(100)
        wandb.init(mode="disabled")
    assert torch.get_default_dtype() == dtype and torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert functorch_config.donated_buffer == donated
    assert wandb.run is None
    assert torch.equal(torch.rand(3), expected)


def test_sigterm_stops_a_multirun_and_a_rerun_resumes_it(tmp_path):
    """Through the CLI: SIGTERM in job 1's second epoch stops the sweep (exit 143) after a checkpoint;
    the same command again skips job 0 and finishes job 1 with an uninterrupted run's metrics."""
    overrides = [*TINY, "solver=euler", "trainer.max_epochs=2", "optim.lr=0.01,0.001", *signal_at(tmp_path, 2, 1, job=1)]
    first = run_cli(tmp_path, *overrides, multirun=True, env=ONE_THREAD)
    sweep = tmp_path / "multirun"
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-2000:]
    assert "preempted (SIGTERM) in epoch 2 after batch 1/4" in first.stderr
    assert read_summary(sweep / "0")["status"] == "completed"
    assert read_summary(sweep / "1")["status"].startswith("failed: preempted (SIGTERM)")
    job0 = (sweep / "0" / "summary.json").read_bytes(), (sweep / "0" / "summary.json").stat().st_mtime_ns

    second = run_cli(tmp_path, *overrides, multirun=True, env=ONE_THREAD)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "2 jobs, 0 failed" in second.stdout
    assert ((sweep / "0" / "summary.json").read_bytes(), (sweep / "0" / "summary.json").stat().st_mtime_ns) == job0
    assert read_summary(sweep / "1")["status"] == "completed"

    reference = train(tmp_path / "reference", [*TINY, "solver=euler", "trainer.max_epochs=2", "optim.lr=0.001"])
    assert reference["status"] == "completed"
    assert without_time(read_metrics(sweep / "1")) == without_time(read_metrics(tmp_path / "reference"))

    # the same wandb run goes on: both attempts wrote offline runs with one id
    from odex.tracking.wandb_offline import read_offline_run
    attempts = sorted((sweep / "1" / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2
    runs = [read_offline_run(a) for a in attempts]
    assert runs[0]["id"] == runs[1]["id"]
    assert [r["epoch"] for r in runs[0]["history"]] == [1] and [r["epoch"] for r in runs[1]["history"]] == [2]
