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
from odex.sweep.jobs import short


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


# ---------------------------------------------------------------- the decision with its uncertainty

def grid3(tmp_path, vals: dict, statuses: dict | None = None, extra: dict | None = None) -> Path:
    """Configurations (one lr each) x seeds 0, 1, 2 with the given val/acc; `statuses`:
    {(lr, seed): status} for jobs that did not complete; `extra`: more summary fields for every job."""
    s = tmp_path / "sweep"
    num = 0
    for lr, accs in vals.items():
        for seed, v in enumerate(accs):
            d = make_job(s, num, {"trainer.max_epochs": 2, "optim.lr": lr, "trainer.seed": seed},
                         finals={"val/acc": v, "test/acc": v - 0.02, "train/loss": 1 - v})
            status = (statuses or {}).get((lr, seed))
            if status or extra:
                data = {**summary(d), **(extra or {})}
                data["status"] = status or "completed"
                (d / "summary.json").write_text(json.dumps(data))
            num += 1
    return s


def test_interval_and_tie_set_against_scipy(tmp_path):
    """95% t-interval per configuration, and the set not distinguishable from the best: paired
    t-test where both completed the same seeds, Welch's where one lost a seed; checked against
    scipy.stats computed from the raw values here."""
    from scipy import stats

    vals = {"0.1": (0.90, 0.93, 0.95), "0.01": (0.89, 0.90, 0.935), "0.001": (0.70, 0.72, 0.71),
            "0.0001": (0.88, 0.91, 0.99)}
    s = grid3(tmp_path, vals, {("0.0001", 2): "diverged: loss 1e+10 above 1000x its first epoch's"})
    r = report.report(s, plots=False, wandb=False)
    sel = r["selection"]
    by = {c.label: c for c in r["configs"]}
    assert sel.best.label == "optim.lr=0.1"
    for lr, v in vals.items():
        got = by[f"optim.lr={short(lr)}"].interval("val/acc")
        v = v[:2] if lr == "0.0001" else v
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=statistics.fmean(v), scale=stats.sem(v))
        assert got == (pytest.approx(max(lo, 0)), pytest.approx(min(hi, 1)))
    rows = {row.config.label: row for row in sel.rows}
    paired = rows["optim.lr=0.01"]
    d = [a - b for a, b in zip(vals["0.1"], vals["0.01"])]
    t = statistics.fmean(d) / (statistics.stdev(d) / len(d) ** 0.5)
    assert paired.test == "paired t-test" and paired.p == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert paired.tied and paired.p >= 0.05
    far = rows["optim.lr=0.001"]
    assert far.test == "paired t-test" and far.p < 0.05 and not far.tied
    welch = rows["optim.lr=0.0001"]                     # lost seed 2: its seeds no longer pair with the best's
    assert welch.test == "Welch t-test"
    assert welch.p == pytest.approx(stats.ttest_ind(vals["0.1"], vals["0.0001"][:2], equal_var=False).pvalue)
    assert welch.missing == ["trainer.seed=2 (diverged)"]
    md = (r["out"] / "report.md").read_text()
    assert "Not distinguishable from the best (two-sided t-test at 0.05" in md
    assert "`optim.lr=0.01` (tied (p=" in md and "`optim.lr=0.001` (" not in md.split("Not distinguishable")[1].split("\n")[0]
    rows_csv = {row["configuration"]: row for row in csv.DictReader((r["out"] / "report.csv").open())}
    assert rows_csv["optim.lr=0.0001"]["diverged"] == "1" and rows_csv["optim.lr=0.0001"]["completed"] == "2"
    assert float(rows_csv["optim.lr=0.01"]["val/acc ci95_low"]) == pytest.approx(by["optim.lr=0.01"].interval("val/acc")[0])
    assert rows_csv["optim.lr=0.1"]["rank"] == "1" and rows_csv["optim.lr=0.001"]["rank"] == "4"


def test_kinds_counted_apart_and_survivors_not_named_best(tmp_path, capsys):
    """The issue's case: the best's worst seed fails and its survivors' mean rises above the
    runner-up's. It is ranked with its missing seed shown, not named best; diverged, pruned and
    failed jobs are counted apart and left out of every mean."""
    vals = {"0.01": (0.97, 0.96, 0.99), "0.001": (0.958, 0.958, 0.958), "0.1": (0.1, 0.1, 0.1)}
    s = grid3(tmp_path, vals, {("0.01", 0): "failed: RuntimeError: lost",
                               ("0.1", 0): "diverged: nfe/forward per batch 315 above 10x its early 14",
                               ("0.1", 1): "diverged: loss nan", ("0.1", 2): "pruned: val/acc 0.1 below the median 0.95 at epoch 1"})
    assert report.main([str(s), "--no-plots", "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert "9 jobs: 5 completed, 2 diverged, 1 pruned, 1 failed, in 3 configurations" in out
    assert "Best configuration, selected on validation data: optim.lr=0.001" in out
    assert "Not named best although their mean over the surviving replicates is better" in out
    assert "optim.lr=0.01 (missing trainer.seed=0 (failed))" in out
    assert ("rerun the best (selected on validation data): odex-train -m trainer.max_epochs=2 optim.lr=0.001 "
            "trainer.seed=0,1,2") in out and "held fixed in every job: trainer.max_epochs=2" in out
    md = (s / "report" / "report.md").read_text()
    assert "| 2/3 missing trainer.seed=0 (failed) |" in md
    assert "0/3 missing trainer.seed=0 (diverged), trainer.seed=1 (diverged), trainer.seed=2 (pruned) | 2 | 1 | 0 |" in md
    # the no-spread best (138/144 three times) against a spread: Welch, since seeds do not pair
    assert "Welch" in md


def test_exact_tie_is_reported(tmp_path):
    s = grid3(tmp_path, {"0.1": (0.9, 0.8, 0.85), "0.01": (0.8, 0.9, 0.85)})
    r = report.report(s, plots=False, wandb=False)
    tie = [w for w in r["warnings"] if w.startswith("TIE:")]
    assert len(tie) == 1 and "`optim.lr=0.1`, `optim.lr=0.01`" in tie[0] and "first in the sweep" in tie[0]
    assert [c.label for c in r["selection"].exact_ties] == ["optim.lr=0.1", "optim.lr=0.01"]


def test_usage_errors_exit_2_with_one_line_and_write_nothing(replicated, capsys):
    assert report.main([str(replicated), "--metric", "val/accc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("odex: error: --metric=val/accc: no job recorded it (did you mean val/acc?); metrics: ")
    assert "test/acc" in err and "train/loss" in err
    assert report.main([str(replicated), "--replicate", "trainer.sed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odex: error: --replicate=trainer.sed: no job has this override (did you mean trainer.seed?)")
    assert err.count("\n") == 1
    assert not (replicated / "report").exists()


def test_every_label_names_the_data_that_chose(replicated, capsys):
    assert report.main([str(replicated), "--no-plots", "--no-wandb", "--metric", "train/loss", "--minimize"]) == 0
    out = capsys.readouterr().out
    assert "Best configuration, selected on training data: optim.lr=0.01 with min mean train/loss" in out
    md = (replicated / "report" / "report.md").read_text()
    assert "selected on validation data" not in md and "selected on training data" in md
    assert "## Configurations, ranked by mean train/loss (selected on training data)" in md
    assert "rerun the best (selected on training data)" in md


def test_epoch_best_reads_each_jobs_best_validation_epoch(replicated):
    """--epoch best: every value of a job from its epoch with the highest val/acc."""
    job = replicated / "0"
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    rows[0]["val/acc"], rows[0]["test/acc"] = 0.99, 0.5          # epoch 1 beats epoch 2 on validation
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    last = report.report(replicated, plots=False, wandb=False)
    best = report.report(replicated, plots=False, wandb=False, epoch="best")
    assert "best epoch on validation (val/acc, max)" in (best["out"] / "report.md").read_text()
    picked = {j.name: j.row["epoch"] for j in best["jobs"]}
    assert picked["0"] == 1 and all(e == 2 for n, e in picked.items() if n != "0")
    a_last = {c.label: c for c in last["configs"]}["optim.lr=0.1"].stats("test/acc")[0]
    a_best = {c.label: c for c in best["configs"]}["optim.lr=0.1"].stats("test/acc")[0]
    assert a_best == pytest.approx(a_last + (0.5 - summary(job)["test/acc"]) / 3)
    jobs = list(csv.DictReader((best["out"] / "jobs.csv").open()))
    assert [j["epoch_read"] for j in jobs][:2] == ["1", "2"]


def test_split_sizes_provenance_held_fixed_and_rerun_command(tmp_path):
    s = grid3(tmp_path, {"0.1": (0.9, 0.8, 0.85), "0.01": (0.7, 0.75, 0.8)},
              extra={"data/val_size": 144, "data/test_size": 360, "data/train_size": 1293,
                     "odex/version": "0.1.0", "odex/git_commit": "a" * 40, "odex/git_dirty": False})
    d = s / "5"                                          # one job ran other code
    (d / "summary.json").write_text(json.dumps({**summary(d), "odex/git_commit": "b" * 40}))
    r = report.report(s, plots=False, wandb=False)
    md = (r["out"] / "report.md").read_text()
    assert "Split sizes: validation 144, test 360, training 1293 examples" in md
    assert f"one example is {1 / 144:.2g} of val/acc" in md
    assert any("The jobs ran different code: 2 git commits (aaaaaaaaaaaa, bbbbbbbbbbbb)" in w for w in r["warnings"])
    assert "held fixed in every job: `trainer.max_epochs=2`" in md
    assert "odex-train -m trainer.max_epochs=2 optim.lr=0.1 trainer.seed=0,1,2" in md
    assert "Values read at each job's last epoch" in md


# ---------------------------------------------------------------- plots that cannot mislead

def test_bands_stay_in_range_and_diverged_cells_do_not_set_the_colour_scale(tmp_path, monkeypatch):
    """A min-max band never leaves the values' own range (a ±1 std band of 20, 20, 80 NFE reaches
    -1.6); the heat map's colour scale is the completed cells' range, not a diverged cell's; a
    search that is not a full grid is a scatter on log axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.axes

    s = tmp_path / "grid"
    num = 0
    for lr in (0.1, 0.01):
        for bs in (32, 64):
            for seed in range(3):
                d = make_job(s, num, {"optim.lr": lr, "dataset.batch_size": bs, "trainer.seed": seed},
                             finals={"val/acc": 0.9 + 0.01 * seed + (0.02 if bs == 64 else 0),
                                     "train/loss": (0.5 if bs == 32 else 0.6) if lr == 0.01 else 4345.0})
                if lr == 0.1 and seed == 0:
                    data = summary(d)
                    (d / "summary.json").write_text(json.dumps({**data, "status": "diverged: loss 4345"}))
                num += 1
    jobs = report.collect(s)
    configs = report.configurations(jobs)
    c = configs[2]                                        # lr 0.01, bs 32: three completed seeds
    for j, nfe in zip(c.jobs, (10, 10, 80)):               # NFE with a wide spread
        j.rows = [{**r, "nfe/forward": nfe} for r in j.rows]
    xs, mean, lo, hi = report_plots._curve(c, "nfe/forward", "epoch")
    assert statistics.fmean((10, 10, 80)) - statistics.stdev((10, 10, 80)) < 0      # what ±1 std would draw
    assert lo == [10, 10] and hi == [80, 80] and mean == [pytest.approx(100 / 3)] * 2
    d = configs[0]                                        # lr 0.1, bs 32: seed 0 diverged, not drawn
    assert len(report_plots._curve(d, "val/acc", "epoch")[0]) == 2 and len(d.completed) == 2
    norms = []
    orig = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda self, *a, **k: norms.append(k["norm"]) or orig(self, *a, **k))
    sel = report.select(configs, "train/loss", maximize=False, expected=["0", "1", "2"])
    report_plots.plot_heatmap(configs, "train/loss", False, tmp_path, sel.best)
    assert (norms[0].vmin, norms[0].vmax) == (pytest.approx(0.5), pytest.approx(0.6))     # not 4345
    # Optuna-like: 3 learning rates, each with its own batch size: a scatter on log axes
    o = tmp_path / "optuna"
    for i, (lr, bs) in enumerate(((0.0863, 32), (0.0778, 64), (0.00123, 128))):
        make_job(o, i, {"optim.lr": lr, "dataset.batch_size": bs}, finals={"val/acc": 0.5 + i / 10})
    scales = []
    orig_save = report_plots._save
    monkeypatch.setattr(report_plots, "_save", lambda fig, out, stem: scales.append(fig.axes[0].get_yscale()) or orig_save(fig, out, stem))
    norms.clear()
    report_plots.plot_heatmap(report.configurations(report.collect(o)), "val/acc", True, tmp_path)
    assert scales == ["log"] and norms == []


def test_wandb_run_states_and_tags(tmp_path):
    """A diverged run's W&B run says so: tags seed and status, summary state and reason; the
    group and id land in summary.json (odex-report joins that group)."""
    from odex.tracking.tracker import JsonlSink, Tracker, WandbSink
    from odex.tracking.wandb_offline import read_offline_run

    t = Tracker(tmp_path, [JsonlSink(), WandbSink(mode="offline", group="g1")])
    t.start({"trainer": {"seed": 3}}, {"tags": ["job0"]})
    t.log({"train/loss": 1e10}, 1)
    out = t.finish("diverged: loss 1e+10 above 1000x its first epoch's")
    run = read_offline_run(tmp_path / "wandb")
    assert {"job0", "seed:3", "status:diverged"} <= set(run["tags"])
    assert run["summary"]["state"] == "diverged" and run["summary"]["reason"].startswith("loss 1e+10")
    assert out["wandb/group"] == "g1" and out["wandb/id"] == run["id"] and summary(tmp_path)["wandb/group"] == "g1"


@pytest.mark.slow
def test_sweep_with_a_failing_value_is_whole_in_wandb(tmp_path):
    """optim.lr=1e-2,-1: the job refused by its own validation has a W&B run too, with its
    state; the group carries the sweep's id; odex-report's table and plots join the group as a
    run of its own; odex-sync --dry-run lists every run and names a job without one."""
    import subprocess
    import sys

    from conftest import REPO, TINY, run_cli
    from odex.tracking.wandb_offline import read_offline_run

    proc = run_cli(tmp_path, *TINY, "solver=euler", "dataset.val_fraction=0.2", "optim.lr=1e-2,-1", multirun=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    sweep = tmp_path / "multirun"
    runs = [read_offline_run(sweep / n / "wandb") for n in ("0", "1")]
    sweep_id = (sweep / ".odex_sweep_id").read_text().strip()
    assert {r["group"] for r in runs} == {f"{sweep.parent.name}_{sweep.name}_multirun_{sweep_id}"}
    assert [r["summary"]["state"] for r in runs] == ["completed", "failed"]
    assert runs[1]["summary"]["reason"] == "optim.lr=-1: must be a number >= 0"
    assert "status:failed" in runs[1]["tags"] and "seed:0" in runs[1]["tags"]
    r = report.report(sweep)
    report_run = read_offline_run(r["wandb_run"])
    assert report_run["group"] == runs[0]["group"] and report_run["job_type"] == "report"
    logged = report_run["history"][0]
    assert logged["configurations/_type"] == "table-file" and logged["plots/curves/_type"] == "image-file"
    table = json.loads((r["wandb_run"] / "files" / logged["configurations/path"]).read_text())
    assert [row[1] for row in table["data"]] == ["optim.lr=0.01", "optim.lr=-1"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "odex.tracking.sync", str(sweep), "--dry-run"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.count("  ") >= 3 and "without a W&B run" not in p.stdout, p.stdout
    import shutil
    shutil.rmtree(sweep / "1" / "wandb")
    p = subprocess.run([sys.executable, "-m", "odex.tracking.sync", str(sweep), "--dry-run"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert f"- {sweep / '1'} (status: failed: optim.lr=-1: must be a number >= 0)" in p.stdout, p.stdout
