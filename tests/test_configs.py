"""Every YAML of every config group composes, and builds into its object where that is cheap."""
from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import compose_cfg
from odex.config import config_dir

CONF = Path(config_dir())
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
CHOICES = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


def test_config_groups_found():
    for group in ("dataset", "model", "solver", "grad", "objective", "optim", "schedule", "eval",
                  "trainer", "logger", "experiment"):
        assert group in GROUPS


@pytest.mark.parametrize("group,choice", CHOICES, ids=[f"{g}={c}" for g, c in CHOICES])
def test_every_choice_composes(group, choice):
    override = f"{group}={choice}"      # every group, sweep included, has a default (maybe null)
    cfg = compose_cfg([override])
    assert cfg is not None
    # every key resolves (interpolations such as ${trainer.max_epochs})
    from omegaconf import OmegaConf
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("choice", sorted(f.stem for f in (CONF / "solver").glob("*.yaml")))
def test_solvers_build(choice):
    solver = instantiate(compose_cfg([f"solver={choice}"]).solver)
    assert solver.method == choice
    assert solver.fixed or solver.adaptive


@pytest.mark.parametrize("choice", sorted(f.stem for f in (CONF / "grad").glob("*.yaml")))
def test_gradient_methods_build(choice):
    from odex.ode.grad import GradientMethod
    assert isinstance(instantiate(compose_cfg([f"grad={choice}"]).grad), GradientMethod)


def test_defaults():
    cfg = compose_cfg([])
    assert cfg.dataset._target_.endswith("digits")
    assert cfg.solver.method == "dopri5" and cfg.solver.rtol == 1e-3 and cfg.solver.atol == 1e-3
    assert cfg.dataset.val_fraction == 0
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"):
        ds = compose_cfg([f"dataset={name}"]).dataset
        assert ds.download is False and ds.augment is False and "root" in ds


def test_wandb_defaults_to_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_cfg([]).logger.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose_cfg([]).logger.mode == "disabled"


def test_list_groups_skip_entries_left_out_of_the_choice():
    """experiment=lyanet_fmnist eval=[clean]: the experiment's eval.pgd settings stay in the
    config without a _target_; only the chosen evaluators are built."""
    from odex.evaluate.evaluators import CleanAccuracy
    from odex.build import chosen_parts

    cfg = compose_cfg(["experiment=lyanet_fmnist", "eval=[clean]", "callbacks=[swa]"])
    assert "pgd" in cfg.eval and "_target_" not in cfg.eval.pgd
    evaluators = chosen_parts(cfg.eval, "eval")
    assert list(evaluators) == ["clean"] and isinstance(evaluators["clean"], CleanAccuracy)
    assert list(chosen_parts(cfg.callbacks, "callbacks")) == ["swa"]


def test_attacks_skip_the_validation_part():
    import torch

    from odex.evaluate.evaluators import evaluate

    class Probe:
        def __init__(self, test_only):
            self.test_only = test_only

        def __call__(self, model, batches, prefix):
            return {f"{prefix}/probe{int(self.test_only)}": torch.tensor(1.0)}

    evs = {"a": Probe(False), "b": Probe(True)}
    assert set(evaluate(evs, None, [], "val")) == {"val/probe0"}
    assert set(evaluate(evs, None, [], "test")) == {"test/probe0", "test/probe1"}


def test_every_target_of_odexs_own_configs_has_its_schema():
    """`_target_` is the registry: each `_target_` in conf/ (Hydra's own settings aside) is stated by
    one schema of odex/schema.py as its `_target_` default (odex.schema.by_target
    refuses two), so none of odex's parts is
    validated as a part of the user's own (imported, or by its signature alone)."""
    import yaml

    from odex import schema

    def targets(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "_target_":
                    yield v
                elif k != "hydra":
                    yield from targets(v)
        elif isinstance(node, list):
            for v in node:
                yield from targets(v)

    found = {t for path in CONF.rglob("*.yaml") if "hydra" not in path.relative_to(CONF).parts
             for t in targets(yaml.safe_load(path.read_text()))}
    index = schema.by_target()
    assert len(found) > 40 and found <= set(index), sorted(found - set(index))
    assert set(index) <= found, sorted(set(index) - found)      # and no schema for a part conf/ lacks
