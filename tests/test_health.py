"""Run health (odex/training/health.py) and pruning across a sweep (odex/sweep/pruning.py)."""
import json

import pytest
import torch

from conftest import TINY, compose_cfg, read_metrics, read_summary, run_cli, train_in_process
from odex.config import validate
from odex.errors import ConfigError, Pruned
from odex.objectives.classification import CrossEntropy, Step
from odex.sweep.pruning import MedianPruning, configuration


class BlowsUpInEpoch2(CrossEntropy):
    """Cross-entropy scaled by 1e5 from the third batch of epoch 2 on: the gradient steps that
    follow wreck the weights, as a too-large learning rate does."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.epoch, self.batch = 0, 0

    def on_epoch_start(self, epoch):
        self.epoch, self.batch = epoch, 0

    def __call__(self, model, x, y):
        step = super().__call__(model, x, y)
        self.batch += 1
        if self.epoch >= 2 and self.batch >= 3:
            return Step(step.loss * 1e5, step.logits)
        return step


SMALL_BATCHES = [*TINY, "dataset.batch_size=16", "solver=rk4", "solver.steps=2"]     # 16 batches per epoch


def test_health_stops_a_diverging_run_within_the_epoch_and_keeps_its_curve(tmp_path):
    summary = train_in_process(tmp_path, [*SMALL_BATCHES, "trainer.max_epochs=3",
                                          "objective._target_=test_health.BlowsUpInEpoch2"])
    # looked at every 2 batches (checks_per_epoch=8): the window of batches 3-4, not the epoch's end
    assert summary["status"].startswith("diverged: train/loss "), summary["status"]
    assert "in epoch 2 (batches 3-4 of 16) is over 100x its start" in summary["status"]
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["health"]["loss_ref"] > 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_health_leaves_a_healthy_run_untouched(tmp_path):
    """Same numbers with run health on (the default) and off: its reads change nothing."""
    on = train_in_process(tmp_path / "on", [*SMALL_BATCHES, "trainer.max_epochs=2"])
    off = train_in_process(tmp_path / "off", [*SMALL_BATCHES, "trainer.max_epochs=2", "trainer.health.enabled=false"])
    assert on["status"] == off["status"] == "completed"
    assert read_metrics(tmp_path / "on")[-1]["train/loss"] == read_metrics(tmp_path / "off")[-1]["train/loss"]
    assert on["test/acc"] == off["test/acc"]


def test_a_diverged_cli_run_says_why_in_one_line(tmp_path):
    p = run_cli(tmp_path, *TINY, "logger=none", "optim.lr=1e4", "solver.max_num_steps=100")
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("odex: ")]
    assert len(lines) == 1 and lines[0].startswith("odex: diverged: "), p.stderr[-2000:]
    assert read_summary(tmp_path / "run")["status"] == lines[0][len("odex: "):]


@pytest.mark.parametrize("override, message", [
    ("trainer.health.loss_factor=0.5", "trainer.health.loss_factor=0.5: must be a number > 1"),
    ("trainer.health.epoch_budget_s=-3", "trainer.health.epoch_budget_s=-3: must be null or a number > 0"),
    ("trainer.health.enabled=maybe", "trainer.health.enabled=maybe: must be true or false"),
    ("callbacks.prune.min_configs=0", "callbacks.prune.min_configs=0: must be an integer >= 1"),
])
def test_bad_health_and_pruning_keys_are_refused(override, message):
    cfg = compose_cfg(["callbacks=[prune]", override])
    with pytest.raises(ConfigError) as e:
        validate(cfg, {})
    assert str(e.value) == message


def test_a_bad_health_key_is_one_line_on_the_command_line(tmp_path):
    p = run_cli(tmp_path, *TINY, "logger=none", "trainer.health.nfe_factor=1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines() == ["odex: error: trainer.health.nfe_factor=1: must be a number > 1"]
    assert not (tmp_path / "run").exists()


# -- pruning -------------------------------------------------------------------------------------

def _job(sweep, num, overrides, values, status=None):
    """A sibling job's folder as odex-train leaves it: Hydra's overrides, a metrics row per epoch,
    summary.json once it ended."""
    folder = sweep / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val/acc": v}) + "\n"
                                                  for e, v in enumerate(values, 1)))
    if status:
        (folder / "summary.json").write_text(json.dumps({"status": status}))
    return folder


def _pruner(sweep, own_overrides, **kw):
    """MedianPruning as on_fit_start leaves it inside job `own` of the multirun in `sweep`."""
    p = MedianPruning(**kw)
    own = sweep / "own"
    own.mkdir(parents=True)
    p.sweep_dir, p.run_dir, p.config = sweep, own.resolve(), configuration(own_overrides, "trainer.seed")
    return p


def test_pruning_stops_a_clearly_worse_configuration(tmp_path):
    for i, (lr, acc) in enumerate([("0.1", 0.90), ("0.01", 0.94), ("0.001", 0.92)]):
        for seed in (0, 1):
            _job(tmp_path, 2 * i + seed, [f"optim.lr={lr}", f"trainer.seed={seed}"], [acc + seed / 100, 0.97])
    # the median of the three configurations' means at epoch 1 is 0.925
    bad = _pruner(tmp_path, ["optim.lr=1e-5", "trainer.seed=0"])
    with pytest.raises(Pruned, match=r"val/acc 0\.3 at epoch 1 .* below the median 0\.925 of 3 other"):
        bad.on_epoch_saved(epoch=1, metrics={"val/acc": 0.3})
    good = _pruner(tmp_path / "b", ["optim.lr=1e-5", "trainer.seed=0"])
    good.sweep_dir = tmp_path
    good.on_epoch_saved(epoch=1, metrics={"val/acc": 0.93})       # above the median: goes on


def test_pruning_keeps_a_configuration_together_and_ignores_diverged_jobs(tmp_path):
    for i, acc in enumerate([0.90, 0.94, 0.92]):
        _job(tmp_path, i, [f"optim.lr={i}", "trainer.seed=0"], [acc])
    # seed 0 of this configuration went on past epoch 1: its other seeds are not pruned there
    _job(tmp_path, 3, ["optim.lr=1e-5", "trainer.seed=0"], [0.3, 0.5], status="completed")
    _pruner(tmp_path, ["optim.lr=1e-5", "trainer.seed=1"]).on_epoch_saved(epoch=1, metrics={"val/acc": 0.3})
    # without it, two healthy configurations and a diverged one are too few to judge by (min_configs=3)
    other = tmp_path / "other"
    for i, (acc, status) in enumerate([(0.9, None), (0.94, "completed"), (0.1, "diverged: loss")]):
        _job(other, i, [f"optim.lr={i}", "trainer.seed=0"], [acc, acc], status=status)
    _pruner(other, ["optim.lr=1e-5", "trainer.seed=0"]).on_epoch_saved(epoch=1, metrics={"val/acc": 0.3})


@pytest.mark.slow
def test_a_sweep_prunes_its_worst_configuration_and_still_exits_zero(tmp_path):
    p = run_cli(tmp_path, *TINY, "logger=none", "trainer.max_epochs=2", "dataset.val_fraction=0.25",
                "callbacks=[prune]", "optim.lr=1e-2,3e-3,1e-3,1e-6", multirun=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    statuses = [read_summary(tmp_path / "multirun" / str(i))["status"] for i in range(4)]
    assert statuses[:3] == ["completed"] * 3, statuses
    assert statuses[3].startswith("pruned: val/acc ") and "at epoch 1" in statuses[3], statuses[3]
    assert [r["epoch"] for r in read_metrics(tmp_path / "multirun" / "3")] == [1]      # its curve is kept
    assert "odex: sweep finished: 4 jobs, 0 failed, 1 pruned:" in p.stdout


class Identity(torch.nn.Module):
    def forward(self, t, y):
        return y


def _counted_model():
    from odex.ode.nfe import CountedField
    return torch.nn.Sequential(CountedField(Identity()))


def _batch(health, model, k, loss_sum, n_seen, evaluations):
    field = model[0]
    for _ in range(evaluations):            # what a solve of this batch would have cost
        field(torch.zeros(()), torch.zeros(1))
    health.after_batch(k, torch.tensor(loss_sum), n_seen, model)


def test_health_stops_on_nfe_far_above_the_early_level():
    """14 evaluations per batch at first, then 200: over 10x, noticed at the next look."""
    from odex.errors import Diverged
    from odex.training.health import RunHealth

    health, model = RunHealth(checks_per_epoch=4), _counted_model()
    health.start_epoch(1, 8, t0=0.0)
    _batch(health, model, 0, 2.3, 1, 14)       # the run's first batch: its early level
    _batch(health, model, 1, 4.5, 2, 130)      # batch 2 alone: 130 < 10 x 14, goes on
    _batch(health, model, 2, 6.8, 3, 200)      # no look due (every 2 batches)
    with pytest.raises(Diverged, match=r"forward NFE per batch 200\.0 in epoch 1 \(batches 3-4 of 8\) is over 10x "
                                       r"the run's early level \(14\.0\)"):
        _batch(health, model, 3, 9.0, 4, 200)


def test_health_stops_an_epoch_over_its_time_budget():
    import time

    from odex.errors import Diverged
    from odex.training.health import RunHealth

    health, model = RunHealth(epoch_budget_s=5.0), _counted_model()
    health.start_epoch(3, 100, t0=time.perf_counter() - 6.0)
    with pytest.raises(Diverged, match=r"epoch 3 ran over trainer.health.epoch_budget_s=5 \(6\.\d s after batch 1/100\)"):
        _batch(health, model, 0, 2.3, 1, 14)
    RunHealth(enabled=False).after_batch(0, torch.tensor(float("nan")), 1, model)     # off: never looks
