"""odex-report on hand-made sweep folders (no training; the files are what a job writes: Hydra's
.hydra/*.yaml, metrics.jsonl, summary.json): replicates aggregated against a hand computation,
selection on validation data only, failed / torn / unreadable jobs listed, labels, plots."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

import odex.sweep.report as report
import odex.sweep.report_plots as report_plots


def make_job(sweep: Path, num: int, overrides: dict, *, status: str | None = "completed",
             finals: dict | None = None, epochs: int = 2, span: tuple[float, float] | None = None,
             choices: dict | None = None, nfe_backward: float = 0.0, config: dict | None = None) -> Path:
    """A job folder as odex-train leaves it. `finals`: the last epoch's metrics (earlier epochs get
    values scaled down); `span`: the run's (start, end) Unix times."""
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    nested: dict = {}
    for k, v in overrides.items():
        if "." in k:
            group, key = k.split(".", 1)
            nested.setdefault(group, {})[key] = v
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or nested))
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": choices or {"grad": "direct", "model": "augmented"}}}}))
    finals = dict(finals or {})
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, **{k: v * e / epochs for k, v in finals.items()},
               "nfe/forward": 20.0 + num, "nfe/backward": nfe_backward, "time/epoch_s": 1.0 + 0.1 * num,
               "time/total_s": (1.0 + 0.1 * num) * e}
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status is not None:
        summary = {**(rows[-1] if rows else {}), "status": status}
        if span:
            summary["time/start_unix"], summary["time/end_unix"] = span
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


# config A has the luckiest single seed (0.889) but config B the better mean: the example
A_VAL, B_VAL = (0.750, 0.889, 0.771), (0.850, 0.860, 0.840)


@pytest.fixture
def replicated(tmp_path):
    """2 configurations (lr 0.1, 0.01) x 3 seeds, each with val/acc, test/acc, train/loss."""
    s = tmp_path / "sweep"
    num = 0
    for lr, vals in ((0.1, A_VAL), (0.01, B_VAL)):
        for seed, v in enumerate(vals):
            make_job(s, num, {"optim.lr": lr, "trainer.seed": seed, "trainer.max_epochs": 2},
                     finals={"val/acc": v, "test/acc": v - 0.01 * seed, "train/loss": 1.0 - v},
                     span=(1000.0 + 100 * num, 1050.0 + 100 * num))       # one after another
            num += 1
    return s


def test_replicates_aggregate_to_mean_std_n(replicated):
    r = report.report(replicated, plots=False)
    rows = list(csv.DictReader((r["out"] / "report.csv").open()))
    assert len(rows) == 2 and [row["optim.lr"] for row in rows] == ["0.1", "0.01"]
    dirs = sorted((p for p in replicated.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for row, jobs in zip(rows, (dirs[:3], dirs[3:])):
        assert row["completed"] == "3" and row["failed"] == "0" and row["job_folders"] == " ".join(d.name for d in jobs)
        for m in ("val/acc", "test/acc", "train/loss"):
            values = [summary(d)[m] for d in jobs]
            assert row[f"{m} n"] == "3"
            assert float(row[f"{m} mean"]) == pytest.approx(sum(values) / 3, abs=1e-12)
            mean = sum(values) / 3
            hand_std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5       # sample std, n - 1
            assert float(row[f"{m} std"]) == pytest.approx(hand_std, abs=1e-12)
    # the best configuration is the better mean, not the lucky seed's
    assert r["best"].label == "optim.lr=0.01" and r["metric"] == "val/acc"
    md = (r["out"] / "report.md").read_text()
    assert ("Best configuration, selected on validation data: `optim.lr=0.01` with max mean val/acc = "
            f"{statistics.fmean(B_VAL):.4g}") in md
    assert "n=3" in md and "Warning" not in md


def test_another_replicate_key(replicated):
    """--replicate optim.lr: the seeds become configurations, the learning rates their replicates."""
    configs = report.configurations(report.collect(replicated), replicate="optim.lr")
    assert [c.label for c in configs] == ["trainer.seed=0", "trainer.seed=1", "trainer.seed=2"]
    assert configs[1].stats("val/acc")[0] == pytest.approx((A_VAL[1] + B_VAL[1]) / 2)
    assert configs[1].stats("val/acc")[2] == 2


def test_no_validation_split_names_no_best(tmp_path, capsys):
    s = tmp_path / "sweep"
    for i, (lr, acc) in enumerate(((0.1, 0.8), (0.01, 0.9))):
        make_job(s, i, {"optim.lr": lr}, finals={"test/acc": acc, "train/loss": 1 - acc})
    assert report.main([str(s), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("odex-report: warning: NO VALIDATION SPLIT")
    assert "Best configuration: none named" in out
    md = (s / "report" / "report.md").read_text().splitlines()
    assert md[2].startswith("**Warning:** NO VALIDATION SPLIT")       # right under the title
    assert not any("selected on" in line for line in md)

    assert report.main([str(s), "--no-plots", "--metric", "test/acc"]) == 0
    out = capsys.readouterr().out
    assert "Best configuration, SELECTED ON TEST DATA (--metric test/acc)" in out and "optim.lr=0.01" in out
    md = (s / "report" / "report.md").read_text()
    assert "**Warning:** The best configuration is SELECTED ON TEST DATA" in md
    assert "selected on validation data" not in md


def test_failed_torn_unreadable_and_bad_value_jobs_are_listed(tmp_path, capsys):
    """An lr x batch-size sweep with seeds where one value is `abc` (every job of it failed), a
    job with a torn last line in metrics.jsonl (killed: no summary) and one with a damaged
    summary.json: the report, plots included, is written and lists every one of them; the means
    hold only the completed jobs."""
    s = tmp_path / "sweep"
    num = 0
    for lr in ("0.01", "0.001", "abc"):
        for bs in (32, 64):
            for seed in (0, 1):
                if lr == "abc":
                    make_job(s, num, {"optim.lr": lr, "dataset.batch_size": bs, "trainer.seed": seed},
                             status="failed: TypeError: '<' not supported between 'float' and 'str'", epochs=0)
                else:
                    make_job(s, num, {"optim.lr": lr, "dataset.batch_size": bs, "trainer.seed": seed},
                             finals={"val/acc": 0.5 + 0.1 * seed + float(lr) * 10, "train/loss": 1.0})
                num += 1
    torn = s / "1"                    # lr 0.01, bs 32, seed 1: killed while writing its second row
    (torn / "summary.json").unlink()
    text = (torn / "metrics.jsonl").read_text()
    (torn / "metrics.jsonl").write_text(text[:-20])
    (s / "6" / "summary.json").write_text('{"status": "compl')       # lr 0.001, bs 64, seed 0

    assert report.main([str(s)]) == 0
    out = capsys.readouterr().out
    assert "12 jobs: 6 completed, 0 diverged, 0 pruned, 6 failed, in 6 configurations" in out
    assert "job 1: unfinished: no summary.json" in out and "metrics.jsonl last line is torn" in out
    assert "job 6: unreadable: summary.json:" in out
    r = report.report(s)
    assert {"heatmap.png", "curves.png", "nfe.png", "epoch_time.png"} <= set(r["files"])
    md = (r["out"] / "report.md").read_text()
    for j in ("1", "6", "8", "9", "10", "11"):
        assert f"- job {j} (`" in md
    assert [len(j.rows) for j in r["jobs"] if j.name == "1"] == [1]       # the row before the tear counts
    by_label = {c.label: c for c in r["configs"]}
    cell = by_label["optim.lr=0.01 dataset.batch_size=32"]
    assert cell.stats("val/acc") == (pytest.approx(0.6), None, 1)        # seed 0 only: seed 1 did not finish
    assert by_label["optim.lr=abc dataset.batch_size=64"].stats("val/acc")[2] == 0
    assert r["best"].label == "optim.lr=0.01 dataset.batch_size=64"


def test_labels_name_every_swept_key_but_the_replicate(tmp_path):
    s = tmp_path / "sweep"
    num = 0
    for grad in ("direct", "adjoint"):
        for solver in ("dopri5", "bosh3"):
            for seed in (0, 1):
                make_job(s, num, {"grad": grad, "solver": solver, "trainer.seed": seed},
                         finals={"val/acc": 0.5}, choices={"grad": grad, "solver": solver},
                         nfe_backward=0.0 if grad == "direct" else 30.0)
                num += 1
    configs = report.configurations(report.collect(s))
    assert [c.label for c in configs] == ["grad=direct solver=dopri5", "grad=direct solver=bosh3",
                                          "grad=adjoint solver=dopri5", "grad=adjoint solver=bosh3"]
    # the backward-NFE panel is decided from the data: only the adjoint configurations have one
    r = report.report(s)
    assert any("backward panel shows the 2 of 4 configurations" in n for n in r["notes"])
    # no heat map without lr and batch size swept; PNG and PDF of each plot
    assert "heatmap.png" not in r["files"] and {"nfe.png", "nfe.pdf", "curves.pdf"} <= set(r["files"])


def test_values_rounded_and_styles_distinct_past_ten(tmp_path):
    assert report.short("0.004430375245218269") == "0.00443" and report.short("128") == "128"
    assert report.short("abc") == "abc" and report.short("1e-3") == "0.001"
    pairs = [(s["color"], s["marker"]) for s in report_plots.styles(60)]
    assert len(set(pairs)) == 60
    # Optuna-like trials: every lr its own configuration, labelled with 3 significant figures
    s = tmp_path / "sweep"
    for i, lr in enumerate((0.004430375245218269, 0.0123456789)):
        make_job(s, i, {"optim.lr": lr}, finals={"val/acc": 0.5})
    assert [c.label for c in report.configurations(report.collect(s))] == ["optim.lr=0.00443", "optim.lr=0.0123"]
    # two values equal to 3 figures keep their full spelling, so labels stay distinct
    s2 = tmp_path / "sweep2"
    for i, lr in enumerate((0.0044301, 0.0044302)):
        make_job(s2, i, {"optim.lr": lr}, finals={"val/acc": 0.5})
    assert [c.label for c in report.configurations(report.collect(s2))] == ["optim.lr=0.0044301", "optim.lr=0.0044302"]


def test_overlapping_jobs_are_marked(tmp_path):
    s = tmp_path / "sweep"
    make_job(s, 0, {"optim.lr": 0.1}, finals={"val/acc": 0.5}, span=(0.0, 100.0))
    make_job(s, 1, {"optim.lr": 0.01}, finals={"val/acc": 0.6}, span=(50.0, 150.0))    # beside job 0
    make_job(s, 2, {"optim.lr": 0.001}, finals={"val/acc": 0.7}, span=(150.5, 200.0))  # after both
    r = report.report(s)
    assert [j.shared_with for j in r["jobs"]] == [["1"], ["0"], []]
    assert any("2 of 3 jobs ran side by side" in w for w in r["warnings"])
    md = (r["out"] / "report.md").read_text()
    assert "| optim.lr=0.1 ‡ |" in md and "| optim.lr=0.001 |" in md


def test_heatmap_cells_show_mean_std_n(replicated, monkeypatch, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    s = tmp_path / "grid"
    num = 0
    for lr in (0.1, 0.01):
        for bs in (32, 64):
            for seed, v in enumerate((0.6, 0.7, 0.8)):
                make_job(s, num, {"optim.lr": lr, "dataset.batch_size": bs, "trainer.seed": seed},
                         finals={"val/acc": v + (0.1 if (lr, bs) == (0.01, 64) else 0)})
                num += 1
    texts = []
    import matplotlib.axes
    orig = matplotlib.axes.Axes.text

    def spy(self, x, y, s, *a, **k):
        texts.append((y, x, s))
        return orig(self, x, y, s, *a, **k)
    monkeypatch.setattr(matplotlib.axes.Axes, "text", spy)
    r = report.report(s)
    assert "heatmap.png" in r["files"]
    cells = {(y, x): t for y, x, t in texts if isinstance(x, int) and isinstance(y, int)}
    # rows: lr ascending (0.01, 0.1); columns: batch size (32, 64); mean, sample std, n
    assert cells[(0, 1)] == "0.800\n± 0.1, n=3" and cells[(1, 0)] == "0.700\n± 0.1, n=3"


def test_cli_errors(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no sweep jobs" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2


def test_an_attempt_moved_aside_is_not_a_second_job(tmp_path):
    """trainer.resume=never moves an earlier attempt into <job>/attempt-N/ (odex/resume.py): the
    report counts the job once, with its current files."""
    s = tmp_path / "sweep"
    job = make_job(s, 0, {"optim.lr": 0.1}, finals={"val/acc": 0.9})
    make_job(job / "attempt-1", 0, {"optim.lr": 0.1}, status="failed: NaN", finals={"val/acc": 0.1})
    make_job(s, 1, {"optim.lr": 0.01}, finals={"val/acc": 0.8})
    jobs = report.collect(s)
    assert sorted(Path(j.folder).name for j in jobs) == ["0", "1"]
    assert all(j.completed for j in jobs)
