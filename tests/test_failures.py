"""Bad input and failed training lose nothing: a clear status, the last good checkpoint kept."""
import torch

from conftest import TINY, read_metrics, read_summary, run_cli, train_in_process
from odex.objectives.classification import CrossEntropy, Step


class NaNFromEpoch(CrossEntropy):
    """Cross-entropy that turns NaN from a given epoch on (to fail a run on purpose)."""

    def __init__(self, epoch: int = 2, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.fail_from = epoch
        self.epoch = 0

    def on_epoch_start(self, epoch):
        self.epoch = epoch

    def __call__(self, model, x, y):
        step = super().__call__(model, x, y)
        if self.epoch >= self.fail_from:
            return Step(step.loss * float("nan"), step.logits)
        return step


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "trainer.max_epochs=3", "solver=rk4", "solver.steps=2",
                                          "objective._target_=test_failures.NaNFromEpoch",
                                          "+objective.epoch=2"])
    # run health (on by default) calls a non-finite loss a diverged run, noticed within the epoch
    assert summary["status"].startswith("diverged: train/loss became nan in epoch 2"), summary["status"]
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "error.log").is_file()


def test_diverging_solver_fails_clearly(tmp_path):
    # lr 1e4 wrecks the parameters in the first steps; dopri5 then gives up (step underflow or
    # too many steps) or the loss turns non-finite or far above its start: either way a diverged
    # status (run health), not a hang; with run health off, a failed one.
    summary = train_in_process(tmp_path, [*TINY, "optim.lr=1e4", "solver.max_num_steps=100"])
    assert summary["status"].startswith("diverged:"), summary["status"]
    off = train_in_process(tmp_path / "off", [*TINY, "optim.lr=1e4", "solver.max_num_steps=100",
                                              "trainer.health.enabled=false"])
    assert off["status"].startswith("failed:"), off["status"]
    assert "solver gave up" in off["status"] or "train/loss became" in off["status"]
    assert any(w in summary["status"] for w in ("solver gave up", "train/loss became", "over 100x its start"))


def test_failed_cli_run_exits_nonzero_with_one_line(tmp_path):
    """A bad value is a usage error (exit 2) found before Hydra makes the run folder."""
    p = run_cli(tmp_path, *TINY, "logger=none", "solver=rk4", "solver.step_size=-1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines() == ["odex: error: solver.step_size=-1: must be null or a number > 0"]
    assert not (tmp_path / "run").exists()


def test_invalid_value_in_a_sweep_does_not_stop_the_others(tmp_path):
    """Validated per job: the bad job is recorded as failed, the other runs, and the sweep's exit
    status says that a job failed (1, after the summary)."""
    p = run_cli(tmp_path, *TINY, "logger=none", "solver=rk4", "solver.step_size=0.25,-1", multirun=True)
    assert p.returncode == 1, p.stderr[-2000:]
    statuses = sorted(read_summary(tmp_path / "multirun" / str(i))["status"] for i in range(2))
    assert statuses == ["completed", "failed: solver.step_size=-1: must be null or a number > 0"]
    assert "odex: sweep finished: 2 jobs, 1 failed:" in p.stdout
