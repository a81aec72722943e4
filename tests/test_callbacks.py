"""callbacks=[swa,best_checkpoint]: stochastic weight averaging and the best-validation checkpoint
do what they say, in real (tiny) runs, and survive a stop and resume."""
from __future__ import annotations

import pytest
import torch

from conftest import TINY, compose_cfg, read_metrics, train_in_process
import odex.training.checkpoint as ckpt
from odex.build import build_run
from odex.data.batches import Batches
from odex.evaluate.evaluators import CleanAccuracy
from odex.training.signals import StopSignals
from odex.train import run


class LastWeights:
    """Records the model's parameters after the last optimizer step of each epoch."""
    seen: dict[int, list[torch.Tensor]] = {}

    def on_fit_start(self, model, **_):
        LastWeights.seen = {}
        self.model = model

    def on_step_end(self, epoch, step):
        LastWeights.seen[epoch] = [p.detach().clone() for p in self.model.parameters()]


# LyaNet with the small encoder (it has batch norm), trained by lyanet_mc, evaluated through rk4
LYANET = [*TINY, "model=lyanet", "model.encoder=small", "objective=lyanet_mc", "objective.samples=8",
          "optim=nero", "solver=rk4", "solver.steps=2"]
SWA = [*LYANET, "trainer.max_epochs=3", "callbacks=[swa]", "callbacks.swa.after_epoch=1",
       "callbacks.swa.anneal_epochs=2", "callbacks.swa.anneal_strategy=linear", "schedule=step", "schedule.scheduler.step_size=1",
       "schedule.scheduler.gamma=0.5"]


def model_and_data(overrides, run_dir):
    built = build_run(compose_cfg(["logger=none", *overrides]), training=False)
    model, data = built.model, built.data
    model.load_state_dict(ckpt.load(run_dir / "checkpoints" / "last.pt")["model"])
    return model.eval(), data


def test_swa_averages_the_last_epochs_and_owns_the_learning_rate(tmp_path):
    summary = train_in_process(tmp_path, [*SWA, "+callbacks.record._target_=test_callbacks.LastWeights"])
    assert summary["status"] == "completed", summary["status"]
    rows = read_metrics(tmp_path)
    # epoch 1 at the base rate 0.01, epoch 2 at the step schedule's 0.005; then SWALR takes over
    # and anneals linearly over 2 epochs to 0.1 x base: halfway, 0.003 for epoch 3 (0.00175 had the
    # schedule gone on halving the rate under it)
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.005, 0.003])
    assert [r.get("swa/models") for r in rows] == [None, 1, 2]

    model, data = model_and_data(SWA, tmp_path)
    seen = LastWeights.seen
    for p, a, b in zip(model.parameters(), seen[2], seen[3]):
        torch.testing.assert_close(p.detach(), (a + b) / 2)
    assert not all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), seen[3]))

    # batch-norm statistics recomputed for the averaged weights: the mean of the first conv's
    # output over the training set (4 equal batches, averaged)
    x = data.train.x.float() / 255 if data.train.x.dtype == torch.uint8 else data.train.x
    with torch.no_grad():
        first = model.encoder[0](model.normalize(x))
    torch.testing.assert_close(model.encoder[1].running_mean, first.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)

    # the final evaluation was of the averaged model
    test = CleanAccuracy()(model, Batches(data.test, data.eval_batch_size), "test")
    assert test["test/acc"].item() == pytest.approx(rows[-1]["test/acc"])


BEST = [*TINY, "solver=rk4", "solver.steps=2", "trainer.max_epochs=3", "dataset.val_fraction=0.25",
        "callbacks=[best_checkpoint]", "optim.lr=3e-3"]


def test_best_checkpoint_keeps_the_best_validation_epoch(tmp_path):
    summary = train_in_process(tmp_path, BEST)
    assert summary["status"] == "completed", summary["status"]
    rows = read_metrics(tmp_path)
    val = [r["val/acc"] for r in rows]
    best_epoch = val.index(max(val)) + 1
    saved = ckpt.load(tmp_path / "checkpoints" / "best.pt")
    assert saved["epoch"] == best_epoch and saved["value"] == max(val)
    assert rows[-1]["best/epoch"] == best_epoch and rows[-1]["best/val/acc"] == max(val)
    assert rows[-1]["best/test/acc"] == rows[best_epoch - 1]["test/acc"]
    for k, r in enumerate(rows, 1):       # a running best
        assert r["best/val/acc"] == max(val[:k])
    # the weights are that epoch's: they give its validation accuracy again
    built = build_run(compose_cfg(["logger=none", *BEST]), training=False)
    model, data = built.model, built.data
    model.load_state_dict(saved["model"])
    again = CleanAccuracy()(model, Batches(data.val, data.eval_batch_size), "val")
    assert again["val/acc"].item() == pytest.approx(max(val))


def test_best_checkpoint_without_a_validation_split_fails_clearly(tmp_path):
    summary = train_in_process(tmp_path, [*TINY, "solver=rk4", "solver.steps=2", "callbacks=[best_checkpoint]"])
    assert summary["status"].startswith("failed: callbacks.best_checkpoint.monitor=val/acc")
    assert "dataset.val_fraction" in summary["status"]


def test_swa_and_best_checkpoint_resume_to_the_uninterrupted_run(tmp_path):
    # stopped in the third of four epochs: the fourth's learning rate depends on SWALR's state
    overrides = [*SWA, "callbacks=[swa,best_checkpoint]", "dataset.val_fraction=0.25", "trainer.max_epochs=4"]

    def train(run_dir, extra=(), stop=None):
        return run(compose_cfg(["logger=none", *overrides, *extra]), run_dir, stop=stop)

    assert train(tmp_path / "reference")["status"] == "completed"
    stop_in_swa = ["+callbacks.stop._target_=stop_helpers.SignalAt", "+callbacks.stop.epoch=3",
                   "+callbacks.stop.step=2", f"+callbacks.stop.marker={tmp_path / 'sent'}"]
    with StopSignals() as stop:
        first = train(tmp_path / "run", stop_in_swa, stop)
    assert first["status"].startswith("failed: preempted")
    with StopSignals() as stop:
        assert train(tmp_path / "run", stop_in_swa, stop)["status"] == "completed"
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "run")) == strip(read_metrics(tmp_path / "reference"))
    for name in ("last.pt", "best.pt"):
        a = ckpt.load(tmp_path / "run" / "checkpoints" / name)["model"]
        b = ckpt.load(tmp_path / "reference" / "checkpoints" / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
