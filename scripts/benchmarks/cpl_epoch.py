"""Time one training epoch of `experiment=cpl_cifar10` (the CPL recipe: margin loss, Adam, per-step
piecewise-linear lr, reflect-pad crop + flip, batch 256) on CIFAR-shaped random data, through the
real training loop (odex.training.trainer.Trainer.fit), so no dataset is needed.

    python scripts/bench.py cpl-epoch --device cuda --size S            # 50,000 images, 2 epochs
    python scripts/bench.py cpl-epoch --device cpu --size tiny --train 1024 --epochs 1

Prints a one-row table (and with --out writes it and its JSON): the mean of time/epoch_s over the epochs after the first (the first pays for
cuDNN autotuning and allocator warm-up; with --epochs 1 it is that one), images per second, peak
GPU memory and the parameter count. Extra Hydra overrides go after `--`.
"""
from __future__ import annotations

import argparse
import logging
import tempfile

import torch
from hydra import compose, initialize_config_dir

from benchmarks.common import command, metrics, report, table
from odex.config import build, config_dir
from odex.data.bundle import make_bundle
from odex.evaluate.evaluators import CleanAccuracy
from odex.optim.optimizers import build_optimizer, build_schedule
from odex.tracking.tracker import JsonlSink, Tracker
from odex.training.trainer import Trainer


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="scripts/bench.py cpl-epoch", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", default="S")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train", type=int, default=50_000, help="random training images")
    p.add_argument("--experiment", default="cpl_cifar10")
    p.add_argument("--out", default=None, help="writes <out>.md and <out>.json")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={args.experiment}", f"model.size={args.size}",
                                          f"trainer.max_epochs={args.epochs}", f"trainer.device={args.device}",
                                          "trainer.progress=false", "logger=none", *args.overrides])
    trainer: Trainer = build(cfg.trainer)
    torch.manual_seed(trainer.seed)
    g = torch.Generator().manual_seed(0)
    classes = 100 if "100" in args.experiment else 10
    x = torch.randint(0, 256, (args.train, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (args.train,), generator=g)
    data = make_bundle("random_cifar", x, y, x[:256], y[:256], classes, batch_size=cfg.dataset.batch_size,
                       eval_batch_size=256, augment=dict(cfg.dataset.augment))
    model = build(cfg.model, info=data.info, solver=build(cfg.solver), grad=build(cfg.grad)).to(trainer.device)
    data = data.to(trainer.device)
    optimizer = build_optimizer(cfg.optim, model)
    steps = -(-len(data.train) // data.batch_size)
    schedule = build_schedule(cfg.schedule, optimizer, steps_per_epoch=steps, max_epochs=trainer.max_epochs)
    with tempfile.TemporaryDirectory() as run_dir:
        tracker = Tracker(run_dir, [JsonlSink()])
        tracker.start({}, {})
        trainer.fit(model=model, data=data, objective=build(cfg.objective), optimizer=optimizer,
                    schedule=schedule, evaluators={"clean": CleanAccuracy()}, tracker=tracker,
                    run_dir=run_dir, generator=torch.Generator(device=trainer.device).manual_seed(0))
        rows = metrics(run_dir)
    timed = rows[1:] or rows
    epoch_s = sum(r["time/epoch_s"] for r in timed) / len(timed)
    result = {
        "experiment": args.experiment, "size": args.size, "device": str(trainer.device),
        "gpu": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else None,
        "train_images": args.train, "batch_size": data.batch_size, "epochs_timed": len(timed),
        "epoch_s": round(epoch_s, 3), "images_per_s": round(args.train / epoch_s, 1),
        "peak_mem_mb": rows[-1].get("mem/peak_mb"), "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }
    report(command("cpl-epoch", argv),
           table(list(result), [[str(v) for v in result.values()]]), args.out, result)
    return result
