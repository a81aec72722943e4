"""Every YAML of every config group composes, states every key once, and builds into its object
where that is cheap.

One statement per key: a key's value is stated once, in its YAML. A part's YAML (a node with a
`_target_`) states every key of its schema, so `--cfg job` shows every value a run gets and no
default elsewhere (the schema's, the constructor's) decides one; odex/schema.py states each key's
type and range, and no value (a second value would be a second statement: 41 schema defaults once
disagreed with the YAML, e.g. the augmented model's activation). Several YAMLs share one schema
(five solvers share Solver, heavy_ball and ghbnode HeavyBallNODE), so the schema could not hold
their value anyway. Nested mappings without a `_target_` (dataset.augment, an evaluation's solver,
a preset row) may be partial: what they leave out is the part's (the model's solver, the preset's,
RandomCropFlip's). test_every_choice_composes checks every choice of every group, experiment,
debug and sweep included: 0 disagreements.
"""
import dataclasses
import typing
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_cfg
from odex import schema
from odex.config import check_value, config_dir
from odex.errors import ConfigError

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
    tree = OmegaConf.to_container(cfg, resolve=True)
    # and agrees with its schema: a part group's own parts; experiment, debug, sweep: every part
    diffs = [d for key, node, cls in parts(tree) if group not in schema.TOP_LEVEL or key.split(".")[0] == group
             for d in statement_diffs(node, cls, key)]
    assert not diffs, f"{override}: {len(diffs)} disagreement(s) with odex/schema.py:\n" + "\n".join(diffs)


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


# ---------------------------------------------------------------------------------------------
# One statement per key (module docstring)

SCHEMAS = schema.by_target()
VALUE_FREE = ("_target_", "_partial_")      # constants of the part, not values a run chooses


def schema_classes() -> set[type]:
    """Every schema dataclass a part's key may follow: the parts' (by_target) and the records nested in them."""
    seen, todo = set(), list(SCHEMAS.values())
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for ann in schema.schema_fields(cls).values():
            todo += [a for a in _leaves(ann) if isinstance(a, type) and dataclasses.is_dataclass(a)]
    return seen


def _leaves(ann):
    args = typing.get_args(ann)
    return [ann] if not args else [leaf for a in args for leaf in _leaves(a)]


def statement_diffs(node: dict, cls: type, key: str) -> list[str]:
    """How `node` (a composed YAML node) and the schema `cls` disagree: a key without a field, a
    field the part's YAML does not state, a value outside the field's type or range."""
    known = schema.schema_fields(cls)
    diffs = [f"{key}.{k}: stated in the YAML, no field in odex/schema.py {cls.__name__}"
             for k in node if k not in known]
    if "_target_" in node:
        diffs += [f"{key}.{k}: a field of {cls.__name__}, not stated in the YAML"
                  for k in known if k not in node]
    for k, value in node.items():
        if k not in known:
            continue
        try:
            check_value(value, known[k], f"{key}.{k}")
        except ConfigError as e:
            diffs.append(f"{key}.{k}: {e}")
        for sub in _leaves(known[k]):       # a nested part (trainer.health): complete too
            if isinstance(sub, type) and dataclasses.is_dataclass(sub) and isinstance(value, dict) \
                    and "_target_" in value:
                diffs += [d for d in statement_diffs(value, sub, f"{key}.{k}") if "not stated" in d]
    return diffs


def parts(tree: dict):
    """(key, node, schema) of every part of a composed config that odex's schema knows."""
    for group in schema.TOP_LEVEL:
        node = tree.get(group)
        entries = node.items() if group in ("eval", "callbacks") and isinstance(node, dict) else [("", node)]
        for name, sub in entries:
            if group == "schedule" and isinstance(sub, dict):
                name, sub = "scheduler", sub.get("scheduler")
            if isinstance(sub, dict) and sub.get("_target_") in SCHEMAS:
                yield ".".join(filter(None, (group, name))), sub, SCHEMAS[sub["_target_"]]


def test_schema_states_no_value():
    """A schema field has a type and a range, no default: the YAML states the value (module docstring)."""
    stated = [f"{cls.__name__}.{f.name}" for cls in schema_classes() for f in dataclasses.fields(cls)
              if f.name not in VALUE_FREE
              and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)]
    assert not stated, f"{len(stated)} schema default(s), a second statement of the YAML's value: {sorted(stated)}"


def test_a_disagreement_is_found():
    """The check itself: a missing key, an unknown key and a value out of range are each reported."""
    node = OmegaConf.to_container(compose_cfg(["model=augmented"]).model, resolve=True)
    cls = SCHEMAS[node["_target_"]]
    assert statement_diffs(node, cls, "model") == []
    missing = {k: v for k, v in node.items() if k != "activation"}
    assert statement_diffs(missing, cls, "model") == [
        "model.activation: a field of AugmentedNODE, not stated in the YAML"]
    unknown = {**node, "activaton": "relu"}
    assert statement_diffs(unknown, cls, "model") == [
        "model.activaton: stated in the YAML, no field in odex/schema.py AugmentedNODE"]
    bad = statement_diffs({**node, "augment_dim": -1}, cls, "model")
    assert bad == ["model.augment_dim: model.augment_dim=-1: must be an integer >= 0"]
