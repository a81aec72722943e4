"""What every config key may hold: one typed schema per `_target_`, and what each part supports.

Read by the validation stage (odex/config.py: `validate`), which runs after Hydra composed the
config and before anything is built, read or written. This module must not import torch (nor
anything that does): `odex-train` answers a bad override before torch is loaded.

Why plain dataclasses checked after composition rather than structured configs registered in
Hydra's ConfigStore (with typed fields that fail at composition)? Two reasons. OmegaConf 2.3's
structured configs have no Union types, and several keys need one: `dataset.augment` (false, true
or {padding, flip, pad_mode}), `trainer.compile` (a bool or a backend name), radii written as
`8/255` or 0.03. And a type error at composition happens in the launcher, before any job runs,
so one bad value of a swept key (`optim.lr=0.1,abc`) would abort the whole sweep instead of
failing its one job, which the sweep then records and goes past. Here each field's annotation is
the type, and `Annotated[..., Range(...)]` its allowed range, in one place.

Capabilities (no type tests on names anywhere): a gradient method's schema says what it supports
(adaptive solvers, tuple states, BatchNorm in training mode inside the field); a model's says
what it needs and offers (images, a tuple state, BatchNorm in its field, `lyapunov_parts`, a
logit-space dynamics, a certificate); an objective and an evaluator say what they ask of the model
and the gradient method. `combinations` asks them; the torch classes read the same declarations
(e.g. odex.ode.grad.anode refuses adaptive solvers) only as a second line of defence.
"""
from __future__ import annotations

import math
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Annotated, Any, ClassVar, Literal, Optional, Union


# ---------------------------------------------------------------------------------------------
# Ranges and readable type descriptions


@dataclass(frozen=True)
class Range:
    """lo <= x <= hi (or < when open); None: unbounded on that side."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        if self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi):
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        return " and ".join(parts)


def show_num(x) -> str:
    return "null" if x is None else _num(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


POS = Range(0, None, lo_open=True)
NONNEG = Range(0)
AT_LEAST_1 = Range(1)
UNIT_OPEN_RIGHT = Range(0, 1, hi_open=True)     # [0, 1)
UNIT_OPEN = Range(0, 1, lo_open=True, hi_open=True)

PosFloat = Annotated[float, POS]
NonNegFloat = Annotated[float, NONNEG]
PosInt = Annotated[int, AT_LEAST_1]
NonNegInt = Annotated[int, NONNEG]
Tol = Annotated[float, Range(0, 1, lo_open=True)]     # a solver tolerance


class Radius:
    """A radius written as a number or a fraction string such as `8/255` (>= 0, finite)."""


@dataclass(frozen=True)
class Length:
    lo: int = 0
    hi: int | None = None


# ---------------------------------------------------------------------------------------------
# Capabilities


@dataclass(frozen=True)
class GradSupports:
    adaptive_solvers: bool = True     # solvers whose steps depend on error estimates
    tuple_states: bool = True         # a state that is a tuple of tensors (LyaNet, lyanet_path's (h, q))
    train_batchnorm: bool = True      # BatchNorm in training mode inside the vector field
    random_field: bool = False        # a field that differs between calls (dropout): only a plain backprop
    cuda_graph: bool = False          # trainer.cuda_graph=true (one static graph of the whole step)
    backprop: bool = False            # gradients are plain backprop through the solve's torch operations, so
                                      # any loop made of torch operations (odex's sync-free grid) serves it


@dataclass(frozen=True)
class ModelTraits:
    images: bool = False              # needs image data (C x H x W)
    tuple_state: bool = False         # the ODE state is a tuple of tensors
    field_batchnorm: bool = False     # BatchNorm inside the vector field
    lyapunov_parts: bool = False      # exposes state and readout (objective=lyanet_path, eval=dynamics)
    logit_dynamics: bool = False      # the ODE state is the logits (objective=lyanet_mc)
    certificate: bool = False         # a Lipschitz certificate (eval=certified)
    ode: bool = True                  # has ODE blocks (solver and grad apply)


@dataclass(frozen=True)
class DataShape:
    """What a dataset choice gives a model, known before any data is read."""
    shape: tuple[int, ...]        # one example: (C, H, W) for images, (d,) for vectors
    classes: int
    images: bool


@dataclass(frozen=True)
class Context:
    """What a part's own rules (`problems`) may ask of the rest of the run."""
    data: DataShape | None        # None: a dataset of the user's own (no schema)
    solver: dict                  # the model's solver (conf/solver/): an evaluation's solver changes it
    grad: "GradSupports | None"   # what the gradient method supports (None: a method of the user's own)
    key: str = ""                 # the full key of the node being checked (eval.pgd), for messages


@dataclass(frozen=True)
class Problem:
    """A value a part's rules refuse: `key` relative to the part's node ("" = the choice itself),
    and what is allowed. A schema class may define `problems(node, ctx)` yielding these: rules
    that need more than one key, or the dataset's shape, checked before anything is built."""
    key: str
    value: Any
    allowed: str


@dataclass(frozen=True)
class Needs:
    """What an objective or an evaluator asks of the model and of the gradient method."""
    model: tuple[str, ...] = ()       # ModelTraits flags that must be true
    grad: tuple[str, ...] = ()        # GradSupports flags that must be true
    why: str = ""
    use_instead: str = ""


# ---------------------------------------------------------------------------------------------
# Schemas, by group. A field's annotation is its type; Annotated[..., Range] its range; Literal its
# choices. Defaults are irrelevant (the YAML holds them) but dataclasses need one: MISSING-free.

Activation = Literal["relu", "softplus", "tanh", "elu"]


@dataclass
class Augment:
    padding: NonNegInt = 4
    flip: bool = True
    pad_mode: Literal["constant", "reflect"] = "constant"


@dataclass
class DatasetCommon:
    _target_: str = ""
    batch_size: PosInt = 128
    eval_batch_size: PosInt = 1000
    val_fraction: Annotated[float, UNIT_OPEN_RIGHT] = 0.0
    limit_train: Optional[PosInt] = None
    limit_test: Optional[PosInt] = None
    split_seed: NonNegInt = 0
    augment: Union[bool, Augment] = False
    images: ClassVar[bool] = True
    size: ClassVar[tuple[int, int] | None] = None     # (train, test) examples before limits
    shape: ClassVar[tuple[int, ...]] = (1, 28, 28)    # one example: (C, H, W), or (d,) for vectors
    classes: ClassVar[int] = 10

    @classmethod
    def data_shape(cls, node: dict) -> "DataShape":
        """What the models see of this dataset (issue 27: a model's rules ask it before any data is read)."""
        return DataShape(tuple(cls.shape), cls.classes, cls.images)

    @classmethod
    def train_examples(cls, node: dict) -> int | None:
        """Training examples before the validation part is held out (None: known only once read)."""
        return cls.size[0] if cls.size else None

    @classmethod
    def problems(cls, node: dict, ctx: "Context"):
        """odex/data/bundle.py holds out max(1, round(val_fraction n)) examples for validation:
        at least one must be left to train on."""
        n, fraction = cls.train_examples(node), node.get("val_fraction") or 0
        if n is not None and fraction > 0 and n - max(1, int(round(fraction * n))) < 1:
            yield Problem("val_fraction", fraction, f"leaves no training example of the {n}: lower it")


@dataclass
class VisionDataset(DatasetCommon):
    root: str = "data"
    download: bool = False


@dataclass
class Mnist(VisionDataset):
    size: ClassVar = (60000, 10000)


@dataclass
class Cifar(VisionDataset):
    size: ClassVar = (50000, 10000)
    shape: ClassVar = (3, 32, 32)


@dataclass
class Cifar100(Cifar):
    classes: ClassVar = 100


@dataclass
class Svhn(VisionDataset):
    size: ClassVar = (73257, 26032)
    shape: ClassVar = (3, 32, 32)


@dataclass
class MnistT10k(VisionDataset):
    train_size: Annotated[int, Range(1, 9999)] = 8000     # the rest of the 10,000 is the test split

    @classmethod
    def train_examples(cls, node: dict) -> int | None:
        return node.get("train_size")


@dataclass
class Digits(DatasetCommon):
    test_fraction: Annotated[float, UNIT_OPEN] = 0.2
    shape: ClassVar = (1, 8, 8)


@dataclass
class Spheres(DatasetCommon):
    dim: PosInt = 2
    n_train: PosInt = 2000
    n_test: PosInt = 1000
    inner_radius: PosFloat = 0.5
    outer_range: Annotated[list[PosFloat], Length(2, 2)] = field(default_factory=lambda: [1.0, 1.5])
    seed: NonNegInt = 0
    images: ClassVar[bool] = False
    classes: ClassVar = 2

    @classmethod
    def data_shape(cls, node: dict) -> "DataShape":
        return DataShape((node["dim"],), cls.classes, False)

    @classmethod
    def train_examples(cls, node: dict) -> int | None:
        return node.get("n_train")

    @classmethod
    def problems(cls, node: dict, ctx: "Context"):
        yield from super().problems(node, ctx)
        yield from cls.geometry(node)

    @staticmethod
    def geometry(node: dict):
        """Class 0 fills the ball of radius inner_radius, class 1 the shell outer_range[0]..[1]: the
        two must not touch, or the labels contradict each other (Dupont et al.'s r1 < r2 <= r3)."""
        lo, hi = node["outer_range"]
        if hi < lo:
            yield Problem("outer_range", [lo, hi], "must be [r2, r3] with r2 <= r3")
        if node["inner_radius"] >= lo:
            yield Problem("inner_radius", node["inner_radius"],
                          f"must be < dataset.outer_range[0]={lo}: the inner ball (class 0) and the shell "
                          "(class 1) would overlap")


# models ----------------------------------------------------------------------------------------

@dataclass
class ModelBase:
    _target_: str = ""
    traits: ClassVar[ModelTraits] = ModelTraits()

    @staticmethod
    def random_field(node: dict) -> bool:
        """Whether the vector field is random in training (dropout), so that a solve needs the
        same field at every call only a fixed grid with grad=direct gives."""
        return False


@dataclass
class Model(ModelBase):
    normalize: bool = True


@dataclass
class AugmentedNODE(Model):
    channels: PosInt = 16
    hidden: PosInt = 32
    augment_dim: NonNegInt = 4
    time_dependent: bool = True
    activation: Activation = "relu"
    downsample: Optional[NonNegInt] = None
    traits: ClassVar = ModelTraits(lyapunov_parts=True)


# the CPL network's sizes (Meunier et al.'s S, M, L, XL and a tiny one); odex/models/cpl.py builds them
CPL_SIZES = {
    "tiny": dict(conv_layers=2, dense_layers=1, channels=8, dense_width=64),
    "S": dict(conv_layers=20, dense_layers=7, channels=45, dense_width=2048),
    "M": dict(conv_layers=30, dense_layers=10, channels=60, dense_width=2048),
    "L": dict(conv_layers=50, dense_layers=10, channels=90, dense_width=2048),
    "XL": dict(conv_layers=70, dense_layers=15, channels=120, dense_width=2048),
}


@dataclass
class CPLNetwork(ModelBase):
    size: Literal["tiny", "S", "M", "L", "XL"] = "S"
    conv_layers: Optional[NonNegInt] = None
    dense_layers: Optional[NonNegInt] = None
    channels: Optional[PosInt] = None
    dense_width: Optional[PosInt] = None
    conv_inner: PosInt = 5
    last: Literal["trunc", "lln"] = "trunc"
    norm_input: bool = False
    train_iters: PosInt = 1
    eval_iters: PosInt = 100
    eps: PosFloat = 1e-4
    traits: ClassVar = ModelTraits(images=True, certificate=True, ode=False)

    @staticmethod
    def problems(node: dict, ctx: Context):
        """The shapes odex/models/cpl.py builds: channels padded up from the input's, 4x4 average
        pooling, and the `trunc` head's first K features as the K logits."""
        if ctx.data is None or not ctx.data.images:
            return
        c, h, w = ctx.data.shape
        preset = CPL_SIZES[node["size"]]
        channels = node.get("channels") or preset["channels"]
        where = "channels" if node.get("channels") else "size"
        if channels < c:
            yield Problem(where, node.get(where), f"gives {channels} channels, fewer than the input's {c}: "
                                                  "set model.channels >= that")
        if h < 4 or w < 4:
            yield Problem("", "cpl", f"pools 4x4: images of {h}x{w} pixels are too small")
            return
        features = channels * (h // 4) * (w // 4)
        if node.get("last") == "trunc" and features < ctx.data.classes:
            yield Problem("last", "trunc", f"needs at least {ctx.data.classes} features (one per class); "
                                           f"the network has {features}: more model.channels, or model.last=lln")


@dataclass
class MomentumPreset:
    dim: Optional[PosInt] = None
    hidden: Optional[PosInt] = None
    augment_dim: Optional[NonNegInt] = None
    xi: Optional[PosFloat] = None
    root: Optional[Literal["softplus", "sigmoid"]] = None
    beta1_logit: Optional[float] = None
    beta2_logit: Optional[float] = None


@dataclass
class PixelModel(Model):
    preset: Optional[str] = None
    presets: Optional[dict[str, MomentumPreset]] = None
    hidden: Optional[PosInt] = None
    activation: Activation = "relu"
    traits: ClassVar = ModelTraits(images=True)
    preset_keys: ClassVar[tuple[str, ...]] = ("hidden",)     # what a preset row may set (momentum.from_preset)
    state_grows: ClassVar[bool] = False      # the state is the input plus augment_dim channels (else `dim`)

    @classmethod
    def problems(cls, node: dict, ctx: Context):
        """The size a preset row and the explicit keys give (explicit keys win), as
        odex/models/momentum.py's from_preset reads them."""
        preset, presets = node.get("preset"), node.get("presets") or {}
        if preset is not None and preset not in presets:
            yield Problem("preset", preset, f"must be one of {', '.join(presets) or '(no presets defined)'}")
            return
        row = presets.get(preset) or {} if preset is not None else {}
        row = {k: v for k, v in row.items() if v is not None}
        unknown = sorted(set(row) - set(cls.preset_keys))
        if unknown:
            yield Problem(f"presets.{preset}", row, f"sets {', '.join(unknown)}, which this model does not take; "
                                                    f"a row may set {', '.join(cls.preset_keys)}")
        size = {k: node.get(k) if node.get(k) is not None else row.get(k) for k in cls.preset_keys}
        for k in ("dim", "augment_dim", "hidden"):
            if k in size and size[k] is None:
                yield Problem(k, None, f"is not set: give it or choose a model.preset that sets it "
                                       f"({', '.join(presets) or 'none defined'})")
                return
        if ctx.data is not None and ctx.data.images and not cls.state_grows and size["dim"] < ctx.data.shape[0]:
            yield Problem("dim", size["dim"], f"must be >= the input's {ctx.data.shape[0]} channels "
                                              "(h(0) starts with the input itself)")


@dataclass
class PixelNODE(PixelModel):
    augment_dim: Optional[NonNegInt] = None
    preset_keys: ClassVar = ("augment_dim", "hidden")
    state_grows: ClassVar = True


@dataclass
class HeavyBallNODE(PixelModel):
    dim: Optional[PosInt] = None
    sigma: Optional[Activation] = None
    xi: Optional[PosFloat] = None
    gamma_logit: float = -3.0
    preset_keys: ClassVar = ("dim", "hidden", "xi", "sigma")


@dataclass
class AdamNODE(PixelModel):
    dim: Optional[PosInt] = None
    root: Optional[Literal["softplus", "sigmoid"]] = None
    beta1_logit: Optional[float] = None
    beta2_logit: Optional[float] = None
    eps: PosFloat = 1e-8
    preset_keys: ClassVar = ("dim", "hidden", "root", "beta1_logit", "beta2_logit")


@dataclass
class GQImageNODE(Model):
    width: PosInt = 50
    state_channels: PosInt = 10
    readout_hidden: PosInt = 50
    traits: ClassVar = ModelTraits(images=True)


@dataclass
class GainUpdate:
    switch_epoch: NonNegInt = 60
    low: Annotated[float, Range(0, 1)] = 0.7
    high: Annotated[float, Range(0, 1)] = 0.1
    down: Annotated[float, Range(0, 1, lo_open=True)] = 0.9999
    up: Annotated[float, Range(1)] = 1.0001
    min: PosFloat = 1.0
    max: PosFloat = 100.0


@dataclass
class LyaNet(Model):
    encoder: Literal["resnet18", "small"] = "resnet18"
    channels: PosInt = 32
    hidden: PosInt = 128
    dropout: Annotated[float, UNIT_OPEN_RIGHT] = 0.5
    anchor: PosFloat = 15.0
    gain: PosFloat = 100.0
    trainable_gain: bool = False
    gain_update: Optional[GainUpdate] = None
    traits: ClassVar = ModelTraits(images=True, tuple_state=True, lyapunov_parts=True, logit_dynamics=True)

    @staticmethod
    def random_field(node: dict) -> bool:
        return (node.get("dropout") or 0) > 0


@dataclass
class ODEResNet(Model):
    width: PosFloat = 1.0
    stages: Annotated[list[PosInt], Length(1)] = field(default_factory=lambda: [64, 128, 256, 512])
    traits: ClassVar = ModelTraits(images=True, field_batchnorm=True)


# solver and gradient methods -----------------------------------------------------------------

class SolverMethod:
    """The name of a solver: a tableau of odex/ode/tableau.py (built-in or registered), or one of
    the methods only torchdiffeq's loop steps."""


def is_fixed_step(method) -> bool:
    """Whether `method` is a fixed-step solver (needs solver.steps or solver.step_size)."""
    from odex.ode import tableau      # plain Python, no torch
    return method in tableau.names() and not tableau.is_adaptive(method)


Loop = Literal["torchdiffeq", "odex"]


@dataclass
class Solver:
    _target_: str = ""
    method: SolverMethod = "dopri5"
    loop: Loop = "torchdiffeq"        # how the steps are taken (odex/ode/loops/)
    rtol: Tol = 1e-3
    atol: Tol = 1e-3
    t1: PosFloat = 1.0
    step_size: Optional[PosFloat] = None
    steps: Optional[PosInt] = None
    max_num_steps: Optional[PosInt] = 1000

    @staticmethod
    def problems(node: dict, ctx: Context):
        yield from solver_problems(node, "", "solver.")


def solver_problems(node: dict, rel: str, full: str, grad: GradSupports | None = None):
    """The rules of a solver node (conf/solver/, or an evaluation's solver merged into the model's):
    a fixed-step method needs its step, no larger than the interval [0, t1] (torchdiffeq's and
    odex's grids would silently cut it to one step of t1); odex's loop steps tableaux only; a
    gradient method that recomputes a fixed grid refuses an adaptive one. `rel`: the keys' prefix
    relative to the checked node, `full`: as the user writes them."""
    from odex.ode import tableau      # plain Python, no torch

    method, t1 = node.get("method"), node.get("t1", 1.0)
    if method not in tableau.names():
        return
    fixed = is_fixed_step(method)
    if node.get("loop") == "odex" and method in tableau.TORCHDIFFEQ_ONLY:
        yield Problem(f"{rel}loop", "odex", f"steps Runge-Kutta tableaux; {full}method={method} is a multistep "
                                            "method only solver.loop=torchdiffeq steps")
    if fixed and node.get("steps") is None and node.get("step_size") is None:
        yield Problem(f"{rel}steps", None, f"{full}method={method} is fixed-step: set {full}steps=N "
                                           f"or {full}step_size=h")
    elif fixed and node.get("steps") is None and node["step_size"] > t1:
        yield Problem(f"{rel}step_size", node["step_size"],
                      f"must be <= the integration interval t1 - t0 = {_num(t1)} (a larger step would be "
                      f"cut to one step of {_num(t1)} without a word); for one step write {full}steps=1")
    if grad is not None and not grad.adaptive_solvers and not fixed:
        yield Problem(f"{rel}method", method, "is adaptive, and the gradient method recomputes a fixed-step "
                                              f"solve: choose euler, midpoint, rk4, ... with {full}steps=N")


@dataclass
class Grad:
    _target_: str = ""
    supports: ClassVar[GradSupports] = GradSupports()


@dataclass
class Direct(Grad):
    supports: ClassVar = GradSupports(random_field=True, cuda_graph=True, backprop=True)


@dataclass
class Adjoint(Grad):
    rtol: Optional[Tol] = None
    atol: Optional[Tol] = None


@dataclass
class GaussLegendre(Grad):
    c: PosFloat = 0.1
    max_nodes: PosInt = 64
    rtol: Optional[Tol] = None
    atol: Optional[Tol] = None
    supports: ClassVar = GradSupports(tuple_states=False, train_batchnorm=False)


@dataclass
class CheckpointedANODE(Grad):
    supports: ClassVar = GradSupports(adaptive_solvers=False)


# objectives ------------------------------------------------------------------------------------

@dataclass
class Objective:
    _target_: str = ""
    needs: ClassVar[Needs] = Needs()
    solves_in_training: ClassVar[bool] = True      # trains through the model's ODE solve


@dataclass
class CrossEntropy(Objective):
    label_smoothing: Annotated[float, UNIT_OPEN_RIGHT] = 0.0


@dataclass
class Margin(Objective):
    margin: PosFloat = 0.7


@dataclass
class LyapunovMC(Objective):
    kappa: Optional[NonNegFloat] = None
    samples: PosInt = 512
    radius: Optional[PosFloat] = None
    needs: ClassVar = Needs(model=("logit_dynamics",), why="samples the logit space, so it needs a model "
                            "whose ODE state is the logits", use_instead="model=lyanet, or objective=lyanet_path")
    solves_in_training: ClassVar = False


@dataclass
class LyapunovPath(Objective):
    kappa: Optional[NonNegFloat] = None
    needs: ClassVar = Needs(model=("lyapunov_parts", "ode"), grad=("tuple_states",),
                            why="integrates the violation as an extra state component (a tuple state)",
                            use_instead="model=lyanet|augmented|node with grad=direct|adjoint|seminorm|anode")


# optimizers and schedules ----------------------------------------------------------------------

@dataclass
class Optim:
    _target_: str = ""
    _partial_: Literal[True] = True
    lr: NonNegFloat = 1e-3        # 0 is allowed: frozen weights (e.g. evaluating trainer.init_from)


@dataclass
class Adam(Optim):
    weight_decay: NonNegFloat = 0.0
    betas: Annotated[list[Annotated[float, UNIT_OPEN_RIGHT]], Length(2, 2)] = field(default_factory=lambda: [0.9, 0.999])
    eps: PosFloat = 1e-8
    amsgrad: bool = False


@dataclass
class SGD(Optim):
    momentum: Annotated[float, UNIT_OPEN_RIGHT] = 0.0
    weight_decay: NonNegFloat = 0.0
    nesterov: bool = False
    dampening: Annotated[float, Range(0, 1)] = 0.0

    @staticmethod
    def problems(node: dict, ctx: Context):
        """torch.optim.SGD's own rule, before anything is built."""
        if node.get("nesterov") and not node.get("momentum"):
            yield Problem("nesterov", True, f"needs optim.momentum > 0 (here {show_num(node.get('momentum'))}), "
                                            "e.g. optim.momentum=0.9")
        if node.get("nesterov") and node.get("dampening"):
            yield Problem("nesterov", True, f"needs optim.dampening=0 (here {show_num(node.get('dampening'))})")


@dataclass
class Nero(Optim):
    beta: Annotated[float, UNIT_OPEN_RIGHT] = 0.999
    constrain: Literal["conv", "all", "none"] = "conv"
    eps: PosFloat = 1e-8


@dataclass
class Scheduler:
    _target_: str = ""
    _partial_: Literal[True] = True


@dataclass
class CosineAnnealingLR(Scheduler):
    T_max: PosInt = 10
    eta_min: NonNegFloat = 0.0


@dataclass
class MultiStepLR(Scheduler):
    milestones: list[PosInt] = field(default_factory=list)
    gamma: Annotated[float, Range(0, 1, lo_open=True)] = 0.1


@dataclass
class StepLR(Scheduler):
    step_size: PosInt = 30
    gamma: Annotated[float, Range(0, 1, lo_open=True)] = 0.1


@dataclass
class PiecewiseLinear(Scheduler):
    points: Annotated[list[Annotated[float, Range(0, 1)]], Length(2)] = field(default_factory=list)
    factors: Annotated[list[NonNegFloat], Length(2)] = field(default_factory=list)


# evaluators and callbacks ----------------------------------------------------------------------

@dataclass
class Eval:
    _target_: str = ""
    needs: ClassVar[Needs] = Needs()

    @staticmethod
    def problems(node: dict, ctx: Context):
        """An evaluation's own solver (eval.<name>.solver) changes the model's (t1 stays): the
        result follows the same rules as the model's solver, and suits its gradient method."""
        if isinstance(node.get("solver"), dict) and node["solver"]:
            merged = {**ctx.solver, **node["solver"]}
            yield from solver_problems(merged, "solver.", f"{ctx.key}.solver.", ctx.grad)


@dataclass
class CleanAccuracy(Eval):
    pass


@dataclass
class Attack:
    eps: Radius = 0.0
    alpha: Radius = 0.0
    steps: PosInt = 10


@dataclass
class EvalSolver:
    """Another solver for an evaluation (keys of conf/solver/; t1 belongs to the model)."""
    method: SolverMethod = "dopri5"
    loop: Loop = "torchdiffeq"
    rtol: Tol = 1e-3
    atol: Tol = 1e-3
    step_size: Optional[PosFloat] = None
    steps: Optional[PosInt] = None
    max_num_steps: Optional[PosInt] = 1000


PgdLoss = Literal["ce", "dlr"]


@dataclass
class PGDAccuracy(Eval):
    linf: Optional[Attack] = None
    l2: Optional[Attack] = None
    random_start: bool = True
    seed: NonNegInt = 0
    every: Optional[PosInt] = None
    limit: Optional[PosInt] = None
    solver: Optional[EvalSolver] = None
    losses: Union[PgdLoss, Annotated[list[PgdLoss], Length(1)]] = field(default_factory=lambda: ["ce", "dlr"])
    restarts: PosInt = 1
    larger_radius: Optional[Annotated[float, Range(1, None, lo_open=True)]] = 2.0
    zero_grad_share: Annotated[float, Range(0, 1)] = 0.1


Norm = Literal["linf", "l2"]
AutoAttackName = Literal["apgd_ce", "apgd_t", "fab_t", "square"]


@dataclass
class SquareAccuracy(Eval):
    norm: Norm = "linf"
    eps: Radius = "8/255"
    queries: PosInt = 5000
    p_init: Annotated[float, Range(0, 1, lo_open=True)] = 0.8
    limit: Optional[PosInt] = 1000
    seed: NonNegInt = 0
    solver: Optional[EvalSolver] = None
    every: Optional[PosInt] = None
    masking_gap: Annotated[float, Range(0, 1)] = 0.03
    pixels: ClassVar[bool] = True       # attacks pixels in [0, 1]: the dataset must hold images


@dataclass
class AutoAttackAccuracy(SquareAccuracy):
    attacks: Annotated[list[AutoAttackName], Length(1)] = field(default_factory=lambda: ["apgd_ce", "apgd_t", "fab_t", "square"])
    steps: PosInt = 100
    targets: PosInt = 9


@dataclass
class SolverTransfer(Eval):
    solvers: dict[str, Optional[EvalSolver]] = field(default_factory=dict)
    norm: Norm = "linf"
    eps: Radius = "8/255"
    alpha: Radius = "2/255"
    steps: PosInt = 10
    losses: Union[PgdLoss, Annotated[list[PgdLoss], Length(1)]] = field(default_factory=lambda: ["ce", "dlr"])
    limit: Optional[PosInt] = 500
    seed: NonNegInt = 0
    gap: Annotated[float, Range(0, 1)] = 0.05
    every: Optional[PosInt] = None
    pixels: ClassVar[bool] = True


@dataclass
class GradCheck(Eval):
    every: Optional[PosInt] = 1
    examples: PosInt = 64
    float64: bool = False
    threshold: PosFloat = 1e-2
    solver: Optional[EvalSolver] = None
    needs: ClassVar = Needs(model=("ode",), why="compares the ODE gradient method with direct backprop, so it "
                            "needs a model with ODE blocks", use_instead="an ODE model: model=augmented, node, ...")


@dataclass
class CertifiedAccuracy(Eval):
    eps: Annotated[list[Radius], Length(1)] = field(default_factory=list)
    needs: ClassVar = Needs(model=("certificate",), why="needs a model with a Lipschitz certificate",
                            use_instead="model=cpl")


@dataclass
class InferenceDynamics(Eval):
    kappa: Optional[NonNegFloat] = None
    times: PosInt = 10
    solver: Optional[EvalSolver] = None
    needs: ClassVar = Needs(model=("lyapunov_parts",), why="solves the model's ODE from its initial state",
                            use_instead="model=lyanet|augmented|node")


OWN_CHECKPOINTS = ("last.pt",)       # odex/training/resume.py's checkpoint_path, in <run>/checkpoints/


@dataclass
class BestCheckpoint:
    _target_: str = ""
    monitor: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    filename: str = "best.pt"

    @staticmethod
    def problems(node: dict, ctx: Context):
        """The file goes into the run's checkpoints/ folder beside odex's own last.pt (and its
        .tmp while written): a plain file name, not one of those."""
        split = str(node.get("monitor", "")).partition("/")[0]
        if split not in ("train", "val", "test") or "/" not in str(node.get("monitor", "")):
            yield Problem("monitor", node.get("monitor"), "must be an epoch metric <split>/<name>, split train, val "
                                                          "or test (val/acc, val/loss, test/acc, train/loss, ...)")
        name = str(node.get("filename"))
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            yield Problem("filename", name, "must be a plain file name (it is written into the run's "
                                            "checkpoints/ folder), e.g. best.pt")
        elif name in OWN_CHECKPOINTS or any(name == f"{n}.tmp" for n in OWN_CHECKPOINTS):
            yield Problem("filename", name, f"is odex's own checkpoint ({', '.join(OWN_CHECKPOINTS)}, written "
                                            "every epoch): choose another name, e.g. best.pt")


@dataclass
class StochasticWeightAveraging:
    _target_: str = ""
    after_epoch: NonNegInt = 60
    lr_factor: PosFloat = 0.1
    anneal_epochs: NonNegInt = 10
    anneal_strategy: Literal["cos", "linear"] = "cos"


@dataclass
class MedianPruning:
    _target_: str = ""
    metric: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    replicate: str = "trainer.seed"
    min_configs: PosInt = 3
    warmup_epochs: PosInt = 1


@dataclass
class FiniteCheck:
    _target_: str = ""
    detect_anomaly: bool = True


@dataclass
class LossMustFall:
    _target_: str = ""
    fraction: Annotated[float, Range(0, 1, lo_open=True)] = 0.5


@dataclass
class Profile:
    _target_: str = ""
    steps: PosInt = 5
    skip: NonNegInt = 1
    rows: PosInt = 25


# trainer and logger ----------------------------------------------------------------------------

@dataclass
class RunHealth:
    """trainer.health (odex/training/health.py)."""
    _target_: str = ""
    enabled: bool = True
    checks_per_epoch: PosInt = 8
    check_every_s: PosFloat = 10.0
    loss_factor: Annotated[float, Range(1, None, lo_open=True)] = 100.0
    nfe_factor: Annotated[float, Range(1, None, lo_open=True)] = 10.0
    epoch_budget_s: Optional[PosFloat] = None


@dataclass
class Trainer:
    _target_: str = ""
    max_epochs: PosInt = 10
    device: str = "auto"          # auto, cpu, cuda, cuda:N (odex.config's cross checks)
    seed: NonNegInt = 0
    init_from: Optional[str] = None     # a checkpoint file (its existence: odex.config's cross checks)
    threads: Union[Literal["auto"], PosInt] = "auto"
    eval_every: PosInt = 1
    grad_clip: Optional[PosFloat] = None
    progress: Optional[bool] = None
    tf32: bool = True
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: Union[bool, str, None] = False
    channels_last: bool = False
    cuda_graph: bool = False
    resume: Literal["never", "auto", "must"] = "auto"
    health: Optional[RunHealth] = None


@dataclass
class NullSink:
    _target_: str = ""


@dataclass
class WandbSink:
    _target_: str = ""
    mode: Optional[Literal["online", "offline", "disabled"]] = "offline"
    project: str = "odex"
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: str = "train"
    tags: Optional[list[str]] = None
    name: Optional[str] = None
    notes: Optional[str] = None

    @staticmethod
    def problems(node: dict, ctx: Context):
        """W&B's project names: not empty, at most 128 characters, none of / \\ # ? % :"""
        for key in ("project", "entity"):
            value = node.get(key)
            if value is None and key != "project":
                continue
            text = str(value)
            if not text.strip() or len(text) > 128 or any(ch in text for ch in '/\\#?%:'):
                yield Problem(key, value, "must be a W&B name: 1 to 128 characters, none of / \\ # ? % :"
                                          + (" (or null)" if key != "project" else ""))


# ---------------------------------------------------------------------------------------------
# Which schema a node follows, by its `_target_` (a string: nothing is imported)

TARGETS: dict[str, dict[str, type]] = {
    "dataset": {
        "odex.data.vision.mnist": Mnist, "odex.data.vision.fashion_mnist": Mnist,
        "odex.data.vision.cifar10": Cifar, "odex.data.vision.cifar100": Cifar100,
        "odex.data.vision.svhn": Svhn, "odex.data.vision.mnist_t10k": MnistT10k,
        "odex.data.digits.digits": Digits, "odex.data.spheres.spheres": Spheres,
    },
    "model": {
        "odex.models.augmented.AugmentedNODE": AugmentedNODE, "odex.models.cpl.CPLNetwork": CPLNetwork,
        "odex.models.momentum.HeavyBallNODE": HeavyBallNODE, "odex.models.momentum.PixelNODE": PixelNODE,
        "odex.models.momentum.AdamNODE": AdamNODE, "odex.models.gq_image.GQImageNODE": GQImageNODE,
        "odex.models.lyanet.LyaNet": LyaNet, "odex.models.ode_resnet.ODEResNet": ODEResNet,
    },
    "solver": {"odex.ode.solver.Solver": Solver},
    "grad": {
        "odex.ode.grad.Direct": Direct, "odex.ode.grad.Adjoint": Adjoint, "odex.ode.grad.SeminormAdjoint": Adjoint,
        "odex.ode.grad.GaussLegendreAdjoint": GaussLegendre, "odex.ode.grad.CheckpointedANODE": CheckpointedANODE,
    },
    "objective": {
        "odex.objectives.classification.CrossEntropy": CrossEntropy, "odex.objectives.classification.Margin": Margin,
        "odex.objectives.lyapunov.LyapunovMC": LyapunovMC, "odex.objectives.lyapunov.LyapunovPath": LyapunovPath,
    },
    "optim": {"torch.optim.Adam": Adam, "torch.optim.SGD": SGD, "odex.optim.optimizers.nero": Nero},
    "schedule.scheduler": {
        "torch.optim.lr_scheduler.CosineAnnealingLR": CosineAnnealingLR,
        "torch.optim.lr_scheduler.MultiStepLR": MultiStepLR,
        "torch.optim.lr_scheduler.StepLR": StepLR,
        "odex.optim.schedules.PiecewiseLinear": PiecewiseLinear,
    },
    "eval": {
        "odex.evaluate.evaluators.CleanAccuracy": CleanAccuracy, "odex.evaluate.evaluators.PGDAccuracy": PGDAccuracy,
        "odex.evaluate.evaluators.CertifiedAccuracy": CertifiedAccuracy, "odex.objectives.lyapunov.InferenceDynamics": InferenceDynamics,
        "odex.evaluate.grad_check.GradCheck": GradCheck,
        "odex.evaluate.autoattack.AutoAttackAccuracy": AutoAttackAccuracy,
        "odex.evaluate.autoattack.SquareAccuracy": SquareAccuracy, "odex.evaluate.transfer.SolverTransfer": SolverTransfer,
    },
    "callbacks": {
        "odex.training.callbacks.BestCheckpoint": BestCheckpoint,
        "odex.training.callbacks.StochasticWeightAveraging": StochasticWeightAveraging,
        # conf/debug/ (debug=anomaly|overfit|profile)
        "odex.training.debug.FiniteCheck": FiniteCheck, "odex.training.debug.LossMustFall": LossMustFall,
        "odex.training.debug.Profile": Profile,
        "odex.sweep.pruning.MedianPruning": MedianPruning,     # conf/callbacks/prune.yaml, conf/sweep/
    },
    "trainer": {"odex.training.trainer.Trainer": Trainer},
    "logger": {"odex.tracking.tracker.NullSink": NullSink, "odex.tracking.tracker.WandbSink": WandbSink},
}

# Hydra's launchers and sweepers (hydra.launcher, hydra.sweeper): only the values whose range
# Hydra's own structured configs leave open and that fail deep inside a launch (joblib's
# "n_jobs == 0 has no meaning" after 31 lines). Checked by odex.config.check_hydra for a multirun.

NonZeroInt = Union[Annotated[int, Range(1)], Annotated[int, Range(None, -1)]]   # joblib: -1 = every CPU


@dataclass
class JoblibLauncher:
    n_jobs: NonZeroInt = -1
    batch_size: Union[Literal["auto"], PosInt] = "auto"
    timeout: Optional[PosFloat] = None
    verbose: NonNegInt = 0
    prefer: Optional[Literal["processes", "threads"]] = "processes"
    require: Optional[Literal["sharedmem"]] = None


@dataclass
class SubmititLauncher:
    timeout_min: PosInt = 60
    cpus_per_task: Optional[PosInt] = None
    gpus_per_node: Optional[NonNegInt] = None
    tasks_per_node: PosInt = 1
    mem_gb: Optional[NonNegInt] = None
    nodes: PosInt = 1


@dataclass
class SlurmLauncher(SubmititLauncher):
    array_parallelism: PosInt = 256
    max_num_timeout: NonNegInt = 0
    signal_delay_s: NonNegInt = 90


@dataclass
class BasicSweeper:
    max_batch_size: Optional[PosInt] = None


@dataclass
class OptunaSweeper:
    n_trials: PosInt = 20
    n_jobs: PosInt = 2
    max_failure_rate: Annotated[float, Range(0, 1)] = 0.0
    direction: Union[Literal["minimize", "maximize"], list[Literal["minimize", "maximize"]]] = "maximize"


HYDRA_TARGETS: dict[str, dict[str, type]] = {
    "hydra.launcher": {
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": JoblibLauncher,
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": SubmititLauncher,
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": SlurmLauncher,
    },
    "hydra.sweeper": {
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper": BasicSweeper,
        "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper": OptunaSweeper,
    },
}

# The top-level keys of odex's config (conf/train.yaml's groups); anything else is refused.
TOP_LEVEL = ("dataset", "model", "solver", "grad", "objective", "optim", "schedule", "eval",
             "callbacks", "trainer", "logger")


def schema_fields(cls: type) -> dict[str, Any]:
    """name -> annotation of a schema dataclass (ClassVars excluded, string annotations resolved)."""
    hints = typing.get_type_hints(cls, globalns=globals(), include_extras=True)
    return {f.name: hints[f.name] for f in fields(cls)}


__all__ = ["TARGETS", "TOP_LEVEL", "Range", "Radius", "SolverMethod", "Length", "GradSupports", "ModelTraits", "Needs",
           "schema_fields", "is_dataclass", "MISSING"]
