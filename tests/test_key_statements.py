"""One statement per key: every YAML of conf/ against odex/schema.py, 0 disagreements.

The rule (odex/schema.py says it where the schemas start): a key's value is stated once, in its
YAML. A part's YAML (a node with a `_target_`) states every key of its schema, so `--cfg job` shows
every value a run gets and no default elsewhere (the schema's, the constructor's) decides one; the
schema states each key's type and range, and no value (a second value would be a second statement:
before this test, 41 schema defaults disagreed with the YAML, e.g. the augmented model's activation).
Several YAMLs share one schema (five solvers share Solver, heavy_ball and ghbnode share
HeavyBallNODE), so the schema could not hold their value anyway. Nested mappings without a
`_target_` (dataset.augment, an evaluation's solver, a preset row) may be partial: what they leave
out is the part's (the model's solver, the preset's, RandomCropFlip's).

Torch-free: composes and reads the schema only.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from odex import schema
from odex.config import check_value, config_dir
from odex.errors import ConfigError

CONF = Path(config_dir())
# every group with choices: the parts' groups, and those that add or change parts' keys
GROUPS = ("dataset", "model", "solver", "grad", "objective", "optim", "schedule", "eval", "callbacks",
          "trainer", "logger", "debug", "experiment", "sweep")
CHOICES = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
SCHEMAS = {target: cls for table in schema.TARGETS.values() for target, cls in table.items()}
VALUE_FREE = ("_target_", "_partial_")      # constants of the part, not values a run chooses


def schema_classes() -> set[type]:
    """Every schema dataclass a part's key may follow: the TARGETS and the records nested in them."""
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


def composed(group: str, choice: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={choice}"])
    return OmegaConf.to_container(cfg, resolve=True)


def test_every_choice_is_found():
    assert len(CHOICES) > 60 and {g for g, _ in CHOICES} == set(GROUPS)


@pytest.mark.parametrize("group", GROUPS)
def test_yaml_and_schema_agree(group):
    """Every choice of the group composed: each part's keys are exactly its schema's fields, and
    each value fits its field. All disagreements of the group listed at once (a part group: its own
    parts; experiment, debug, sweep: every part, as they change any)."""
    diffs, seen = [], 0
    for g, choice in CHOICES:
        if g != group:
            continue
        for key, node, cls in parts(composed(group, choice)):
            if group in schema.TOP_LEVEL and key.split(".")[0] != group:
                continue
            seen += 1
            diffs += [f"{group}={choice}: {d}" for d in statement_diffs(node, cls, key)]
    assert seen > 0
    assert not diffs, f"{len(diffs)} disagreement(s):\n" + "\n".join(sorted(set(diffs)))


def test_schema_states_no_value():
    """A schema field has a type and a range, no default: the YAML states the value (see above)."""
    stated = [f"{cls.__name__}.{f.name}" for cls in schema_classes() for f in dataclasses.fields(cls)
              if f.name not in VALUE_FREE
              and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)]
    assert not stated, f"{len(stated)} schema default(s), a second statement of the YAML's value: {sorted(stated)}"


def test_a_disagreement_is_found():
    """The check itself: a missing key, an unknown key and a value out of range are each reported."""
    node = composed("model", "augmented")["model"]
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
