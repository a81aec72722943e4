"""`odex-eval`: evaluate any checkpoint, writing the metrics to a new run folder.

    odex-eval ckpt_path=outputs/runs/.../checkpoints/last.pt
    odex-eval ckpt_path=.../last.pt eval=[clean,pgd] eval.pgd.steps=20 dataset.eval_batch_size=500
    odex-eval ckpt_path=.../last.pt out_dir=evals/pgd20

The configuration is the run's own, read from its folder (<run folder>/.hydra/config.yaml, the run
folder being the one that holds checkpoints/<file>); overrides change it as in odex-train: a group
choice (`eval=[clean,pgd]`, `solver=rk4`) takes that group's node from the config tree, a key
(`eval.pgd.steps=20`) is set. The model is built from that configuration and must take every
tensor of the checkpoint (otherwise one `odex: error:` line). The evaluators run once on the test
split (and the validation split, when the run had one), as after a run's last epoch, so
`odex-eval` on a finished run's checkpoint reproduces its logged test metrics exactly.

The new folder (`out_dir`, default outputs/evals/<date>/<time>) gets metrics.jsonl, summary.json
(with the checkpoint's path and epoch) and .hydra/config.yaml; the checkpoint's run is not touched.
"""
from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from odex.errors import ConfigError, OdexError
from odex.training.threads import passive_openmp_waits

log = logging.getLogger("odex")

USAGE = """usage: odex-eval ckpt_path=<checkpoint> [out_dir=<new folder>] [override ...]

Evaluate a checkpoint with its run's configuration (<run folder>/.hydra/config.yaml) and the given
overrides (e.g. eval=[clean,pgd] eval.pgd.steps=20); the metrics go to a new run folder."""


def run_config_path(ckpt_path: Path) -> Path:
    """<run folder>/.hydra/config.yaml for <run folder>/checkpoints/<file> (or a file next to .hydra)."""
    for folder in (ckpt_path.parent.parent, ckpt_path.parent):
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder / ".hydra" / "config.yaml"
    raise ConfigError(f"ckpt_path={ckpt_path}: no .hydra/config.yaml in its run folder "
                      f"({ckpt_path.parent.parent}), so its configuration is unknown")


def run_choices(config_path: Path, overrides: list[str]) -> dict:
    """The run's group choices (its .hydra/hydra.yaml), with the group choices among `overrides`."""
    from omegaconf import OmegaConf

    hydra_yaml = config_path.parent / "hydra.yaml"
    choices = {}
    if hydra_yaml.is_file():
        choices = dict(OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.choices", default={}) or {})
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") in choices:
            choices[key.lstrip("+~")] = value
    return choices


def apply_overrides(cfg, overrides: list[str]):
    """The run's config with odex-train-style overrides: group choices come from the config tree."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    from odex.config import config_dir

    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = {p.name for p in Path(config_dir()).iterdir() if p.is_dir()}
    choices = [o.input_line for o in parsed if o.get_key_element().lstrip("+~") in groups]
    if choices:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            fresh = compose("train", overrides=choices)
    with open_dict(cfg):
        for o in parsed:
            key = o.get_key_element().lstrip("+~")
            if key in groups:
                cfg[key] = fresh[key]
            elif o.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                if node is not None and leaf in node:
                    del node[leaf]
            else:
                if not o.is_add() and OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
                    raise ConfigError(f"{o.input_line}: not a key of the run's configuration "
                                      f"(a key of a group entry exists only once the entry is chosen, "
                                      f"e.g. eval=[clean,pgd])")
                OmegaConf.update(cfg, key, o.value(), merge=True, force_add=True)
    return cfg


def evaluate_checkpoint(ckpt_path: str | Path, overrides: list[str], out_dir: str | Path) -> dict[str, Any]:
    """Build the run's model, load the checkpoint, run the evaluators; returns the summary."""
    import torch
    from omegaconf import OmegaConf

    import odex.training.checkpoint as ckpt
    from odex.config import build, check_output_folder, current_config, validate
    from odex.data.batches import Batches
    from odex.evaluate.evaluators import evaluate
    from odex.tracking.tracker import ConsoleSink, JsonlSink, Tracker
    from odex.train import _config, chosen_parts, seed_everything

    ckpt_path = Path(ckpt_path)
    out_dir = Path(out_dir)
    check_output_folder("out_dir", out_dir)      # a file there, or a folder that cannot be made: one line
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"out_dir={out_dir}: not empty; odex-eval writes to a new folder only")
    if not ckpt_path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such file")
    config_path = run_config_path(ckpt_path)
    saved = OmegaConf.to_container(OmegaConf.load(config_path))   # unresolved, as saved
    cfg = apply_overrides(OmegaConf.create(current_config(saved)), overrides)
    validate(cfg, run_choices(config_path, overrides))    # the same checks as odex-train, before any build
    if "init_from" in cfg.trainer:        # the weights are the checkpoint's
        cfg.trainer.init_from = None

    trainer = build(cfg.trainer)          # device, threads and the speed settings, as in the run
    from odex.training.cpu_math import map_kernel_constants
    map_kernel_constants()                # the math kernels' fast state, as in odex-train (changes no result)
    seed_everything(trainer.seed)
    data = build(cfg.dataset)
    model = build(cfg.model, info=data.info, solver=build(cfg.solver), grad=build(cfg.grad)).to(trainer.device)
    trainer.fast_paths.apply(model)
    data = data.to(trainer.device)
    state = ckpt.load_weights(model, ckpt_path, "ckpt_path")
    evaluators = chosen_parts(cfg.eval, "eval")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, out_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create([f"ckpt_path={ckpt_path}", *overrides]), out_dir / ".hydra" / "overrides.yaml")
    tracker = Tracker(out_dir, [JsonlSink(), ConsoleSink(every=True)])     # every figure computed, on the terminal
    tracker.start(_config(cfg), {"name": f"eval {ckpt_path}"})
    epoch = int(state.get("epoch", 0))
    metrics: dict[str, float] = {}
    splits = {"test": data.test} if data.val is None else {"val": data.val, "test": data.test}
    for prefix, split in splits.items():
        values = evaluate(evaluators, model, Batches(split, data.eval_batch_size), prefix, epoch=epoch, final=True)
        metrics.update({k: float(torch.as_tensor(v).float()) for k, v in values.items()})
    tracker.log(metrics, epoch)
    return tracker.finish("completed", {"run_dir": str(out_dir), "ckpt_path": str(ckpt_path.resolve()),
                                        "ckpt_epoch": epoch})


def main(argv: list[str] | None = None) -> int:
    passive_openmp_waits()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    named = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith(("ckpt_path=", "out_dir="))}
    overrides = [a for a in argv if not a.startswith(("ckpt_path=", "out_dir="))]
    try:
        if "ckpt_path" not in named:
            raise ConfigError("ckpt_path: missing; give the checkpoint to evaluate, ckpt_path=<file>")
        out_dir = named.get("out_dir") or Path("outputs/evals") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
        summary = evaluate_checkpoint(named["ckpt_path"], overrides, out_dir)
    except OdexError as e:
        print(f"odex: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 -- a bad override value (Hydra's parser, OmegaConf) is the user's
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(e, (HydraException, OmegaConfBaseException)):
            print(f"odex: error: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        raise
    print(f"odex-eval: metrics in {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
