"""odex-report on a hand-made sweep folder (no training): the table, the best configuration, failed
and unfinished jobs, the heat map's cells and the grouping of the loss curves."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from odex import report

LRS, BSS = (0.1, 0.01), (32, 64)


def make_job(sweep: Path, num: int, lr: float, bs: int, grad: str, *, status: str | None,
             val: list[float] | None = None, nfe: float = 20.0) -> Path:
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    overrides = [f"optim.lr={lr}", f"dataset.batch_size={bs}", f"grad={grad}", "trainer.max_epochs=2"]
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": lr}, "dataset": {"batch_size": bs}}))
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"grad": grad, "model": "augmented"}}}}))
    rows = [{"epoch": e + 1, "train/loss": 1.0 / (e + 1), "val/acc": v, "nfe/forward": nfe,
             "nfe/backward": nfe / 2, "time/total_s": 1.5 * (e + 1)} for e, v in enumerate(val or [])]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status is not None:
        (d / "summary.json").write_text(json.dumps({**(rows[-1] if rows else {}), "status": status}))
    return d


@pytest.fixture
def sweep(tmp_path):
    s = tmp_path / "sweep"
    make_job(s, 0, 0.1, 32, "direct", status="completed", val=[0.5, 0.7])
    make_job(s, 1, 0.1, 64, "adjoint", status="completed", val=[0.6, 0.9], nfe=30.0)
    make_job(s, 2, 0.01, 32, "direct", status="failed: train/loss became nan in epoch 1", val=[])
    make_job(s, 3, 0.01, 64, "adjoint", status=None, val=[0.4])           # killed: no summary
    make_job(s, 10, 0.01, 64, "direct", status="completed", val=[0.8, 0.85])  # sorted after 3, not after 1
    return s


def test_table_best_and_failures(sweep):
    r = report.report(sweep, plots=False)
    jobs = r["jobs"]
    assert [j.name for j in jobs] == ["0", "1", "2", "3", "10"]
    assert r["best"].name == "1" and r["metric"] == "val/acc"
    assert report.axes_of(r["best"], jobs) == "optim.lr=0.1 dataset.batch_size=64 grad=adjoint"
    assert jobs[3].status == report.NO_SUMMARY and not jobs[3].completed

    rows = list(csv.DictReader((r["out"] / "report.csv").open()))
    assert [row["job"] for row in rows] == ["0", "1", "2", "3", "10"]
    # constant overrides (trainer.max_epochs) are not table columns, the axes are
    assert list(rows[0])[:4] == ["job", "optim.lr", "dataset.batch_size", "grad"]
    assert rows[1]["val/acc"] == "0.9000" and rows[1]["wall_clock_s"] == "3.0" and rows[1]["nfe/forward"] == "30.0"
    assert rows[2]["status"].startswith("failed: train/loss became nan") and rows[2]["val/acc"] == ""
    assert "trainer.max_epochs=2" in rows[0]["overrides"]

    md = (r["out"] / "report.md").read_text()
    assert "5 jobs, 3 completed, 2 failed or unfinished." in md
    assert "job 1: `optim.lr=0.1 dataset.batch_size=64 grad=adjoint`" in md
    assert "- job 2 (`" in md and "- job 3 (`" in md
    assert md.count("\n| ") == 1 + 5          # header + one row per job


def test_minimize_and_other_metric(sweep):
    jobs = report.collect(sweep)
    assert report.best(jobs, "train/loss", maximize=False).name in {"0", "1", "10"}
    assert report.best(jobs, "val/acc", maximize=False).name == "0"
    assert report.best(jobs, "no/such") is None


def test_plots(sweep, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    cells = {}
    real = report.plot_heatmap

    def spy(jobs, metric, maximize, path):
        import matplotlib.axes
        orig = matplotlib.axes.Axes.text

        def text(self, x, y, s, *a, **k):
            cells[(y, x)] = s
            return orig(self, x, y, s, *a, **k)
        monkeypatch.setattr(matplotlib.axes.Axes, "text", text)
        return real(jobs, metric, maximize, path)

    monkeypatch.setattr(report, "plot_heatmap", spy)
    r = report.report(sweep)
    assert r["files"] == ["report.md", "report.csv", "heatmap.png", "loss_vs_time.png", "nfe.png"]
    # rows: lr ascending (0.01, 0.1); columns: batch size (32, 64); the best job in a shared cell
    assert cells == {(0, 0): "failed", (0, 1): "0.850", (1, 0): "0.700", (1, 1): "0.900"}
    # the sweep varies the gradient method: the loss curves are coloured by it
    assert report._series_label(r["jobs"])["1"] == "grad=adjoint"
    assert "![heatmap.png](heatmap.png)" in (r["out"] / "report.md").read_text()


def test_cli_errors(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no sweep jobs" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2
