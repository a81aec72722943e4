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
A mistake in the input (a missing or changed checkpoint: its SHA-256 is checked; an output folder
that is not new or lies inside the run; a bad override or value) is one `odex: error:` line and
exit status 2, found before torch is imported and the model built.
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


def _new_folder(out_dir: Path) -> None:
    """out_dir must be new or empty (its lock file aside: an evaluation that failed leaves it)."""
    from odex.training.resume import LOCK_NAME

    if out_dir.exists() and (not out_dir.is_dir() or any(p.name != LOCK_NAME for p in out_dir.iterdir())):
        raise ConfigError(f"out_dir={out_dir}: not empty; odex-eval writes to a new folder only")


def check_inputs(ckpt_path: str | Path, overrides: list[str], out_dir: str | Path):
    """Every input checked before torch is imported and the model built: the output folder is new
    (and not inside the checkpoint's run, which odex-eval never writes), the checkpoint is there and
    its bytes are the ones odex wrote (its checksum), the run's configuration is readable, and with
    the overrides it passes odex-train's validation. Returns that configuration; a mistake is a
    `ConfigError` (one line, exit 2)."""
    from omegaconf import OmegaConf

    from odex import plugins
    from odex.config import check_output_folder, validate
    from odex.errors import ChangedFile
    from odex.training.checksum import verify

    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    check_output_folder("out_dir", out_dir)      # a file there, or a folder that cannot be made: one line
    _new_folder(out_dir)
    if not ckpt_path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such file")
    config_path = run_config_path(ckpt_path)
    run_folder = config_path.parent.parent.resolve()
    if out_dir.resolve() == run_folder or run_folder in out_dir.resolve().parents:
        raise ConfigError(f"out_dir={out_dir}: inside the checkpoint's run folder {run_folder}, which odex-eval "
                          "never writes: use a folder outside it")
    try:
        verify(ckpt_path, "ckpt_path")
    except ChangedFile as e:
        raise ConfigError(str(e)) from None
    try:
        saved = OmegaConf.to_container(OmegaConf.load(config_path))   # unresolved, as saved
    except Exception as e:  # noqa: BLE001 -- YAML or I/O errors of a damaged record
        raise ConfigError(f"ckpt_path={ckpt_path}: its run's {config_path} cannot be read "
                          f"({type(e).__name__})") from None
    hydra_yaml = config_path.parent / "hydra.yaml"     # parts of the run's own: importable as in odex-train
    if hydra_yaml.is_file():
        plugins.on_path(plugins.folders(OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.searchpath", default=None)))
    cfg = apply_overrides(OmegaConf.create(saved), overrides)
    validate(cfg, run_choices(config_path, overrides))    # the same checks as odex-train, before any build
    if "init_from" in cfg.trainer:        # the weights are the checkpoint's
        cfg.trainer.init_from = None
    return cfg


def evaluate_checkpoint(ckpt_path: str | Path, overrides: list[str], out_dir: str | Path) -> dict[str, Any]:
    """Check the inputs, build the run's model, load the checkpoint, run the evaluators; returns
    the summary. The output folder is locked for the whole evaluation and every file in it is
    written atomically (odex/training/atomic.py)."""
    cfg = check_inputs(ckpt_path, overrides, out_dir)
    from odex.training.resume import RunLock

    with RunLock(out_dir) as lock:
        if lock.read_only:
            from odex.errors import ReadOnlyFolder
            raise ReadOnlyFolder(f"out_dir={out_dir}: cannot be written: use a folder odex may write")
        _new_folder(Path(out_dir))      # again, now that no other process can start writing into it
        return _evaluate(cfg, Path(ckpt_path), overrides, Path(out_dir))


def _evaluate(cfg, ckpt_path: Path, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    from odex.build import build_run
    from odex.config import build
    from odex.sweep.process_state import job_settings

    trainer = build(cfg.trainer)          # device, threads and the speed settings, as in the run
    with job_settings(threads=trainer.threads, tf32=trainer.tf32, device=trainer.device,
                      compiles=trainer.fast_paths.compiles):
        return _evaluate_built(cfg, build_run(cfg, trainer=trainer, training=False), ckpt_path, overrides, out_dir)


def _evaluate_built(cfg, built, ckpt_path: Path, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    import torch
    from omegaconf import OmegaConf

    import odex.training.checkpoint as ckpt
    from odex.data.batches import Batches
    from odex.evaluate.evaluators import evaluate
    from odex.tracking.tracker import ConsoleSink, JsonlSink, Tracker
    from odex.train import _config
    from odex.training import atomic

    state = ckpt.load_weights(built.model, ckpt_path, "ckpt_path")
    atomic.makedirs(out_dir / ".hydra")
    atomic.write_text(out_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic.write_text(out_dir / ".hydra" / "overrides.yaml",
                      OmegaConf.to_yaml(OmegaConf.create([f"ckpt_path={ckpt_path}", *overrides])))
    tracker = Tracker(out_dir, [JsonlSink(), ConsoleSink(every=True)])     # every figure computed, on the terminal
    tracker.start(_config(cfg), {"name": f"eval {ckpt_path}"})
    epoch = int(state.get("epoch", 0))
    metrics: dict[str, float] = {}
    data = built.data
    splits = {"test": data.test} if data.val is None else {"val": data.val, "test": data.test}
    for prefix, split in splits.items():
        values = evaluate(built.evaluators, built.model, Batches(split, data.eval_batch_size), prefix, epoch=epoch,
                          final=True)
        metrics.update({k: float(torch.as_tensor(v).float()) for k, v in values.items()})
    tracker.log(metrics, epoch)
    return tracker.finish("completed", {"run_dir": str(out_dir), "ckpt_path": str(ckpt_path.resolve()),
                                        "ckpt_epoch": epoch})


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, 2 for a mistake in the input (checked before torch is imported and the
    model built, but for weights that do not fit the model), 1 for anything else that fails."""
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
        return 2 if isinstance(e, ConfigError) else 1
    except Exception as e:  # noqa: BLE001 -- a bad override value (Hydra's parser, OmegaConf) is the user's
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(e, (HydraException, OmegaConfBaseException)):
            print(f"odex: error: {' '.join(str(e).split())}", file=sys.stderr)
            return 2
        raise
    print(f"odex-eval: metrics in {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
