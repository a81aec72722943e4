"""Where the configs are, and instantiation that keeps user errors as one clear line."""
from __future__ import annotations

import difflib
import functools
import inspect
import logging
import math
import os
import re
import sys
import tempfile
import textwrap
import typing
import zipfile
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from odex import plugins, schema
from odex.errors import ConfigError, OdexError
from odex.ode import tableau


def config_dir() -> str:
    """conf/ of the source tree, or the copy shipped inside the installed package (odex/conf)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"odex's configs are missing: no train.yaml next to {here}")


def build(node, **kwargs):
    """`instantiate` whose failures caused by the user surface as an `OdexError`: an error the
    constructor raised on purpose stays as it is; a wrong key or value becomes a `ConfigError`
    naming the config node. Runtime objects (`kwargs`, such as the dataset's DataInfo) are passed
    to the constructor as they are: given to `instantiate` itself, Hydra would turn dataclasses
    into DictConfigs."""
    try:
        if not kwargs:
            return instantiate(node)
        return instantiate(node, _partial_=True)(**kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, OdexError):
            cause = cause.__cause__
        if isinstance(cause, OdexError):
            raise cause from e
        if isinstance(e.__cause__, TypeError) or "_target_" in str(e):
            raise ConfigError(f"bad configuration: {' '.join(str(e).split())}") from e
        raise
    except TypeError as e:      # a wrong key reaches the constructor only once called
        if kwargs and "argument" in str(e):
            raise ConfigError(f"bad configuration for {node.get('_target_')}: {e}") from e
        raise


# ---------------------------------------------------------------------------------------------
# The validation stage: between Hydra's composition and the construction of any part. Torch-free.

def show(value) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def refuse(key: str, value, allowed: str) -> ConfigError:
    """The one error format: `<full.key>=<value>: <what is allowed>`."""
    return ConfigError(f"{key}={show(value)}: {allowed}")


# the plain types of odex/schema.py (and its radius): what each allows, in words, and whether a value fits it
_PLAIN = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
    str: ("a string", lambda v: isinstance(v, str)),
    schema.Radius: ("a radius >= 0 (a number, or a fraction such as 8/255)",
                    lambda v: schema.Radius.parse(v) is not None),
}


def describe(ann) -> str:
    """What an annotation of odex/schema.py allows, in words."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        base, metas = args[0], args[1:]
        text = describe(base)
        for m in metas:
            if isinstance(m, schema.Range):
                text += " " + m.describe()
            elif isinstance(m, schema.Length):
                n = (f"{m.lo}" if m.hi == m.lo else f"at least {m.lo}" if m.hi is None else f"{m.lo} to {m.hi}")
                text = f"{text} ({n} entries)"
        return text
    if origin is typing.Union:
        parts = [describe(a) for a in args if a is not type(None)]
        return ("null or " if type(None) in args else "") + " or ".join(parts)
    if origin is typing.Literal:
        return "one of " + ", ".join(show(a) for a in args)
    if origin is list:
        return f"a list of ({describe(args[0])})" if args else "a list"
    if origin is dict:
        return f"a mapping of names to ({describe(args[1])})"
    if ann in _PLAIN:
        return _PLAIN[ann][0]
    if ann is schema.SolverMethod:
        return "one of " + ", ".join(tableau.names()) + ", or the path <module>.<NAME> of a ButcherTableau of your own"
    if is_dataclass(ann):
        return "{" + ", ".join(f.name for f in fields(ann)) + "}"
    return str(ann)


def check_value(value, ann, key: str, where: str = "") -> None:
    """Raise the one-line `ConfigError` when `value` (plain Python, resolved) does not fit `ann`."""
    def bad():
        return refuse(key, value, f"must be {describe(ann)}")

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        base, metas = args[0], args[1:]
        try:
            check_value(value, base, key, where)
        except ConfigError:
            if typing.get_origin(base) in (list, dict):
                raise          # an entry's own message names the entry
            raise bad() from None
        for m in metas:
            if isinstance(m, schema.Range) and not m.ok(float(value)):
                raise bad()
            if isinstance(m, schema.Length) and (len(value) < m.lo or (m.hi is not None and len(value) > m.hi)):
                raise bad()
        return
    if origin is typing.Union:
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        if isinstance(value, dict):          # a mapping: the one structured choice decides, with its own message
            for a in options:
                if is_dataclass(a) or typing.get_origin(a) is dict:
                    return check_value(value, a, key, where)
        for a in options:
            try:
                check_value(value, a, key, where)
                return
            except ConfigError:
                pass
        raise bad()
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise bad()
        return
    if origin is list or ann is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        for i, v in enumerate(value):
            if args:
                check_value(v, args[0], f"{key}[{i}]", where)
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        for k, v in value.items():
            check_value(v, args[1], f"{key}.{k}", where)
        return
    if ann in _PLAIN:
        if not _PLAIN[ann][1](value):
            raise bad()
        return
    if ann is schema.SolverMethod:
        if not isinstance(value, str) or "." not in value:
            if value not in tableau.names():
                raise bad()
            return
        try:
            tableau.of_user(value)         # a tableau of the user's own: its module is imported
        except LookupError as e:
            raise refuse(key, value, f"{e} (solver.method is one of {', '.join(tableau.names())}, or the "
                                     "path <module>.<NAME> of a ButcherTableau of your own)") from None
        return
    if is_dataclass(ann):
        if not isinstance(value, dict):
            raise bad()
        check_node(value, ann, key, where)
        return
    raise TypeError(f"odex.schema: no check for {ann!r} ({key})")     # a bug in the schema


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_node(node: dict, cls, key: str, where: str = "") -> None:
    """Every key of `node` is a field of the schema dataclass `cls`, with a value that fits it."""
    known = schema.schema_fields(cls)
    for name, value in node.items():
        full = f"{key}.{name}" if key else name
        if name not in known:
            keys = ", ".join(k for k in known if not k.startswith("_"))
            raise refuse(full, value, f"{where or key} has no key {name!r}{_suggest(name, known)}; "
                                      f"its keys: {keys}")
        check_value(value, known[name], full, where)


def _choice(choices: dict, group: str, target: str) -> str:
    """`group=choice` as the user would write it: the choice from Hydra, else the YAML of conf/<group>/
    that names this `_target_`, else the target's own name."""
    name = (choices or {}).get(group)
    if not name:
        folder = Path(config_dir()) / group
        for path in sorted(folder.glob("*.yaml")) if target else ():
            if f"_target_: {target}\n" in path.read_text():
                name = path.stem
                break
    return f"{group}={name or target.rsplit('.', 1)[-1]}"


def _schema_for(group: str, node, key: str, choices: dict, where: str = ""):
    """The schema dataclass of the node `key`: odex's own, stated by its `_target_` (odex/schema.py),
    or the one a part of the user's own declares (odex/plugins.py: its module is imported). None for
    a part of the user's own without one: then its signature says which keys it takes."""
    if not isinstance(node, dict):
        raise refuse(key, node, f"must be a config group: choose {group}=<name> (see conf/{group.split('.')[0]}/)")
    target = node.get("_target_")
    if target is None:
        raise refuse(f"{key}._target_", None, "every part names the class that builds it")
    if target in schema.by_target():
        return schema.by_target()[target]
    try:
        obj = plugins.locate(target)
    except LookupError as e:
        raise refuse(f"{key}._target_", target, f"{e}") from None
    cls = plugins.schema_of(obj)
    if cls is None:
        _check_signature(node, obj, key, where or _choice(choices, group.split(".")[0], target))
    return cls


def _check_signature(node: dict, obj, key: str, where: str) -> None:
    """A part of the user's own without a schema: every key is a parameter of its constructor (or
    function), unless it takes **kwargs. Hydra's own keys (_target_, _partial_, ...) aside."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return          # a builtin without a readable signature: its own call says what is wrong
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name, value in node.items():
        if not name.startswith("_") and name not in known:
            raise refuse(f"{key}.{name}", value, f"{where} has no key {name!r}{_suggest(name, known)}; "
                                                 f"its keys: {', '.join(known)}")


def _searchpath(cfg) -> list:
    """hydra.searchpath of the composed config (with its hydra node), or of the running Hydra job."""
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        return list(OmegaConf.select(cfg, "hydra.searchpath", default=None) or [])
    return list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []     # none: the Python API


def validate(cfg, choices: dict | None = None) -> None:
    """Check every key of the composed config `cfg` (a DictConfig or dict, `hydra` node ignored)
    against odex/schema.py, then every combination of the chosen parts. Raises one `ConfigError`
    (`<full.key>=<value>: <what is allowed>`) at the first problem. Touches nothing on disk and
    imports no torch (a part of the user's own is imported to read its schema: odex/plugins.py)."""
    plugins.on_path(plugins.folders(_searchpath(cfg)))      # the user's own parts' .py, beside their YAMLs
    if isinstance(cfg, DictConfig):
        tree = {}
        for name in (n for n in cfg if n != "hydra"):
            try:
                node = cfg[name]
                tree[name] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            except Exception as e:  # noqa: BLE001 -- an interpolation that does not resolve
                key = getattr(e, "full_key", None) or name
                raise ConfigError(f"{key}: {' '.join(str(e).split())}") from None
    else:
        tree = {k: v for k, v in dict(cfg).items() if k != "hydra"}
    if choices is None:         # outside a Hydra run (a test, the Python API): none
        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    choices = dict(choices)

    for name, value in tree.items():
        if name not in schema.TOP_LEVEL:
            hint = _suggest(name, schema.TOP_LEVEL)
            raise refuse(name, value, f"not a key odex reads{hint}; odex's config groups: "
                                      f"{', '.join(schema.TOP_LEVEL)}")
    required = ("dataset", "model", "solver", "grad", "objective", "optim", "trainer", "logger")
    for name in required:
        if tree.get(name) is None:
            raise refuse(name, None, f"choose one of conf/{name}/")

    parts: dict[str, Any] = {}
    for group in required:
        node = tree[group]
        cls = _schema_for(group, node, group, choices)
        parts[group] = cls
        if cls is not None:
            check_node(node, cls, group, _choice(choices, group, node["_target_"]))

    sched = tree.get("schedule")
    if not isinstance(sched, dict):
        raise refuse("schedule", sched, "choose one of conf/schedule/")
    for name, value in sched.items():
        if name not in ("interval", "scheduler"):
            raise refuse(f"schedule.{name}", value, f"not a key of schedule{_suggest(name, ['interval', 'scheduler'])}; "
                                                    "its keys: interval, scheduler")
    check_value(sched.get("interval"), Literal["epoch", "step"], "schedule.interval")
    if sched.get("scheduler") is not None:
        cls = _schema_for("schedule.scheduler", sched["scheduler"], "schedule.scheduler", {})
        if cls is not None:
            check_node(sched["scheduler"], cls, "schedule.scheduler", _choice(choices, "schedule", ""))
        parts["schedule.scheduler"] = cls

    # eval=[] (or ~eval) leaves nothing to measure a run by: refused rather than a run without test/acc
    if not tree.get("eval"):
        raise refuse("eval", [], f"choose at least one of conf/eval/: {', '.join(_groups().get('eval', []))} "
                                 "(eval=clean, or eval=[clean,pgd] for several)")

    for group in ("eval", "callbacks"):
        entries = {} if tree.get(group) is None else tree[group]
        if not isinstance(entries, dict):
            raise refuse(group, entries, f"choose entries of conf/{group}/: {group}=[a,b]")
        for name, node in entries.items():
            key = f"{group}.{name}"
            if node is None:
                continue
            if isinstance(node, dict) and "_target_" not in node:
                if name not in (ours := _groups().get(group, [])):
                    raise refuse(f"{key}._target_", None, f"{group}.{name} is not one of conf/{group}/ "
                                 f"({', '.join(ours)}){_suggest(name, ours)}; an entry of your own needs a _target_")
                continue       # an experiment's settings for an entry the command line left out (not built)
            cls = _schema_for(group, node, key, {}, f"{group}={name}")
            if cls is not None:
                check_node(node, cls, key, f"{group}={name}")
            parts[key] = cls

    _cross_checks(tree, parts, choices)


def _torch_checkpoint(path) -> bool:
    """Whether `path` is a file torch.save wrote (its zip format: an archive holding data.pkl), read
    without torch, so a wrong or truncated file is refused before a run folder or W&B run exists.
    Whether its weights fit the model is known only once the model is built."""
    try:
        with zipfile.ZipFile(Path(path).expanduser()) as z:
            return any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _part_problems(tree: dict, parts: dict) -> None:
    """Ask every part whose schema has rules of its own (`problems(node, ctx)`, odex/schema.py)
    and raise the first problem as the one-line error, named by its full key."""
    data_cls, grad_cls = parts.get("dataset"), parts.get("grad")
    data = data_cls.data_shape(tree["dataset"]) if data_cls is not None else None
    for key, cls in parts.items():
        rules = getattr(cls, "problems", None)
        if rules is None:
            continue
        node = functools.reduce(dict.get, key.split("."), tree)      # eval.pgd: tree["eval"]["pgd"]
        ctx = schema.Context(data=data, solver=tree["solver"], key=key,
                             grad=grad_cls.supports if grad_cls is not None else None)
        for p in rules(node, ctx):
            raise refuse(f"{key}.{p.key}" if p.key else key, p.value, p.allowed)


def _part_of(group: str, name: str):
    """The schema of odex's choice conf/<group>/<name>.yaml, by its `_target_` (following the
    YAML's defaults list to the choice it extends); None for a choice without one."""
    node = _conf(group, name)
    if "_target_" not in node:
        bases = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        return _part_of(group, bases[0]) if bases else None
    return schema.by_target().get(node["_target_"])


def _conf(group: str, name: str) -> dict:
    """odex's choice conf/<group>/<name>.yaml, as written there."""
    return yaml.safe_load((Path(config_dir()) / group / f"{name}.yaml").read_text()) or {}


def _choices_where(group: str, test) -> str:
    """Advice named from the parts' declarations: odex's choices of `group` whose schema passes
    `test`, as `a, b or c`."""
    names = [n for n in _groups().get(group, []) if (cls := _part_of(group, n)) is not None and test(cls)]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _use_instead(needs) -> str:
    """What satisfies `needs` (an objective's or evaluator's): its own words, else the models and
    gradient methods whose declarations have every flag it asks."""
    if needs.use_instead:
        return needs.use_instead
    models = _choices_where("model", lambda c: all(getattr(c.traits, f) for f in needs.model)).replace(", ", "|")
    grads = _choices_where("grad", lambda c: all(getattr(c.supports, f) for f in needs.grad)).replace(", ", "|")
    return f"model={models.replace(' or ', '|')}" + (f" with grad={grads.replace(' or ', '|')}" if needs.grad else "")


def _cross_checks(tree: dict, parts: dict, choices: dict) -> None:
    """Values that are fine alone but not together, and the combinations of parts that cannot work,
    each asked of what the parts declare (odex/schema.py)."""
    ds, solver, trainer = tree["dataset"], tree["solver"], tree["trainer"]
    model_cls, grad_cls, obj_cls = parts["model"], parts["grad"], parts["objective"]
    c = lambda g: _choice(choices, g, tree[g]["_target_"])          # noqa: E731

    method = solver.get("method")
    fixed = schema.is_fixed_step(method)
    # each part's own rules (a schema's `problems`): the solver's step, an evaluation's solver,
    # sizes against the dataset's shape, torch's own argument rules, file names, ...
    _part_problems(tree, parts)
    device, init_from = trainer.get("device"), trainer.get("init_from")
    if parts["trainer"] is not None:
        if isinstance(device, str) and not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise refuse("trainer.device", device, "must be auto, cpu, cuda or cuda:N")
        if isinstance(init_from, str) and not Path(init_from).expanduser().is_file():
            raise refuse("trainer.init_from", init_from, "no such file (an odex checkpoint, e.g. "
                                                         "<run folder>/checkpoints/last.pt)")
        if isinstance(init_from, str) and not _torch_checkpoint(init_from):
            raise refuse("trainer.init_from", init_from, "not a checkpoint torch saved (odex writes "
                                                         "<run folder>/checkpoints/last.pt)")
    model = tree["model"]      # (a preset must be one of the model's: its schema's rules, odex/schema.py)
    # eval=pgd: something to attack
    pgd = (tree.get("eval") or {}).get("pgd")
    if parts.get("eval.pgd") is not None:
        if pgd.get("linf") is None and pgd.get("l2") is None:
            raise refuse("eval.pgd.l2", None, "with eval.pgd.linf null too, eval=pgd attacks nothing")
        losses = [pgd["losses"]] if isinstance(pgd.get("losses"), str) else list(pgd.get("losses") or [])
        if len(set(losses)) < len(losses):
            raise refuse("eval.pgd.losses", losses, "must name each loss once (ce, dlr)")
        if (pgd.get("restarts") or 1) > 1 and pgd.get("random_start") is False:
            raise refuse("eval.pgd.restarts", pgd["restarts"], "> 1 needs eval.pgd.random_start=true "
                                                               "(else every restart is the same)")
    # attacks that clip to the pixel range [0, 1] (eval=autoattack, square, transfer): image data only
    for key, cls in parts.items():
        if key.startswith("eval.") and getattr(cls, "pixels", False) and parts["dataset"] is not None \
                and not parts["dataset"].images:
            raise refuse("eval", key.split(".", 1)[1],
                         f"attacks pixels in [0, 1]; {c('dataset')} holds vectors that are not in [0, 1] (use image data)")
    transfer = (tree.get("eval") or {}).get("transfer") or {}
    if parts.get("eval.transfer") is not None and sum(v is None for v in (transfer.get("solvers") or {}).values()) != 1:
        raise refuse("eval.transfer.solvers", transfer.get("solvers"), "needs exactly one setting that is null "
                                                                       "(the model's own solver)")
    for name, node in ((transfer.get("solvers") or {}).items() if parts.get("eval.transfer") is not None else ()):
        if node and schema.is_fixed_step(node.get("method", "dopri5")) and node.get("steps") is None \
                and node.get("step_size") is None:
            raise refuse(f"eval.transfer.solvers.{name}.steps", None,
                         f"method {node.get('method')} is fixed-step: set steps or step_size")
    sch = (tree.get("schedule") or {}).get("scheduler") or {}
    if sch.get("_target_") == "odex.optim.schedules.PiecewiseLinear":
        pts, fac = list(sch.get("points", [])), list(sch.get("factors", []))
        if pts[0] != 0 or pts[-1] != 1 or any(b <= a for a, b in zip(pts, pts[1:])):
            raise refuse("schedule.scheduler.points", pts, "must rise strictly from 0 to 1")
        if len(fac) != len(pts):
            raise refuse("schedule.scheduler.factors", fac, f"must have as many entries as points ({len(pts)})")
    if parts["dataset"] is not None and ds.get("augment") not in (False, None) and not parts["dataset"].images:
        raise refuse("dataset.augment", ds["augment"], f"random crops and flips need images; {c('dataset')} "
                                                       "has vectors: set dataset.augment=false")
    best = (tree.get("callbacks") or {}).get("best_checkpoint")
    if parts.get("callbacks.best_checkpoint") is not None and str(best.get("monitor", "")).startswith("val/") \
            and not ds.get("val_fraction"):
        raise refuse("callbacks.best_checkpoint.monitor", best["monitor"],
                     "needs a validation split: add dataset.val_fraction=0.1 (or monitor test/... values)")

    if model_cls is None or parts["dataset"] is None:
        return
    traits = model_cls.traits
    if traits.images and not parts["dataset"].images:
        raise refuse("model", c("model").split("=", 1)[1], f"needs image data; {c('dataset')} has vectors "
                     f"(use model={_choices_where('model', lambda m: not m.traits.images)})")
    # what the objective and the evaluators ask of the model and the gradient method
    asked = []
    if obj_cls is not None:
        asked.append(("objective", c("objective").split("=", 1)[1], obj_cls.needs))
    for key, cls in parts.items():
        if key.startswith("eval.") and cls is not None:
            asked.append(("eval", key.split(".", 1)[1], cls.needs))
    supports = grad_cls.supports if grad_cls is not None else None
    for group, name, needs in asked:
        for flag in needs.model:
            if not getattr(traits, flag):
                raise refuse(group, name, f"{needs.why}; {c('model')} does not have that "
                                          f"(use {_use_instead(needs)})")
        for flag in needs.grad:
            if supports is not None and traits.ode and not getattr(supports, flag):
                raise refuse("grad", c("grad").split("=", 1)[1],
                             f"{group}={name} {needs.why}, which {c('grad')} does not support "
                             f"(use {_use_instead(needs)})")
    if supports is None or not traits.ode:
        return
    g = c("grad")
    solves = obj_cls is None or obj_cls.solves_in_training
    if not supports.adaptive_solvers and not fixed:
        fixed_solvers = [n for n in _groups().get("solver", [])
                         if schema.is_fixed_step(_conf("solver", n).get("method"))]
        raise refuse("grad", g.split("=", 1)[1], f"{g} recomputes a fixed-step solve, but solver.method={method} "
                     f"is adaptive: use solver={', '.join(fixed_solvers[:-1])} or {fixed_solvers[-1]} with solver.steps=N")
    if traits.tuple_state and not supports.tuple_states:
        raise refuse("grad", g.split("=", 1)[1], f"{g} takes a tensor state, and {c('model')}'s state is a tuple: "
                     f"use grad={_choices_where('grad', lambda m: m.supports.tuple_states)}")
    if traits.field_batchnorm and not supports.train_batchnorm:
        raise refuse("grad", g.split("=", 1)[1], f"{g} is not valid with BatchNorm in training mode inside "
                     f"{c('model')}'s vector field: use grad={_choices_where('grad', lambda m: m.supports.train_batchnorm)}")
    if solves and model_cls.random_field(model) and not (supports.random_field and fixed):
        raise refuse("model.dropout", model.get("dropout"),
                     f"makes {c('model')}'s vector field random in training, which needs a fixed-step solver "
                     f"with grad=direct (solver=rk4 grad=direct), or model.dropout=0.0")
    if trainer.get("cuda_graph") is True and str(device).startswith(("cpu", "mps")):
        raise refuse("trainer.cuda_graph", True, f"needs a CUDA device; trainer.device={device}")
    if trainer.get("cuda_graph") is True and not (supports.cuda_graph and fixed and solver.get("loop") == "odex"):
        raise refuse("trainer.cuda_graph", True, "needs a fixed-step solver (euler, midpoint, rk4, ...) with "
                                                 "solver.loop=odex and grad=direct")


# ---------------------------------------------------------------------------------------------
# The command line: compose as Hydra will, validate, and answer a mistake with one line (exit 2)
# before Hydra creates a run folder and before torch is imported.

USAGE_ERROR = 2      # the shell's status for a usage error


@functools.lru_cache(maxsize=16)
def _compose(config_name: str, overrides: tuple[str, ...]):
    """Hydra's composition, as `odex-train` will do it (read-only use: cached per override list,
    since finding the override to blame composes the same prefixes again)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def _groups() -> dict[str, list[str]]:
    """odex's config groups and their choices, from conf/ (eval, callbacks: several at once)."""
    root = Path(config_dir())
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(root.iterdir())
            if d.is_dir() and d.name != "hydra" and not d.name.startswith((".", "_"))}


def _node_at(cfg, dotted: str):
    """The deepest existing node on the path `dotted`, its key, and the first missing part."""
    node, done = cfg, []
    for part in dotted.split("."):
        if OmegaConf.is_dict(node) and part in node:
            node, done = node[part], done + [part]
        else:
            return node, ".".join(done), part
    return node, ".".join(done), None


def _explain(override, previous: list[str], config_name: str, error: Exception) -> ConfigError:
    """One line for the override that Hydra could not compose."""
    key = override.get_key_element()
    bare = key.lstrip("+~")
    text = override.input_line
    value = text.split("=", 1)[1] if "=" in text else ""
    groups = _groups()
    hydra_msg = " ".join(str(error).split())
    if bare.startswith("hydra"):
        return ConfigError(f"{text}: {hydra_msg}")
    if "@" not in bare and "." not in bare and "/" not in bare:
        if bare in groups:                       # a group choice that does not exist
            values = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
            wrong = [v for v in values if v not in groups[bare]] or values
            return ConfigError(f"{bare}={value}: {bare} must be one of {', '.join(groups[bare])}"
                               f"{_suggest(wrong[0], groups[bare]) if wrong else ''}")
        known = sorted(set(groups) | set(schema.TOP_LEVEL))
        return ConfigError(f"{bare}={value}: not a key odex reads{_suggest(bare, known)}; "
                           f"odex's config groups: {', '.join(g for g in known if g != 'sweep')}")
    try:
        cfg = _compose(config_name, tuple(previous))
    except Exception:  # noqa: BLE001
        return ConfigError(f"{text}: {hydra_msg}")
    group = bare.split(".")[0]
    if group not in cfg and group not in groups:
        return ConfigError(f"{bare}={value}: not a key odex reads{_suggest(group, schema.TOP_LEVEL)}")
    node, found, missing = _node_at(cfg, bare)
    if missing is not None and found in ("eval", "callbacks") and missing in groups.get(found, []):
        chosen = list(node.keys()) if OmegaConf.is_dict(node) else []
        return ConfigError(f"{bare}={value}: {found}.{missing} exists only when chosen: add "
                           f"{found}=[{','.join([*map(str, chosen), missing])}]")
    if missing is not None and node is None and group in groups and found != group:
        choice = cfg.hydra.runtime.choices.get(group)
        return ConfigError(f"{bare}={value}: {found} is null with {group}={choice}: choose another {group} "
                           f"first ({', '.join(c for c in groups[group] if c != choice)})")
    if missing is not None and OmegaConf.is_dict(node):
        keys = [k for k in node.keys() if not str(k).startswith("_")]
        choice = cfg.hydra.runtime.choices.get(found) if found in groups else None
        where = f"{found}={choice}" if choice else found or "the config"
        return ConfigError(f"{bare}={value}: {where} has no key {missing!r}{_suggest(missing, keys)}; "
                           f"its keys: {', '.join(map(str, keys))}")
    if missing is not None:
        return ConfigError(f"{bare}={value}: {found}={show(OmegaConf.to_container(node) if OmegaConf.is_config(node) else node)} "
                           f"is not a mapping, so it has no key {missing!r}")
    if key.startswith("+"):
        return ConfigError(f"{text}: {bare} exists already: set it without the +")
    return ConfigError(f"{text}: {hydra_msg}")


def _first_bad_override(config_name: str, overrides: list[str], error: Exception) -> ConfigError:
    """Compose with more and more of the overrides until it fails: that one is to blame."""
    for i, (text, parsed) in enumerate(zip(overrides, _parse_all(overrides))):
        if parsed.is_sweep_override():      # eval=clean,pgd without -m: a single run composes a sweep value
            key, _, value = text.partition("=")
            return ConfigError(f"{text}: a comma-separated value is a sweep: use -m (one job per value), "
                               f"or {key}=[{value}] for a list")
        try:
            if i == len(overrides) - 1:
                raise error            # all before it composed: this one is to blame
            _compose(config_name, tuple(overrides[: i + 1]))
        except Exception as e:  # noqa: BLE001
            try:
                return _explain(parsed, overrides[:i], config_name, e)
            except Exception:  # noqa: BLE001 -- explaining must not turn into a traceback
                return ConfigError(f"{text}: {' '.join(str(e).split())[:300]}")
    return ConfigError(" ".join(str(error).split()))


def _grammar_error(text: str, error: Exception) -> ConfigError:
    """An override Hydra's grammar cannot read (`optim.lr=1e-3,`): one line naming it, and how
    sweeps, lists and text with commas are written."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    first = first.split(" expecting ")[0][:160]
    key = text.split("=", 1)[0] if "=" in text else text
    return ConfigError(f"{text}: Hydra cannot read this override ({first}); write a sweep as {key}=a,b "
                       f"(with -m), a list as {key}=[a,b], text with commas in quotes: {key}='a,b'")


def _parse_all(overrides: list[str]) -> list:
    """Every override read by Hydra's grammar, or the one-line error for the first it cannot read."""
    parser, parsed = OverridesParser.create(), []
    for text in overrides:
        try:
            parsed.append(parser.parse_override(text))
        except Exception as e:  # noqa: BLE001 -- Hydra's grammar errors have several types
            raise _grammar_error(text, e) from None
    return parsed


def _compose_multirun(config_name: str, overrides: list[str]):
    """The config Hydra composes before a multirun's first job (for its own settings: sweeper,
    launcher, sweep folder): every swept group at its default, every other override applied."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config(
            config_name=config_name, overrides=list(overrides), run_mode=RunMode.MULTIRUN,
            from_shell=True, with_log_configuration=False)


def _explain_multirun(config_name: str, overrides: list[str], parsed: list, error: Exception) -> ConfigError:
    """Why Hydra cannot compose a multirun's settings though its jobs compose: a key that only the
    swept choices of a group have (`-m model=heavy_ball,pixel_node model.preset=tiny`: Hydra first
    composes model=augmented, the default, which has no preset). `++key=value` sets it in every job
    and adds it where it is missing."""
    message = " ".join(str(error).split())
    swept_groups = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    for i, o in enumerate(parsed):
        if o.is_sweep_override() or "." not in o.get_key_element():
            continue
        rest = overrides[:i] + overrides[i + 1:]
        try:
            _compose_multirun(config_name, rest)
        except Exception:  # noqa: BLE001 -- not this one
            continue
        key = o.get_key_element().lstrip("+~")
        group = key.split(".")[0]
        if group in swept_groups:
            default = _compose(config_name, ()).hydra.runtime.choices.get(group)
            return ConfigError(f"{o.input_line}: a multirun is first composed with {group}={default} (the "
                               f"default, before the sweep over {group}), which has no key "
                               f"{key.split('.', 1)[1]!r}: write ++{key}={o.input_line.split('=', 1)[1]} "
                               "(set in every job, added where missing)")
        return ConfigError(f"{o.input_line}: {message}")
    return ConfigError(message)


def check_output_folder(key: str, path) -> None:
    """A folder odex is to make or write into (hydra.run.dir, hydra.sweep.dir, odex-eval's out_dir,
    odex-report's --out): not a file, and a folder can be made there. Probes with a temporary
    folder in the nearest existing parent, removed at once (os.access says yes to root everywhere,
    /proc included); an existing folder is only looked at."""
    p = Path(os.path.expanduser(str(path)))
    if p.exists() and not p.is_dir():
        raise refuse(key, str(path), "is a file, not a folder")
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise refuse(key, str(path), f"{anc} is a file, so no folder can be made inside it")
    if anc == p:          # an existing folder (an earlier run's, perhaps): looked at, never written
        # a finished run there is reported as done without writing (odex.train.run), so only a
        # folder holding no run is refused here
        if not os.access(p, os.W_OK | os.X_OK) and not (p / "summary.json").is_file():
            raise refuse(key, str(path), "is a folder you cannot write: choose another")
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".odex-probe-", dir=anc))
    except OSError as e:
        raise refuse(key, str(path), f"cannot make a folder in {anc} ({e.strerror or e}): "
                                     "choose a folder you can write") from None


def check_hydra(cfg, multirun: bool) -> None:
    """Hydra's own settings odex's runs depend on, before Hydra acts on them: the output folder,
    and in a multirun the launcher's and the sweeper's values (odex/schema.py HYDRA_TARGETS; their
    keys and types Hydra's structured configs already check at composition)."""
    folder_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    # None for an interpolation only Hydra's run resolves: checked when made
    folder = OmegaConf.select(cfg, folder_key, throw_on_resolution_failure=False)
    if folder is not None:
        check_output_folder(folder_key, folder)
    if not multirun:
        return
    for node_key, table in schema.HYDRA_TARGETS.items():
        node = OmegaConf.select(cfg, node_key)
        cls = table.get(str(node.get("_target_"))) if node is not None else None
        known = schema.schema_fields(cls) if cls is not None else {}
        for name in (n for n in known if n in node):
            try:
                value = OmegaConf.to_container(node, resolve=True)[name]
            except Exception:  # noqa: BLE001 -- an interpolation of the sweep folder: not a range
                continue
            check_value(value, known[name], f"{node_key}.{name}")


def check_environment(cfg) -> None:
    """What this machine must offer for the values chosen, asked before a run folder or W&B run
    exists (else the run fails seconds later, its folder made): CUDA for trainer.device=cuda[:N]
    and torch.compile's backend for trainer.compile=<name> (torch is imported for those questions
    only), a W&B key for logger.mode=online."""
    device = OmegaConf.select(cfg, "trainer.device", default=None)
    if isinstance(device, str) and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise refuse("trainer.device", device, "CUDA is not available here: use trainer.device=auto or cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise refuse("trainer.device", device, f"this machine has {torch.cuda.device_count()} CUDA "
                                                   f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    backend = OmegaConf.select(cfg, "trainer.compile", default=None)
    if isinstance(backend, str) and backend.lower() not in ("", "none", "false", "eager", "true", "auto", "inductor"):
        from odex.training.fast_paths import FastPaths     # torch's backends, asked as the run will ask them
        FastPaths(compile=backend)
    mode = OmegaConf.select(cfg, "logger.mode", throw_on_resolution_failure=False)   # None: only a run resolves it
    if mode == "online":
        from odex.tracking.tracker import _netrc_has_wandb
        if not (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()):
            raise refuse("logger.mode", "online", "needs a W&B API key: run `wandb login` or set WANDB_API_KEY "
                                                  "(or keep the default offline mode and `odex-sync <folder>` later)")


def _plus_keys(overrides: list[str]) -> None:
    """`+group.key=value` adds a key odex's parts do not read (its class would be given an
    argument it does not take, or the key silently ignored): refused."""
    for text in overrides:
        key, _, value = text.partition("=")
        if key.startswith("+") and not key.startswith("++"):
            bare = key.lstrip("+")
            parts = bare.split(".")
            if parts[0] in ("eval", "callbacks") and len(parts) >= 3 and parts[1] not in _groups().get(parts[0], []):
                continue      # a new named entry of a list-valued group (a class of your own): allowed
            if "." in bare and parts[0] in schema.TOP_LEVEL:
                raise ConfigError(f"{text}: adds a key that {parts[0]} does not have; "
                                  "drop the + to set an existing key")


def check_composed(config_name: str, overrides: list[str], *, validate_too: bool = True):
    """Compose like Hydra and validate; returns the composed config or raises `ConfigError`."""
    _plus_keys(overrides)
    try:
        cfg = _compose(config_name, tuple(overrides))
    except Exception as e:  # noqa: BLE001 -- any composition error: find the override to blame
        raise _first_bad_override(config_name, overrides, e) from None
    if validate_too:
        validate(cfg, dict(cfg.hydra.runtime.choices))
    return cfg


def help_groups() -> str:
    """The groups of `odex-train --help` (conf/hydra/help/odex.yaml): each group of conf/ with its
    choices, the default starred (from conf/train.yaml's defaults list), and Hydra's launchers (odex's
    own in conf/hydra/launcher/ and those the installed plugins register). Internal folders such as
    dataset/shared are no choice and are not listed."""
    root = Path(config_dir())
    entries = yaml.safe_load((root / "train.yaml").read_text()).get("defaults", [])
    defaults = {str(k): v for entry in entries if isinstance(entry, dict) for k, v in entry.items()}
    rows = {g: [f"{c}*" if c == defaults.get(g) else c for c in choices] for g, choices in _groups().items()}
    launchers = {p.stem for p in (root / "hydra" / "launcher").glob("*.yaml")}
    try:
        launchers |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list("hydra/launcher")}
    except Exception:  # noqa: BLE001 -- plugins not loaded: odex's own launchers only
        pass
    launchers.discard("basic")
    rows["hydra/launcher"] = ["basic* (one job after another)", *sorted(launchers)]
    width = max(map(len, rows)) + 2
    return "\n".join(textwrap.fill(", ".join(choices), 100, initial_indent=f"  {g:<{width}}",
                                   subsequent_indent=" " * (width + 2)) for g, choices in rows.items())


def preflight(argv: list[str]) -> list[str]:
    """The torch-free first stage of `odex-train`: parse the command line as Hydra does, compose
    and validate. A mistake ends here with one stderr line and exit status 2, before Hydra creates
    a run folder. Returns the arguments to hand to Hydra (the same ones)."""
    args, _ = get_args_parser().parse_known_args(argv)
    if not OmegaConf.has_resolver("odex_help_groups"):     # --help's page lists conf/'s groups through it
        OmegaConf.register_new_resolver("odex_help_groups", help_groups)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_dir \
            or args.config_path or args.experimental_rerun:
        return argv
    config_name = args.config_name or "train"
    overrides = list(args.overrides)
    try:
        parsed = _parse_all(overrides)
        if not args.multirun:
            cfg = check_composed(config_name, overrides)
            if str(cfg.hydra.get("mode")) != "RunMode.MULTIRUN":
                if args.cfg is None:
                    check_hydra(cfg, multirun=False)
                    check_environment(cfg)
                return argv
        # a multirun: every job must compose (Hydra would stop the whole sweep at the first that
        # does not); the jobs' values are validated per job, each failing alone (recorded in its
        # folder, the sweep goes on), unless no job at all is valid: then nothing is started.
        for o in parsed:
            if o.is_sweep_override() and o.is_hydra_override():
                raise ConfigError(f"{o.input_line}: Hydra does not sweep its own settings (hydra.*): one "
                                  "value per multirun")
        _plus_keys(overrides)
        try:        # the basic sweeper's jobs: the cartesian product of the sweep overrides
            jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        except Exception:  # noqa: BLE001 -- another sweeper's syntax (Optuna's interval(...)): per job
            jobs = None
        if jobs is not None:
            job0 = check_composed(config_name, jobs[0], validate_too=False)   # the first job's own mistake first
            if args.cfg is None:
                check_environment(job0)
        try:
            master = _compose_multirun(config_name, overrides)
        except Exception as e:  # noqa: BLE001 -- Hydra would stop here with its raw message
            raise _explain_multirun(config_name, overrides, parsed, e) from None
        if args.cfg is None:
            check_hydra(master, multirun=True)
        if jobs is None:
            return argv
        if job0.hydra.sweeper.get("params") or "BasicSweeper" not in str(job0.hydra.sweeper.get("_target_")):
            return argv          # the sweeper (a sweep config, Optuna) chooses the values: checked per job
        first_error, valid = None, 0
        for job in jobs[:1000]:
            cfg = check_composed(config_name, job, validate_too=False)
            try:
                validate(cfg, dict(cfg.hydra.runtime.choices))
                valid += 1
            except ConfigError as e:
                first_error = first_error or e
        if valid == 0 and first_error is not None:
            raise first_error
    except ConfigError as e:
        print(f"odex: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_ERROR) from None
    except Exception:  # noqa: BLE001 -- a case this stage does not know: Hydra composes, each job validates
        logging.getLogger("odex").debug("preflight skipped", exc_info=True)
        return argv
    return argv

