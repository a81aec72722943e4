"""The real `odex-train` command in subprocesses: what a run records, one clear line for errors,
and multiruns."""
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import torch

from conftest import PLUGINS, REPO, TINY, read_metrics, read_summary, run_cli
from odex.ode.grad import names
from odex.tracking.wandb_offline import read_offline_run

EPOCH_KEYS = {"epoch", "train/loss", "train/acc", "test/acc", "lr", "time/epoch_s", "time/total_s",
              "nfe/forward", "nfe/backward"}


def test_every_gradient_method_trains_one_epoch(tmp_path):
    """One subprocess, one job per gradient method (rk4 with 4 steps suits every method): conf/grad/'s
    and the one of tests/plugins/ (on hydra.searchpath)."""
    methods = names([PLUGINS])
    assert "checkpointed" in methods and "direct" in methods
    p = run_cli(tmp_path, *TINY, "logger=none", "solver=rk4", "solver.steps=4",
                f"grad={','.join(methods)}", multirun=True)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted((tmp_path / "multirun").glob("[0-9]*"), key=lambda d: int(d.name))
    assert len(jobs) == len(methods)
    for job in jobs:
        grad = [o for o in json.loads(json.dumps(
            __import__("yaml").safe_load((job / ".hydra" / "overrides.yaml").read_text())))
            if o.startswith("grad=")][0].split("=")[1]
        assert read_summary(job)["status"] == "completed", grad
        row = read_metrics(job)[-1]
        assert EPOCH_KEYS <= set(row), EPOCH_KEYS - set(row)
        assert row["nfe/forward"] == 16          # 4 rk4 steps x 4 stages per batch
        if grad == "direct":
            assert row["nfe/backward"] == 0
        else:                                     # adjoint-type and recomputing methods call f
            assert row["nfe/backward"] > 0, grad


def test_default_run_records_wandb_checkpoint_and_summary(tmp_path):
    p = run_cli(tmp_path, "experiment=spheres_augmented", *TINY, "grad=adjoint")
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["nfe/backward"] > 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1]
    # the checkpoint loads into a fresh model
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and "optimizer" in ckpt and "rng" in ckpt
    assert any(k.startswith("ode.field") for k in ckpt["model"])
    # the offline wandb run is inside the run folder and holds the config and the logged row
    wb = read_offline_run(run / "wandb")
    assert wb["config"]["grad"]["_target_"] == "odex.ode.grad.Adjoint"
    assert wb["config"]["trainer"]["max_epochs"] == 1
    logged = [r for r in wb["history"] if "train/loss" in r]
    assert len(logged) == 1 and abs(logged[0]["train/loss"] - rows[0]["train/loss"]) < 1e-9
    assert logged[0]["epoch"] == 1
    # the run stands on its own: Hydra's choices by name, the experiment, the overrides, the odex
    # version, the git commit of this checkout; tags for the choices off the defaults
    run_info = wb["config"]["run"]
    assert run_info["experiment"] == "spheres_augmented"
    assert run_info["choices"]["dataset"] == "spheres" and run_info["choices"]["grad"] == "adjoint"
    assert run_info["choices"]["model"] == "augmented" and "hydra/launcher" not in run_info["choices"]
    assert run_info["overrides"][0] == "experiment=spheres_augmented" and "grad=adjoint" in run_info["overrides"]
    assert run_info["odex_version"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    if (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert run_info["git_commit"] == head.strip() and isinstance(run_info["git_dirty"], bool)
    assert {"experiment:spheres_augmented", "dataset:spheres", "grad:adjoint"} <= set(wb["tags"])
    assert "model:augmented" not in wb["tags"]               # the default
    # summary: the final metrics and the status; the console output captured
    assert wb["summary"]["status"] == "completed" and wb["summary"]["test/acc"] == summary["test/acc"]
    assert "epoch 1 | train/loss" in wb["console"]
    assert "odex-sync" in p.stderr + p.stdout
    listed = subprocess.run([sys.executable, "-m", "odex.tracking.sync", str(tmp_path), "--dry-run"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60).stdout
    assert str(next((run / "wandb").glob("offline-run-*"))) in listed and "1 offline runs" in listed


def test_missing_dataset_exits_with_one_clear_line(tmp_path):
    p = run_cli(tmp_path, "dataset=mnist", "logger=none")
    assert p.returncode != 0
    assert "Traceback" not in p.stderr + p.stdout
    errors = [line for line in p.stderr.splitlines() if line.startswith("odex: error:")]
    assert len(errors) == 1
    assert "mnist" in errors[0] and str(tmp_path / "data") in errors[0]
    assert "python -m odex.data mnist" in errors[0]
    assert read_summary(tmp_path / "run")["status"].startswith("failed: dataset 'mnist'")
    # the next step: what the failed run left, and where
    assert f"odex: the run is in {tmp_path / 'run'}: summary.json (the status)" in p.stderr


def test_wrong_override_is_rejected_clearly(tmp_path):
    p = run_cli(tmp_path, "optim.lrr=0.1")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "optim.lrr" in p.stderr
    p = run_cli(tmp_path, "model.widht=3", "logger=none", *TINY)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "widht" in p.stderr

# The Done-when grid (`-m optim.lr=... dataset.batch_size=...`: 4 folders, 4 wandb runs in one
# group, named by the swept keys) is tests/test_sweeps.py::test_grid_with_basic_launcher.


def test_help_is_odex_own_page_with_real_choices_and_examples(tmp_path):
    """`odex-train --help`: every group of conf/ with exactly its choices (no internal folder such as
    dataset/shared), the launchers, five kinds of example command, and where results go."""
    p = subprocess.run([sys.executable, "-m", "odex.train", "--help"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr[-2000:]
    page = p.stdout
    assert "powered by Hydra" not in page and "dataset/shared" not in page
    groups = page.split("== Config groups")[1].split("== Examples")[0]
    listed: dict[str, list[str]] = {}
    current = None
    for line in groups.splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("   "):
            current, _, rest = line.strip().partition(" ")
            listed[current] = []
        elif not line.strip():
            continue
        else:
            rest = line
        listed[current] += [c.strip().split(" ")[0].rstrip("*") for c in rest.split(",") if c.strip()]
    for folder in sorted(p for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "hydra"):
        assert sorted(listed[folder.name]) == sorted(y.stem for y in folder.glob("*.yaml")), folder.name
    assert {"basic", "joblib", "shared_gpu", "slurm", "submitit_local"} <= set(listed["hydra/launcher"])
    examples = page.split("== Examples ==")[1].split("== Where")[0]
    for shape in ("odex-train grad=", "odex-train -m optim.lr=", "hydra/launcher=", "odex-eval ckpt_path=",
                  "odex-report "):
        assert shape in examples, shape
    assert "outputs/runs/" in page and "outputs/multirun/" in page


def test_a_preempted_run_says_the_command_that_resumes_it(tmp_path):
    """SIGTERM mid-epoch: the terminal line is a command that, pasted as it is, continues that run
    in its folder to completion (not a new run in a new folder)."""
    import shlex

    stop = ["+callbacks.stop._target_=stop_helpers.SignalAt", "+callbacks.stop.epoch=1", "+callbacks.stop.step=2",
            f"+callbacks.stop.marker={tmp_path / 'sent'}", "trainer.max_epochs=2"]
    first = run_cli(tmp_path, *TINY, "logger=none", "solver=euler", "eval=[clean]", *stop)
    assert first.returncode == 128 + 15, first.stderr[-2000:]
    line = [ln for ln in first.stderr.splitlines() if "resume with: " in ln]
    assert len(line) == 1 and line[0].startswith("odex: error: preempted (SIGTERM)"), first.stderr[-2000:]
    command = shlex.split(line[0].split("resume with: ", 1)[1])
    assert command[0] == "odex-train" and f"hydra.run.dir={tmp_path / 'run'}" in command
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}
    second = subprocess.run([sys.executable, "-m", "odex.train", *command[1:]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stderr + second.stdout
    assert read_summary(tmp_path / "run")["status"] == "completed"
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_odex_eval_prints_every_figure_it_computes(tmp_path, caplog, capsys):
    """odex-eval's line holds every figure of its summary (PGD's, not only the clean accuracy), the
    training epoch line holds grad_check's; an out_dir that cannot be made is one line, nothing run."""
    import logging

    import odex.evaluate.run as eval_run

    p = run_cli(tmp_path, *TINY, "solver=euler", "logger=none")
    assert p.returncode == 0, p.stderr[-2000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    caplog.set_level(logging.INFO)
    code = eval_run.main([f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'eval'}", "eval=[clean,pgd,grad_check]",
                          "eval.pgd.limit=16", "eval.pgd.linf.steps=2", "eval.pgd.losses=ce",
                          "eval.grad_check.examples=8"])
    assert code == 0
    summary = read_summary(tmp_path / "eval")
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")][-1]
    figures = [k for k, v in summary.items() if k.startswith(("test/", "grad/")) and isinstance(v, (int, float))]
    assert "test/pgd_linf_acc" in figures and "grad/rel_err" in figures
    for k in figures:
        assert f"{k} " in line, (k, line)
    capsys.readouterr()
    assert eval_run.main([f"ckpt_path={ckpt}", f"out_dir={REPO / 'README.md'}"]) != 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"odex: error: out_dir={REPO / 'README.md'}: is a file, not a folder"]


def test_profile_on_a_cpu_run_prints_no_false_error(tmp_path):
    """debug=profile without CUDA: no "ERROR ... gpuGetDeviceCount" from the profiler's GPU probe."""
    p = run_cli(tmp_path, *TINY, "logger=none", "solver=euler", "debug=profile")
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "run" / "profile" / "trace.json").is_file()
    if not torch.cuda.is_available():
        assert "gpuGetDeviceCount" not in p.stderr + p.stdout
        assert not [ln for ln in (p.stderr + p.stdout).splitlines() if ln.startswith("ERROR")]
