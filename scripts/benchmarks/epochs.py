"""CPU benchmark: `odex-train` against a plain torchdiffeq training script of the same model and
data, per epoch, one thread, one process per path and round, side by side (ABBA).

    python scripts/bench.py epochs --out docs/bench/cpu-epochs            # about 10 minutes on 2 cores
    python scripts/bench.py epochs --cases mlp-direct --rounds 1 --epochs 2 # a quick look

Cases (dopri5 1e-3, Adam lr 1e-3, seed 0): conv-* is model=gq_image width 50, batch 64, on MNIST
t10k (--mnist-root; else synthetic MNIST-shaped digits); mlp-* the augmented 5-64-64-5 softplus
field on nested spheres, batch 256. Paths: `plain` (`scripts/bench.py plain`) on the tensors,
initial weights and batch order odex-train uses (exported here; odex-train reads the weights with
trainer.init_from), so both train the same model to the last bit; each --odex-variants entry
(odex-train itself, `time/epoch_s`); with --odex-unmapped odex-train without its mapping of the
kernel constants (the control), with --plain-warm-up the plain script after the one-line pow fix.
Every process records the float32 log1p state at start and end. Per case and path: median wall and
CPU seconds per epoch (each process's first epoch left out), the ratio to plain, process time,
NFE, test predictions, last train loss, the compile=auto decision. Details: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import struct
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (bench_command, command, environment, log1p_us, median, metrics, minor_faults, report,
                               run_child, side_by_side, table)

CASES = {
    "conv-direct": ("conv", "direct"), "conv-adjoint": ("conv", "adjoint"),
    "mlp-direct": ("mlp", "direct"), "mlp-adjoint": ("mlp", "adjoint"),
}


def odex_overrides(model: str, grad: str, args, mnist_root: str) -> list[str]:
    common = ["solver=dopri5", f"solver.rtol={args.tol}", f"solver.atol={args.tol}", f"grad={grad}",
              "optim=adam", "optim.lr=1e-3", f"trainer.max_epochs={args.epochs}", "trainer.device=cpu",
              "trainer.progress=false", "trainer.seed=0", "logger=none", "eval=clean"]
    if model == "conv":
        return common + ["dataset=mnist_t10k", f"dataset.root={mnist_root}", "dataset.batch_size=64",
                         f"dataset.limit_train={args.conv_train}", f"dataset.limit_test={args.conv_test}",
                         "model=gq_image", "model.width=50"]
    return common + ["dataset=spheres", "dataset.batch_size=256", "model=augmented", "model.augment_dim=3",
                     "model.hidden=64", "model.activation=softplus", "model.time_dependent=false"]


# ---------------------------------------------------------------------------------------------
# data

def _idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)


def synthetic_mnist(root: Path, n: int = 10_000, seed: int = 0) -> None:
    """MNIST/raw/t10k-* IDX files of MNIST-shaped digits: a random 28x28 template per class plus
    noise (learnable, so accuracy means something), for machines without MNIST."""
    import torch
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (0.6 * templates[y] + 0.4 * torch.rand(n, 28, 28, generator=g)).mul(255).to(torch.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    _idx(raw / "t10k-images-idx3-ubyte", 0x803, (n, 28, 28), x.numpy().tobytes())
    _idx(raw / "t10k-labels-idx1-ubyte", 0x801, (n,), y.to(torch.uint8).numpy().tobytes())


def init_path(data_file: Path) -> Path:
    """The odex checkpoint of the initial weights that `export_data` writes beside `data_file`."""
    return data_file.with_name(data_file.stem + "-init.pt")


def export_data(model: str, args, mnist_root: str, path: Path) -> None:
    """The tensors odex-train's dataset config yields, for the plain script, and the model's initial
    weights: in `path` (with the plain model's parameters in odex's order) and as an odex checkpoint
    (`init_path(path)`) for odex-train's `trainer.init_from`, so both paths start from the same weights."""
    import torch
    from hydra import compose, initialize_config_dir
    from odex.config import build, config_dir

    overrides = odex_overrides(model, "direct", args, mnist_root)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[o for o in overrides if o.startswith(("dataset", "model", "solver"))])
    data = build(cfg.dataset)
    torch.manual_seed(0)
    net = build(cfg.model, info=data.info, solver=build(cfg.solver), grad="direct")
    torch.save({"model": net.state_dict()}, init_path(path))
    torch.save({"x_train": data.train.x, "y_train": data.train.y, "x_test": data.test.x, "y_test": data.test.y,
                "mean": list(data.info.mean), "std": list(data.info.std), "num_classes": data.info.num_classes,
                "batch": data.batch_size, "eval_batch": data.eval_batch_size,
                "init": [p.detach().clone() for p in net.parameters()]}, path)


# ---------------------------------------------------------------------------------------------
# child: odex-train in this process, with the log1p state recorded around it

def child_odex(args) -> None:
    import torch
    torch.set_num_threads(1)

    state = {"log1p_us_start": log1p_us()}
    if args.unmapped:
        # the control: odex-train without its start-up mapping of torch's kernel constants
        import odex.training.cpu_math
        odex.training.cpu_math.map_kernel_constants = lambda: 0
    run_dir = Path(args.run_dir)
    sys.argv = ["odex-train", f"hydra.run.dir={run_dir}", *args.overrides]
    import odex.training.trainer
    from odex.train import main

    class CPUClock:
        """The process CPU seconds of each epoch's training loop (the span of time/epoch_s: from
        on_epoch_start to on_evaluate_start), added as a callback of this benchmark only."""
        epochs: list[float] = []
        faults: list[int] = []

        def on_epoch_start(self, epoch):
            self.t0, self.f0 = time.process_time(), minor_faults()

        def on_evaluate_start(self, **_):
            self.epochs.append(time.process_time() - self.t0)
            self.faults.append(minor_faults() - self.f0)

    fit = odex.training.trainer.Trainer.fit

    def fit_timed(self, **kw):
        return fit(self, **{**kw, "callbacks": {**(kw.get("callbacks") or {}), "bench_cpu_clock": CPUClock()}})
    odex.training.trainer.Trainer.fit = fit_timed
    try:
        main()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    state["log1p_us_end"] = log1p_us()
    rows = metrics(run_dir)
    rows = [r for r in rows if "time/epoch_s" in r]
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = rows[-1].get("test/acc")
    n_test = args.test_n
    result = {"path": "odex", "epoch_s": [r["time/epoch_s"] for r in rows], "epoch_cpu_s": CPUClock.epochs, "epoch_faults": CPUClock.faults,
              "test_acc": acc, "train_loss": [r.get("train/loss") for r in rows],
              "test_correct": None if acc is None or not n_test else round(acc * n_test), "test_n": n_test,
              "nfe_forward": [r.get("nfe/forward") for r in rows], "nfe_backward": [r.get("nfe/backward") for r in rows],
              "compile": summary.get("compile") or next((o.split("=", 1)[1] + " (set)" for o in args.overrides
                                                         if o.startswith("trainer.compile=")), "false"), "compile_reason": summary.get("compile_reason", ""), **state}
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# driver

def steady(epoch_s: list[float]) -> list[float]:
    return epoch_s[1:] if len(epoch_s) > 1 else epoch_s


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="scripts/bench.py epochs", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--rounds", type=int, default=3, help="processes per path and case")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--mlp-epochs", type=int, default=None, help="epochs for the MLP cases (default --epochs)")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--conv-train", type=int, default=640)
    p.add_argument("--conv-test", type=int, default=500)
    p.add_argument("--mnist-root", default=None, help="folder with MNIST/raw/t10k-*; default: synthetic")
    p.add_argument("--odex-variants", nargs="+", default=["trainer.compile=auto"],
                   help="odex-train processes per round, each a space-free override list joined by ',' "
                        "(e.g. trainer.compile=auto trainer.compile=true,solver.loop=odex)")
    p.add_argument("--plain-warm-up", action="store_true",
                   help="add plain processes that run the reported one-line fix (a float32 pow) first")
    p.add_argument("--odex-unmapped", action="store_true",
                   help="add odex-train processes (first variant) without the start-up mapping of "
                        "torch's kernel constants (odex/training/cpu_math.py): the control")
    p.add_argument("--out", default=None)
    p.add_argument("--child", choices=["odex"], help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--test-n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--unmapped", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_odex(args)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    tmp = Path(tempfile.mkdtemp(prefix="odex-bench-cpu-"))
    mnist_root = args.mnist_root
    if mnist_root is None:
        mnist_root = str(tmp / "synthetic")
        synthetic_mnist(Path(mnist_root))
    import torch
    cmd = command("epochs", argv)
    meta = environment("cpu", command=cmd, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                       machine=f"{platform.machine()}, {os.cpu_count()} cores, 1 thread per process")
    meta["data"] = "; ".join(
                ([("conv: MNIST t10k" if args.mnist_root else "conv: synthetic MNIST-shaped digits")]
                 if any(CASES[c][0] == "conv" for c in args.cases) else [])
                + (["mlp: nested spheres (dataset=spheres)"] if any(CASES[c][0] == "mlp" for c in args.cases) else []))

    rows, raw = [], {}
    for case in args.cases:
        model, grad = CASES[case]
        epochs = args.mlp_epochs if model == "mlp" and args.mlp_epochs else args.epochs
        case_args = argparse.Namespace(**{**vars(args), "epochs": epochs})
        data_file = tmp / f"{model}.pt"
        if not data_file.exists():
            export_data(model, case_args, mnist_root, data_file)
        d = torch.load(data_file)
        n_test = len(d["y_test"])
        batch = d["batch"]
        width = 50 if model == "conv" else 64
        paths = {"plain": [*bench_command("plain"), "--data", str(data_file), "--model", model, "--grad", grad, "--epochs", str(epochs), "--batch", str(batch),
                           "--width", str(width), "--tol", str(args.tol)]}
        if args.plain_warm_up:
            paths["plain + warm-up"] = paths["plain"] + ["--warm-up"]
        for variant in args.odex_variants:
            extra = [v for v in variant.split(",") if v]
            paths["odex " + " ".join(extra)] = [*bench_command("epochs"), "--child", "odex", "--test-n", str(n_test), "--",
                                                *odex_overrides(model, grad, case_args, mnist_root),
                                                f"trainer.init_from={init_path(data_file)}", *extra]
        if args.odex_unmapped:
            first = next(name for name in paths if name.startswith("odex"))
            child = paths[first]
            paths[first + " (constants not mapped)"] = child[:child.index("--")] + ["--unmapped"] + child[child.index("--"):]
        runs = itertools.count()

        def measure(name):          # one process of one path
            res = tmp / f"{case}-{next(runs)}-{re.sub(r'[^A-Za-z0-9.]+', '_', name)}.json"
            cmd = list(paths[name])
            if name.startswith("odex"):
                i = cmd.index("--child")
                cmd[i + 2:i + 2] = ["--run-dir", str(tmp / "runs" / res.stem), "--result", str(res)]
            else:
                cmd += ["--out", str(res)]
            print(f"bench epochs: {case}: {name}", file=sys.stderr, flush=True)
            return run_child(cmd, env, res)

        results = side_by_side(list(paths), args.rounds, measure)
        raw[case] = results
        ref = median(steady(x["epoch_s"]) for x in results["plain"])
        ref_cpu = median(steady(x["epoch_cpu_s"]) for x in results["plain"])
        for name, res in results.items():
            per_epoch = median(steady(x["epoch_s"]) for x in res)
            per_epoch_cpu = median(steady(x["epoch_cpu_s"]) for x in res)
            rows.append({
                "case": case, "path": name, "epoch_s": per_epoch, "ratio": per_epoch / ref,
                "epoch_cpu_s": per_epoch_cpu, "ratio_cpu": per_epoch_cpu / ref_cpu,
                "epochs_timed": sum(len(steady(x["epoch_s"])) for x in res),
                "process_wall_s": median(x["process_wall_s"] for x in res),
                "log1p_us_start": [round(x["log1p_us_start"], 1) for x in res],
                "log1p_us_end": [round(x["log1p_us_end"], 1) for x in res],
                "test_correct": [x.get("test_correct") for x in res], "test_n": n_test,
                "train_loss": sorted({x["train_loss"][-1] for x in res}),
                "nfe": f"{median(x['nfe_forward'][-1] for x in res):.1f}/{median(x['nfe_backward'][-1] for x in res):.1f}",
                "compile": sorted({x.get("compile", "-") for x in res}),
                "compile_reason": sorted({x.get("compile_reason", "") for x in res}),
            })
    result = {"meta": meta, "rows": rows, "raw": raw}
    report(cmd, markdown(rows, meta), args.out, result)
    return result


def markdown(rows: list[dict], meta: dict) -> str:
    header = ["case", "path", "s/epoch (wall, median)", "x plain", "CPU s/epoch (median)", "x plain", "epochs timed",
              "process s", "NFE f/b", "log1p us start -> end", "test correct", "last train loss", "compile"]
    cells = [[r["case"], r["path"], f"{r['epoch_s']:.3f}", f"{r['ratio']:.2f}", f"{r['epoch_cpu_s']:.3f}",
              f"{r['ratio_cpu']:.2f}", r["epochs_timed"], f"{r['process_wall_s']:.1f}", r["nfe"],
              ", ".join(f"{a:.0f}->{b:.0f}" for a, b in zip(r["log1p_us_start"], r["log1p_us_end"])),
              ", ".join(str(c) for c in r["test_correct"]) + f" / {r['test_n']}",
              ", ".join(repr(v) for v in r["train_loss"]), ", ".join(r["compile"])] for r in rows]
    text = (f"CPU: {meta['machine']}, torch {meta['torch']} (capability {meta['cpu_capability']}), "
            f"torchdiffeq {meta['torchdiffeq']}, data: {meta['data']}, {meta['date']}.\n\n" + table(header, cells))
    reasons = sorted({(r["case"], why) for r in rows for why in r["compile_reason"] if why})
    if reasons:
        text += "\ntrainer.compile=auto decisions:\n" + "".join(f"- {c}: {why}\n" for c, why in reasons)
    return text
