"""No failing command ever changes an earlier result: reruns into a completed run folder, a damaged
checkpoint or metrics file, a second process on a held folder, damaged dataset files, and a sweep's
parent stopped by a signal."""
from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, read_metrics, read_summary, run_cli, train_in_process

from odex.training.resume import LOCK_NAME, RunLock

FAST = [*TINY, "solver=euler", "logger=none"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (but the lock file, which only ever exists) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("odex: error:")]
    assert len(lines) == 1, p.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_failing_reruns_leave_a_completed_run_byte_identical(tmp_path):
    first = run_cli(tmp_path, *FAST)
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "run"
    before = snapshot(run)
    assert {"summary.json", "metrics.jsonl", "checkpoints/last.pt", ".hydra/config.yaml"} <= set(before)

    # another configuration, a missing dataset (with resume=never), a bad resume mode, a bad value
    for extra, code, says in ((["optim.lr=0.05"], 2, "another configuration"),
                              (["trainer.resume=never", "dataset=mnist"], 1, "dataset 'mnist' not found"),
                              (["trainer.resume=sometimes"], 2, "trainer.resume=sometimes"),
                              (["optim.lr=abc"], 2, "optim.lr=abc")):
        p = run_cli(tmp_path, *FAST, *extra)
        assert p.returncode == code, (extra, p.stderr[-2000:])
        assert says in one_error_line(p)
        assert snapshot(run) == before, extra

    # a rerun of the same run skips it and changes nothing
    same = run_cli(tmp_path, *FAST)
    assert same.returncode == 0 and snapshot(run) == before

    # trainer.resume=never moves the earlier attempt aside, byte for byte, and starts afresh
    fresh = run_cli(tmp_path, *FAST, "trainer.resume=never")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert snapshot(run / "attempt-1") == before
    assert read_summary(run)["status"] == "completed" and (run / ".hydra" / "config.yaml").is_file()


def test_corrupt_checkpoint_and_summary_are_one_line_and_untouched(tmp_path):
    assert train_in_process(tmp_path, FAST)["status"] == "completed"
    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])                # truncated, as a full disk leaves it
    (tmp_path / "summary.json").unlink()                       # an unfinished run: it will resume
    before = snapshot(tmp_path)
    summary = train_in_process(tmp_path, [*FAST, "trainer.max_epochs=2"])
    assert summary["status"].startswith(f"failed: {ckpt} cannot be read")
    assert "trainer.resume=never" in summary["status"]
    assert snapshot(tmp_path) == before

    (tmp_path / "summary.json").write_text('{"status": "compl')  # a torn summary
    before = snapshot(tmp_path)
    summary = train_in_process(tmp_path, [*FAST, "trainer.max_epochs=2"])
    assert summary["status"].startswith(f"failed: {tmp_path / 'summary.json'} is not valid JSON")
    assert snapshot(tmp_path) == before


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    assert train_in_process(tmp_path, [*FAST, "trainer.max_epochs=1"])["status"] == "completed"
    metrics = tmp_path / "metrics.jsonl"
    rows = read_metrics(tmp_path)
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "train/lo')    # killed mid-write
    summary = train_in_process(tmp_path, [*FAST, "trainer.max_epochs=2"])
    assert summary["status"] == "completed"
    after = read_metrics(tmp_path)
    assert [r["epoch"] for r in after] == [1, 2] and after[0] == rows[0]

    metrics.write_text('{"epoch": 1, "train/lo\n' + metrics.read_text())  # damage in the middle: not guessed at
    (tmp_path / "summary.json").unlink()
    before = snapshot(tmp_path)
    summary = train_in_process(tmp_path, [*FAST, "trainer.max_epochs=3"])
    assert summary["status"].startswith(f"failed: {metrics} line 1 is not valid JSON")
    assert snapshot(tmp_path) == before


def test_a_second_process_on_a_held_folder_stops_at_once(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
        before = snapshot(run)
        t0 = time.monotonic()
        p = run_cli(tmp_path, *FAST)
        took = time.monotonic() - t0
        assert p.returncode == 1
        assert f"{run} is in use by another odex-train process" in one_error_line(p)
        assert snapshot(run) == before
        assert "epoch 1 |" not in p.stderr + p.stdout        # it did not train
    assert took < 60          # no waiting for the lock (the time is the subprocess's start-up)


def _idx_images(n: int) -> bytes:
    return struct.pack(">IIII", 2051, n, 28, 28) + bytes((i * 7) % 256 for i in range(n * 28 * 28))


def _idx_labels(n: int) -> bytes:
    return struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n))


def test_a_truncated_gz_is_one_line_and_leaves_no_half_file(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = gzip.compress(_idx_images(60))
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(images[: len(images) // 2])     # truncated
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(60)))
    args = ["dataset=mnist_t10k", "dataset.train_size=40", "dataset.batch_size=8", *FAST[2:]]
    p = run_cli(tmp_path, *args)
    line = one_error_line(p)
    assert p.returncode == 1 and str(raw / "t10k-images-idx3-ubyte.gz") in line and "truncated or corrupt" in line
    assert sorted(f.name for f in raw.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    # the rest in-process, through the dataset's own loader
    from odex.data.vision import mnist_t10k
    from odex.errors import DataFileError

    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(images)        # the good file back: it works
    assert len(mnist_t10k(root=str(tmp_path / "data"), train_size=40).train.y) == 40
    assert (raw / "t10k-images-idx3-ubyte").read_bytes() == _idx_images(60)

    # decompressed files there: nothing is written to the data folder (a read-only root works)
    for gz in raw.glob("*.gz"):
        gz.unlink()
    stamp = {f.name: f.stat().st_mtime_ns for f in raw.iterdir()}
    assert len(mnist_t10k(root=str(tmp_path / "data"), train_size=40).test.y) == 20
    assert {f.name: f.stat().st_mtime_ns for f in raw.iterdir()} == stamp

    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(60)[:30])   # truncated raw file
    with pytest.raises(DataFileError, match="t10k-labels-idx1-ubyte.*truncated"):
        mnist_t10k(root=str(tmp_path / "data"), train_size=40)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    from odex.training.signals import _children_of

    return _children_of(pid)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sigterm_to_a_sweep_parent_leaves_no_worker(tmp_path, launcher):
    """Four long jobs on two workers; SIGTERM to the parent once the workers run: every worker
    process is gone shortly after the parent, and no queued job starts later."""
    sweep = tmp_path / "multirun"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "ODEX_DATA": str(tmp_path / "data")}
    extra = (["hydra.launcher.n_jobs=2"] if launcher == "joblib"
             else ["hydra.launcher.timeout_min=10", "hydra.launcher.tasks_per_node=1"])
    args = [sys.executable, "-m", "odex.train", "-m", f"hydra.sweep.dir={sweep}", f"hydra/launcher={launcher}",
            *extra, *FAST, "trainer.max_epochs=200", "optim.lr=0.01,0.02,0.03,0.04"]
    parent = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(sweep.glob("*/metrics.jsonl")):
            time.sleep(0.5)
        assert list(sweep.glob("*/metrics.jsonl")), "no job started"
        workers = _descendants(parent.pid)
        assert workers
        parent.send_signal(signal.SIGTERM)
        out, err = parent.communicate(timeout=90)
        assert parent.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert "odex: sweep stopped by SIGTERM" in err
        time.sleep(2)
        assert not [p for p in workers if _alive(p)]
        started = {d.name for d in sweep.iterdir() if (d / ".hydra").is_dir()}
        time.sleep(3)
        assert {d.name for d in sweep.iterdir() if (d / ".hydra").is_dir()} == started    # nothing new starts
    finally:
        if parent.poll() is None:
            parent.kill()
