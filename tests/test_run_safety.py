"""No failing command ever changes an earlier result: reruns into a completed run folder, a damaged
checkpoint or metrics file, a second process on a held folder, damaged dataset files, and a sweep's
parent stopped by a signal."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
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


def run_watched(tmp_path: Path, entry: str, *args: str) -> tuple[subprocess.CompletedProcess, bool]:
    """`entry` (odex.train or odex.evaluate.run) run as its console script in a fresh Python, with
    run_cli's environment; returns the process and whether torch had been imported when it exited
    (read from sys.modules at exit, not from a timing)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('TORCH=' + str('torch' in sys.modules), file=sys.stderr))\n"
            f"sys.argv = ['odex', *{list(args)!r}]\n"
            f"from {entry} import main\n"
            "sys.exit(main())\n")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "ODEX_DATA": str(tmp_path / "data")}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    torch_line = [ln for ln in p.stderr.splitlines() if ln.startswith("TORCH=")]
    p.stderr = "\n".join(ln for ln in p.stderr.splitlines() if not ln.startswith("TORCH=")) + "\n"
    return p, torch_line == ["TORCH=True"]


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

    # trainer.resume=never leaves the completed run where it is and trains in attempt-1/
    fresh = run_cli(tmp_path, *FAST, "trainer.resume=never")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert {k: v for k, v in snapshot(run).items() if not k.startswith("attempt-")} == before
    assert read_summary(run / "attempt-1")["status"] == "completed"
    assert (run / "attempt-1" / ".hydra" / "config.yaml").is_file()


def test_corrupt_checkpoint_and_summary_are_one_line_and_untouched(tmp_path):
    assert train_in_process(tmp_path, FAST)["status"] == "completed"
    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])                # truncated, as a full disk leaves it
    (tmp_path / "summary.json").unlink()                       # an unfinished run: it will resume
    before = snapshot(tmp_path)
    summary = train_in_process(tmp_path, [*FAST, "trainer.max_epochs=2"])
    assert summary["status"].startswith(f"failed: {ckpt}: its bytes changed since odex wrote it")
    assert "trainer.resume=never" in summary["status"]
    (tmp_path / "checkpoints" / "last.pt.sha256").unlink()      # an older odex's checkpoint: no checksum
    before = snapshot(tmp_path)
    summary = train_in_process(tmp_path, [*FAST, "trainer.max_epochs=2"])
    assert summary["status"].startswith(f"failed: {ckpt}: not a complete checkpoint"), summary["status"]
    assert snapshot(tmp_path) == before
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


def test_a_second_process_on_a_held_folder_stops_before_importing_torch(tmp_path):
    """The lock is odex-train's first act after reading the command line: the second process
    stops before its expensive start-up (torch is never imported), not after it."""
    run = tmp_path / "run"
    with RunLock(run):
        (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
        before = snapshot(run)
        p, torch_loaded = run_watched(tmp_path, "odex.train", f"hydra.run.dir={run}", *FAST)
        assert p.returncode == 1
        assert f"{run} is in use by another odex-train process" in one_error_line(p)
        assert snapshot(run) == before
        assert not torch_loaded


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


# ---------------------------------------------------------------------------------------------
# A finished result is never changed (issue 28). Each test works on a copy of one completed run
# (or sweep) made once for the module, and compares the SHA-256 of every file of it, before and after.

def tree_digest(folder: Path, *, skip: str | None = None) -> dict[str, str]:
    """sha256 of every file under `folder` (the lock file included), by relative path; `skip`: a
    top-level name left out (attempt-N/ of a new attempt)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not (skip and rel.parts[0].startswith(skip)):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("completed")
    p = run_cli(tmp, *FAST)
    assert p.returncode == 0, p.stderr[-2000:]
    return tmp / "run"


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sweep")
    p = run_cli(tmp, *FAST, "optim.lr=0.01,0.02", multirun=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return tmp / "multirun"


def copy_of(folder: Path, tmp_path: Path, name: str = "run") -> Path:
    dest = tmp_path / name
    shutil.copytree(folder, dest, symlinks=True)
    return dest


def test_resume_never_beside_a_completed_run_keeps_it_where_reports_read_it(completed_run, tmp_path):
    """A late mistake (a monitored value no epoch logs, found after the first epoch) in a new
    attempt: the completed run is what its folder still says; the failure is in attempt-1/."""
    run = copy_of(completed_run, tmp_path)
    before = tree_digest(run)
    p = run_cli(tmp_path, *FAST, "trainer.resume=never", "callbacks=[best_checkpoint]",
                "callbacks.best_checkpoint.monitor=test/nope")
    assert p.returncode == 2 and "callbacks.best_checkpoint.monitor=test/nope" in one_error_line(p)
    assert tree_digest(run, skip="attempt-") == before
    assert read_summary(run)["status"] == "completed"
    assert read_summary(run / "attempt-1")["status"].startswith("failed: callbacks.best_checkpoint.monitor")

    from odex.sweep.report import collect         # what a report reads: the completed run, once
    jobs = collect(tmp_path)
    assert [(j.folder, j.completed) for j in jobs] == [(run, True)], jobs

    # a new attempt that completes is beside it too (in-process: the Python API takes the same path)
    s = train_in_process(run, [*FAST, "trainer.resume=never"])
    assert s["status"] == "completed" and s["run_dir"] == str(run / "attempt-2")
    assert tree_digest(run, skip="attempt-") == before


@pytest.mark.slow
def test_two_processes_started_together_leave_a_completed_run_as_it_was(completed_run, tmp_path):
    """Two odex-train with two other configurations started at the same moment, five times: one
    takes the lock, the other stops at once; either way one line each, and not a byte changes
    (Hydra's .hydra/ record and log included)."""
    run = copy_of(completed_run, tmp_path)
    before = tree_digest(run)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "ODEX_DATA": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    for attempt in range(5):
        procs = [subprocess.Popen([sys.executable, "-m", "odex.train", f"hydra.run.dir={run}", *FAST, f"optim.lr={lr}"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for lr in (0.05, 0.07)]
        results = [(proc.wait(timeout=300), proc.communicate()[1]) for proc in procs]
        for code, err in results:
            lines = [ln for ln in err.splitlines() if ln.startswith("odex: error:")]
            assert "Traceback" not in err and len(lines) == 1, err[-2000:]
            assert (code, "in use by another" in lines[0]) in ((1, True), (2, False)), (code, lines)
            assert code == 1 or "holds a run with another configuration" in lines[0], lines
        assert tree_digest(run) == before, attempt


def in_mount_namespace(script: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    """`script` (sh) as root in a mount namespace of its own, where it can mount a small tmpfs (a
    real full disk) or a read-only bind mount, seen by nothing else. Skips the test where this
    machine allows neither (no unshare, no user namespaces)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux)")
    prefix = [unshare, "--mount"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user", "--mount"]
    p = subprocess.run([*prefix, "sh", "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode == 77 or "unshare:" in p.stderr:
        pytest.skip(f"cannot mount here: {p.stderr.strip()[-300:]}")
    return p


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "ODEX_DATA": str(tmp_path / "data"),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "PY": sys.executable}


RUNTIME_FULL = """
import sys, torch
from pathlib import Path
import odex.training.checkpoint as ckpt
from odex.errors import DiskFull
from odex.training.atomic import append_text, write_text
run = Path(sys.argv[1])
for name, write in (("checkpoint", lambda: ckpt.save_atomic({"w": torch.zeros(1 << 18)}, run / "checkpoints/last.pt")),
                    ("metrics", lambda: append_text(run / "metrics.jsonl", "x" * 300_000 + "\\n")),
                    ("summary", lambda: write_text(run / "summary.json", "{}" + " " * 300_000))):
    try:
        write()
        print(name, "written")
    except DiskFull as e:
        print(name, "DiskFull", e)
"""


def test_a_full_disk_is_one_line_and_loses_nothing(completed_run, tmp_path):
    """A completed run on a real disk (a 4 MB tmpfs) with 64 KB free: continuing it, and a new
    attempt beside it, stop before writing with one line naming the folder and the space needed;
    odex's writes that meet a full disk at run time (checkpoint, metrics line, summary) keep the
    old file whole and leave no .tmp behind."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    (tmp_path / "full.py").write_text(RUNTIME_FULL)
    before = tree_digest(completed_run)
    run = disk / "run"
    train = f'"$PY" -m odex.train hydra.run.dir={run} {" ".join(FAST)}'
    script = f"""
mount -t tmpfs -o size=4m tmpfs {disk} || exit 77
cp -a {completed_run} {run}
dd if=/dev/zero of={disk}/fill bs=4096 2>/dev/null
truncate -s -65536 {disk}/fill
{train} trainer.max_epochs=2 >/dev/null 2>{out}/continue.err; echo $? >{out}/continue.rc
{train} trainer.resume=never >{out}/never.err 2>&1; echo $? >{out}/never.rc
"$PY" {tmp_path / 'full.py'} {run} >{out}/runtime.out 2>{out}/runtime.err
find {run} -name '*.tmp' >{out}/tmp-files
cp -a {run} {out}/after
"""
    p = in_mount_namespace(script, _env(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    for name in ("continue", "never"):
        err = (out / f"{name}.err").read_text()
        lines = [ln for ln in err.splitlines() if ln.startswith("odex: error:")]
        assert (out / f"{name}.rc").read_text().strip() == "1", err[-2000:]
        assert "Traceback" not in err and len(lines) == 1, err[-2000:]
        assert lines[0].startswith(f"odex: error: {run if name == 'continue' else run / 'attempt-1'}: "
                                   "not enough free disk space for this run (needs about "), lines[0]
        assert "KB free" in lines[0]
    runtime = (out / "runtime.out").read_text().splitlines()
    assert [ln.split()[:2] for ln in runtime] == [["checkpoint", "DiskFull"], ["metrics", "DiskFull"],
                                                   ["summary", "DiskFull"]], (runtime, (out / "runtime.err").read_text())
    assert f"{run / 'checkpoints'}: not enough free disk space for last.pt (needs about" in runtime[0]
    assert (out / "tmp-files").read_text() == ""
    assert tree_digest(out / "after") == before


def test_a_checkpoint_with_changed_bytes_is_one_line_naming_it(completed_run, tmp_path, capsys):
    """One bit flipped in the middle of last.pt: continuing the run and odex-eval each say so in
    one line naming the file (odex-eval: exit 2, before torch is imported); nothing is written."""
    run = copy_of(completed_run, tmp_path)
    ckpt = run / "checkpoints" / "last.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))
    before = tree_digest(run)

    p = run_cli(tmp_path, *FAST, "trainer.max_epochs=2")           # an explicit resume: continue it
    assert p.returncode == 1
    assert one_error_line(p).startswith(f"odex: error: {ckpt}: its bytes changed since odex wrote it")
    assert tree_digest(run) == before

    e, torch_loaded = run_watched(tmp_path, "odex.evaluate.run", f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'eval'}")
    assert e.returncode == 2 and not torch_loaded
    assert one_error_line(e).startswith(f"odex: error: ckpt_path={ckpt}: its bytes changed since odex wrote it")
    assert not (tmp_path / "eval").exists() and tree_digest(run) == before

    # without the checksum file (an older odex's checkpoint): the zip's CRCs find the changed record
    from odex.errors import ChangedFile
    from odex.training.checksum import verify

    (run / "checkpoints" / "last.pt.sha256").unlink()
    with pytest.raises(ChangedFile, match="does not match"):
        verify(ckpt)


def test_a_multirun_into_a_finished_sweep_with_other_values_changes_nothing(finished_sweep, tmp_path):
    sweep = copy_of(finished_sweep, tmp_path, "multirun")
    before = tree_digest(sweep)
    p = run_cli(tmp_path, *FAST, "optim.lr=0.03,0.04", multirun=True)
    assert p.returncode == 2
    assert one_error_line(p) == (f"odex: error: hydra.sweep.dir={sweep}: holds another sweep (optim.lr=0.01,0.02, "
                                 "not optim.lr=0.03,0.04): use a new folder, or that sweep's overrides to finish it")
    assert tree_digest(sweep) == before

    # the same sweep again: every job is done, and its record (multirun.yaml, .hydra/, logs) stays
    same = run_cli(tmp_path, *FAST, "optim.lr=0.01,0.02", multirun=True)
    assert same.returncode == 0, same.stderr[-2000:]
    assert (same.stdout + same.stderr).count("already holds this completed run: skipped") == 2
    assert tree_digest(sweep) == before


def test_a_completed_run_in_a_read_only_folder_is_reported_as_done(completed_run, tmp_path):
    """A read-only mount: the same command says the run is done (exit 0); a new attempt is one
    line. Nothing is written (nothing could be), and no traceback."""
    run, out = copy_of(completed_run, tmp_path), tmp_path / "out"
    out.mkdir()
    before = tree_digest(run)
    train = f'"$PY" -m odex.train hydra.run.dir={run} {" ".join(FAST)}'
    script = f"""
mount --bind {run} {run} && mount -o remount,bind,ro {run} || exit 77
touch {run}/probe 2>/dev/null && exit 77
{train} >{out}/same.err 2>&1; echo $? >{out}/same.rc
{train} trainer.resume=never >{out}/never.err 2>&1; echo $? >{out}/never.rc
"""
    p = in_mount_namespace(script, _env(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    same = (out / "same.err").read_text()
    assert (out / "same.rc").read_text().strip() == "0", same[-2000:]
    assert f"{run} already holds this completed run: skipped" in same and "Traceback" not in same
    never = (out / "never.err").read_text()
    lines = [ln for ln in never.splitlines() if ln.startswith("odex: error:")]
    assert (out / "never.rc").read_text().strip() == "1" and "Traceback" not in never, never[-2000:]
    assert lines == [f"odex: error: {run}: read-only folder, holding no completed run of this configuration: "
                     "use a folder odex may write"], never[-2000:]
    assert tree_digest(run) == before


@pytest.mark.parametrize("case", ["no such file", "not empty", "inside the run", "bad value"])
def test_odex_eval_input_errors_are_one_line_and_exit_2_before_torch(completed_run, tmp_path, case):
    ckpt = completed_run / "checkpoints" / "last.pt"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    args, says = {
        "no such file": ([f"ckpt_path={tmp_path / 'nope.pt'}"], f"ckpt_path={tmp_path / 'nope.pt'}: no such file"),
        "not empty": ([f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'full'}"], f"out_dir={tmp_path / 'full'}: not empty"),
        "inside the run": ([f"ckpt_path={ckpt}", f"out_dir={completed_run / 'eval'}"],
                           f"out_dir={completed_run / 'eval'}: inside the checkpoint's run folder"),
        "bad value": ([f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'e'}", "solver.steps=-1"], "solver.steps=-1: must be"),
    }[case]
    before = tree_digest(completed_run)
    p, torch_loaded = run_watched(tmp_path, "odex.evaluate.run", *args)
    assert p.returncode == 2 and not torch_loaded, p.stderr[-2000:]
    assert one_error_line(p).startswith(f"odex: error: {says}"), p.stderr[-2000:]
    assert tree_digest(completed_run) == before and not (tmp_path / "e").exists()
