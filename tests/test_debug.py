"""The debug group on digits: each choice runs and writes or checks what it promises."""
from __future__ import annotations

import json
import re

import torch
from conftest import compose_cfg, read_metrics, train_in_process

SMALL = ["model.channels=8", "model.hidden=16", "solver=euler", "trainer.progress=false"]


def test_fast_is_one_epoch_on_a_few_batches_without_a_logger(tmp_path):
    assert compose_cfg([]).logger._target_ == "odex.tracking.tracker.WandbSink"
    cfg = compose_cfg(["debug=fast"])
    assert cfg.logger._target_ == "odex.tracking.tracker.NullSink"
    assert cfg.trainer.max_epochs == 1 and cfg.dataset.limit_train == 256 and cfg.dataset.limit_test == 256
    s = train_in_process(tmp_path, ["debug=fast", *SMALL])
    assert s["status"] == "completed" and s["epochs"] == 1
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    assert not (tmp_path / "wandb").exists()


def test_overfit_learns_one_batch(tmp_path):
    cfg = compose_cfg(["debug=overfit", "dataset.batch_size=32"])
    assert cfg.dataset.limit_train == 32 and cfg.trainer.max_epochs == 30
    s = train_in_process(tmp_path / "ok", ["debug=overfit", "dataset.batch_size=32", *SMALL, "optim.lr=0.01"])
    assert s["status"] == "completed", s["status"]
    losses = [r["train/loss"] for r in read_metrics(tmp_path / "ok")]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]


def test_overfit_fails_when_the_loss_does_not_fall(tmp_path):
    s = train_in_process(tmp_path, ["debug=overfit", "dataset.batch_size=32", *SMALL, "optim.lr=0",
                                    "trainer.max_epochs=3"])
    assert s["status"].startswith("failed: debug=overfit: the training loss on one batch did not fall"), s


def test_anomaly_names_the_first_non_finite_tensor(tmp_path):
    s = train_in_process(tmp_path / "ok", ["debug=anomaly", *SMALL, "dataset.limit_train=64",
                                           "dataset.limit_test=64", "trainer.max_epochs=1"])
    assert s["status"] == "completed"
    assert not torch.is_anomaly_enabled()
    bad = train_in_process(tmp_path / "bad", ["debug=anomaly", *SMALL, "dataset.limit_train=256",
                                              "dataset.limit_test=64", "trainer.max_epochs=1", "optim.lr=1e6"])
    assert not torch.is_anomaly_enabled()
    assert bad["status"].startswith("failed: debug=anomaly: "), bad["status"]
    # e.g. "the output of ode.field.field.conv2 (Conv2d) is not finite in epoch 1 (0 nan and 65514 inf ..."
    assert re.search(r"the (output of \S+ \(\w+\)|loss|gradient of \S+|parameter \S+) .*is not finite in "
                     r"epoch 1 \(\d+ nan and \d+ inf of \d+ values", bad["status"]), bad["status"]


def test_profile_writes_a_chrome_trace_and_the_top_operators(tmp_path):
    s = train_in_process(tmp_path, ["debug=profile", *SMALL, "dataset.limit_train=512", "dataset.limit_test=64"])
    assert s["status"] == "completed"
    trace = json.loads((tmp_path / "profile" / "trace.json").read_text())
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any(n.startswith("aten::") for n in names)
    table = (tmp_path / "profile" / "top_ops.txt").read_text()
    assert table.startswith("5 training steps, sorted by self_cpu_time_total")
    assert "Self CPU" in table and "aten::" in table
