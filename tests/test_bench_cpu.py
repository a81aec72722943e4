"""`scripts/bench.py epochs` compares like with like: the plain torchdiffeq script's networks have the
parameters of odex's configs (same shapes, same order), its synthetic MNIST files are what odex's
mnist_t10k reader reads, and the plain script trains and reports. No timings are checked."""
from __future__ import annotations

import importlib
import json
import sys

import torch

from conftest import REPO, compose_cfg


def _load(name: str):
    """scripts/benchmarks/<name>.py, the module behind `scripts/bench.py <subcommand>`."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    return importlib.import_module(f"benchmarks.{name}")


def _odex_model(tmp_path, model: str, grad: str):
    from odex.build import build_run

    bench = _load("epochs")
    args = type("A", (), {"tol": 1e-3, "epochs": 1, "conv_train": 64, "conv_test": 32})()
    root = tmp_path / "mnist"
    if model == "conv":
        bench.synthetic_mnist(root, n=8100)        # mnist_t10k trains on the first 8,000
    built = build_run(compose_cfg(["logger=none", *bench.odex_overrides(model, grad, args, str(root))]),
                      training=False)
    return built.model, built.data


def test_plain_networks_have_odex_configs_parameters(tmp_path):
    plain = _load("plain")
    for model, make in [("conv", lambda info: plain.ConvNet(info.mean, info.std, 50, False, 1e-3)),
                        ("mlp", lambda info: plain.MLPNet(info.mean, info.std, 64, False, 1e-3))]:
        odex_net, data = _odex_model(tmp_path, model, "direct")
        ours = [p.shape for p in odex_net.parameters()]
        theirs = [p.shape for p in make(data.info).parameters()]
        assert ours == theirs, model
        if model == "conv":
            assert len(data.train) == 64 and data.info.shape == (1, 28, 28)


def test_plain_script_trains_and_reports(tmp_path):
    bench = _load("epochs")
    plain = _load("plain")
    args = type("A", (), {"tol": 1e-3, "epochs": 1, "conv_train": 64, "conv_test": 32})()
    data_file = tmp_path / "mlp.pt"
    bench.export_data("mlp", args, "", data_file)
    out = tmp_path / "r.json"
    torch.set_num_threads(1)
    result = plain.main(["--data", str(data_file), "--model", "mlp", "--grad", "adjoint", "--epochs", "1",
                         "--batch", "256", "--width", "64", "--warm-up", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert len(saved["epoch_s"]) == len(saved["epoch_cpu_s"]) == 1
    assert saved["nfe_forward"][0] > 0 and saved["nfe_backward"][0] > 0      # the adjoint's backward solve
    assert saved["test_n"] == 1000 and 0 <= saved["test_correct"] <= 1000
    assert saved["log1p_us_start"] > 0 and saved["log1p_us_after_warm_up"] > 0


def test_driver_runs_odex_with_and_without_the_mapping_to_the_same_result(tmp_path):
    """One round of the whole benchmark on the MLP case: plain, odex-train, and odex-train with its
    start-up mapping of the kernel constants switched off (the control). All three train the same
    model: the same train loss to the last bit and the same test predictions (the plain script
    starts from odex's initial weights and draws odex's batch order; the mapping changes no
    result), and the table reports each."""
    bench = _load("epochs")
    out = tmp_path / "b"
    result = bench.main(["--cases", "mlp-direct", "--rounds", "1", "--epochs", "1", "--odex-variants",
                         "trainer.compile=false", "--odex-unmapped", "--out", str(out)])
    rows = {r["path"]: r for r in result["rows"]}
    assert set(rows) == {"plain", "odex trainer.compile=false", "odex trainer.compile=false (constants not mapped)"}
    mapped, unmapped = rows["odex trainer.compile=false"], rows["odex trainer.compile=false (constants not mapped)"]
    assert mapped["test_correct"] == unmapped["test_correct"] and mapped["test_correct"][0] is not None
    assert mapped["nfe"] == unmapped["nfe"] == rows["plain"]["nfe"]
    losses = {path: r["train_loss"] for path, r in rows.items()}
    assert len(mapped["train_loss"]) == 1 and len(set(map(tuple, losses.values()))) == 1, losses
    assert rows["plain"]["test_correct"] == mapped["test_correct"]
    raw = result["raw"]["mlp-direct"]
    assert raw["odex trainer.compile=false"][0]["epoch_s"] and raw["plain"][0]["epoch_s"]
    assert "(constants not mapped)" in out.with_suffix(".md").read_text()
