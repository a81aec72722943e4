"""Where a W&B run says it came from (odex/tracking/provenance.py) and what odex-sync hands to wandb sync."""
from __future__ import annotations

import subprocess

import odex.tracking.provenance as provenance
import odex.tracking.sync as sync


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_state_of_odex_checkout_only(tmp_path):
    repo = tmp_path / "repo"
    (repo / "odex").mkdir(parents=True)
    (repo / "odex" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    provenance.git_state.cache_clear()
    assert provenance.git_state(repo / "odex") == {"commit": head, "dirty": False}
    (repo / "odex" / "a.py").write_text("x = 2\n")
    (repo / "new_output.txt").write_text("untracked files do not make a tree dirty\n")
    provenance.git_state.cache_clear()
    assert provenance.git_state(repo / "odex") == {"commit": head, "dirty": True}
    # a copy of odex installed somewhere inside another repository: no commit claimed
    (repo / "venv" / "site" / "odex").mkdir(parents=True)
    provenance.git_state.cache_clear()
    assert provenance.git_state(repo / "venv" / "site" / "odex") is None
    provenance.git_state.cache_clear()


def test_non_default_choices():
    assert provenance.default_choices()["model"] == "augmented"
    changed = provenance.non_default_choices({"model": "augmented", "grad": "adjoint", "experiment": None,
                                              "hydra/launcher": "joblib", "sweep": "lr_bs_grid"})
    assert changed == {"grad": "adjoint", "sweep": "lr_bs_grid"}


def test_odex_sync_finds_runs_below_jobs(tmp_path, capsys):
    for job in ("0", "1", "sub/2"):
        run = tmp_path / job / "wandb" / f"offline-run-20250101_000000-{job[-1]}abc"
        (run / "files").mkdir(parents=True)
        (run / f"run-{job[-1]}abc.wandb").write_bytes(b":W&B")
    (tmp_path / "0" / "wandb" / "offline-run-empty").mkdir()          # no run file: not a run
    runs = sync.offline_runs(tmp_path)
    assert [r.relative_to(tmp_path).parts[0] for r in runs] == ["0", "1", "sub"]
    assert sync.offline_runs(runs[0]) == [runs[0]]                   # a run's own folder
    assert sync.main([str(tmp_path), "--dry-run", "-p", "myproject"]) == 0
    out = capsys.readouterr().out
    assert "3 offline runs under" in out and all(str(r) in out for r in runs)
    assert "wandb sync -p myproject <the runs above>" in out
    assert sync.main([str(tmp_path / "missing")]) == 2
    assert sync.main([str(tmp_path / "sub" / "2" / "wandb" / "files-none")]) == 2
