"""The baseline of `scripts/bench.py epochs`: a plain torchdiffeq training script, as a careful
user writes it without odex (torch, torchdiffeq and the tool's reference block only).

    python scripts/bench.py plain --data DATA.pt --model conv --grad direct --epochs 3 --out R.json

- conv: the GQ paper's MNIST network (odex's model=gq_image), drift 10 -> w -> w -> 10 3x3 convs;
- mlp: odex's model=augmented on dataset=spheres (augment 3, 5-64-64-5 softplus, autonomous).
The ODE block is common.PlainODEBlock (odeint / odeint_adjoint, dopri5, rtol = atol = --tol on
[0, 1]); Adam lr 1e-3; batches sliced from in-memory tensors by one randperm per epoch, drawn from a
generator seeded as odex-train's (a DataLoader would collate every sample: not what a careful user
writes for data in memory); data and initial weights from the file `epochs` exports. Writes JSON:
seconds (wall and CPU) per epoch, test accuracy, NFE per batch, the float32 log1p state at start
and end (--warm-up first runs the one-line fix, a float32 pow).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import PlainODEBlock, log1p_us, minor_faults


class ConvDrift(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(10, width, 3, padding=1), nn.Softplus(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.Softplus(),
                                 nn.Conv2d(width, 10, 3, padding=1))

    def forward(self, t, h):
        return self.net(h)


class MLPDrift(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, dim)

    def forward(self, t, h):
        return self.fc3(F.softplus(self.fc2(F.softplus(self.fc1(h)))))


class ConvNet(nn.Module):
    def __init__(self, mean, std, width, adjoint, tol, classes=10):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.encoder = nn.Sequential(nn.BatchNorm2d(1), nn.ReLU(), nn.Conv2d(1, 10, 3), nn.MaxPool2d(2),
                                     nn.ReLU(), nn.Conv2d(10, 10, 3))
        self.ode = PlainODEBlock(ConvDrift(width), rtol=tol, atol=tol, adjoint=adjoint)
        self.readout = nn.Sequential(nn.Linear(1210, 50), nn.ReLU(), nn.Linear(50, classes))

    def forward(self, x):
        return self.readout(self.ode(self.encoder((x - self.mean) / self.std)).flatten(1))


class MLPNet(nn.Module):
    def __init__(self, mean, std, hidden, adjoint, tol, dim=2, augment=3, classes=2):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1))
        self.register_buffer("std", torch.tensor(std).view(1, -1))
        self.augment = augment
        self.ode = PlainODEBlock(MLPDrift(dim + augment, hidden), rtol=tol, atol=tol, adjoint=adjoint)
        self.readout = nn.Linear(dim + augment, classes)

    def forward(self, x):
        h = (x - self.mean) / self.std
        h = torch.cat([h, h.new_zeros(h.shape[0], self.augment)], 1)
        return self.readout(self.ode(h))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="scripts/bench.py plain", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", choices=["conv", "mlp"], required=True)
    p.add_argument("--grad", choices=["direct", "adjoint"], required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=50, help="conv drift width / MLP hidden width")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warm-up", action="store_true", help="a float32 pow first (the reported one-line fix of the slow log1p state)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    t_process = time.perf_counter()
    torch.set_num_threads(1)
    state = {"log1p_us_start": log1p_us()}
    if args.warm_up:
        torch.pow(torch.linspace(0.5, 1.5, 256, dtype=torch.float32), 0.2)
        state["log1p_us_after_warm_up"] = log1p_us()

    torch.manual_seed(args.seed)
    d = torch.load(args.data)
    to_float = (lambda x: x.float() / 255) if d["x_train"].dtype == torch.uint8 else (lambda x: x.float())
    x_train, y_train, x_test, y_test = to_float(d["x_train"]), d["y_train"], to_float(d["x_test"]), d["y_test"]
    adjoint = args.grad == "adjoint"
    model = (ConvNet(d["mean"], d["std"], args.width, adjoint, args.tol) if args.model == "conv"
             else MLPNet(d["mean"], d["std"], args.width, adjoint, args.tol, dim=x_train.shape[1],
                         classes=int(d["num_classes"])))
    if "init" in d:      # odex's initial weights, parameter by parameter (the same shapes and order)
        with torch.no_grad():
            for p, w in zip(model.parameters(), d["init"], strict=True):
                if p.shape != w.shape:
                    raise SystemExit(f"{args.data}: its initial weights are for another network "
                                     f"({tuple(w.shape)} against {tuple(p.shape)}): check --model and --width")
                p.copy_(w)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # each epoch's batch order drawn as odex-train draws it: one randperm per epoch from a generator
    # seeded with the seed (odex/data/batches.py), so the same seed gives the same batches
    batch_order = torch.Generator().manual_seed(args.seed)
    epochs, epochs_cpu, faults, nfe_f, nfe_b, train_loss = [], [], [], [], [], []
    n = len(x_train)
    for _ in range(args.epochs):
        model.train()
        model.ode.field.reset()
        t0, c0, f0 = time.perf_counter(), time.process_time(), minor_faults()
        perm = torch.randperm(n, generator=batch_order)
        loss_sum = torch.zeros(())
        for i in range(0, n, args.batch):
            idx = perm[i:i + args.batch]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss_sum += loss.detach() * len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs.append(time.perf_counter() - t0)
        train_loss.append(float(loss_sum / n))
        epochs_cpu.append(time.process_time() - c0)
        faults.append(minor_faults() - f0)
        batches = -(-n // args.batch)
        nfe_f.append(model.ode.field.nfe_forward / batches)
        nfe_b.append(model.ode.field.nfe_backward / batches)
    model.eval()
    correct = 0
    with torch.no_grad():
        # odex's evaluation batches (an adaptive solver's steps depend on the whole batch)
        eval_batch = int(d.get("eval_batch", 1000))
        for i in range(0, len(x_test), eval_batch):
            correct += int((model(x_test[i:i + eval_batch]).argmax(1) == y_test[i:i + eval_batch]).sum())
    state["log1p_us_end"] = log1p_us()
    result = {"path": "plain", "epoch_s": epochs, "epoch_cpu_s": epochs_cpu, "epoch_faults": faults, "test_correct": correct, "test_n": len(x_test),
              "test_acc": correct / len(x_test), "train_loss": train_loss, "nfe_forward": nfe_f, "nfe_backward": nfe_b,
              "process_s": time.perf_counter() - t_process, **state}
    with open(args.out, "w") as f:
        json.dump(result, f)
    return result
