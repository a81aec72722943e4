"""What every config key may hold: one typed schema per `_target_`, and what each part supports.

Read by the validation stage (odex/config.py: `validate`) after Hydra composed the config and before
anything is built; this module must not import torch. Why plain dataclasses rather than Hydra
structured configs: docs/design-notes.md, "odex/schema.py".
"""
from __future__ import annotations

import functools
import math
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from odex.ode import tableau      # plain Python, no torch


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
        below = self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo)
        above = self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi)
        return math.isfinite(x) and not below and not above

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        return "" if self.hi is None else f"{'<' if self.hi_open else '<='} {_num(self.hi)}"


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

    @staticmethod
    def parse(value) -> float | None:
        """The radius `value` stands for, or None if it is none: the one parser, of validation and
        of the attacks (odex.evaluate.evaluators.parse_eps)."""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            num, _, den = str(value).partition("/")
            r = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            return None
        return r if math.isfinite(r) and r >= 0 else None


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
    use_instead: str = ""             # advice in words; "" = the models and methods that have the flags (odex.config)


# ---------------------------------------------------------------------------------------------
# Schemas, by group. A field's annotation is its type; Annotated[..., Range] its range; Literal its
# choices. A key's value is stated once, in its YAML: a part's YAML states every field of its schema
# (so `--cfg job` shows every value a run gets), and a field has no default here, which could only
# disagree with it (several YAMLs share one schema: five solvers, heavy_ball and ghbnode).
# tests/test_configs.py checks both ways. kw_only: a field without a default may follow a
# base class's `_target_`.
dataclass = functools.partial(dataclass, kw_only=True)

Activation = Literal["relu", "softplus", "tanh", "elu"]


@dataclass
class Augment:
    padding: NonNegInt
    flip: bool
    pad_mode: Literal["constant", "reflect"]


@dataclass
class DatasetCommon:
    _target_: str = ""
    batch_size: PosInt
    eval_batch_size: PosInt
    val_fraction: Annotated[float, UNIT_OPEN_RIGHT]
    limit_train: Optional[PosInt]
    limit_test: Optional[PosInt]
    split_seed: NonNegInt
    augment: Union[bool, Augment]
    images: ClassVar[bool] = True
    size: ClassVar[tuple[int, int] | None] = None     # (train, test) examples before limits
    shape: ClassVar[tuple[int, ...]] = (1, 28, 28)    # one example: (C, H, W), or (d,) for vectors
    classes: ClassVar[int] = 10

    @classmethod
    def data_shape(cls, node: dict) -> "DataShape":
        """What the models see of this dataset (a model's rules ask it before any data is read)."""
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
    root: str
    download: bool


@dataclass
class Mnist(VisionDataset):
    _target_: str = "odex.data.vision.mnist"
    size: ClassVar = (60000, 10000)


@dataclass
class FashionMnist(Mnist):
    _target_: str = "odex.data.vision.fashion_mnist"


@dataclass
class Cifar(VisionDataset):
    _target_: str = "odex.data.vision.cifar10"
    size: ClassVar = (50000, 10000)
    shape: ClassVar = (3, 32, 32)


@dataclass
class Cifar100(Cifar):
    _target_: str = "odex.data.vision.cifar100"
    classes: ClassVar = 100


@dataclass
class Svhn(VisionDataset):
    _target_: str = "odex.data.vision.svhn"
    size: ClassVar = (73257, 26032)
    shape: ClassVar = (3, 32, 32)


@dataclass
class MnistT10k(VisionDataset):
    _target_: str = "odex.data.vision.mnist_t10k"
    train_size: Annotated[int, Range(1, 9999)]            # the rest of the 10,000 is the test split

    @classmethod
    def train_examples(cls, node: dict) -> int | None:
        return node.get("train_size")


@dataclass
class Digits(DatasetCommon):
    _target_: str = "odex.data.digits.digits"
    test_fraction: Annotated[float, UNIT_OPEN]
    shape: ClassVar = (1, 8, 8)


@dataclass
class Spheres(DatasetCommon):
    _target_: str = "odex.data.spheres.spheres"
    dim: PosInt
    n_train: PosInt
    n_test: PosInt
    inner_radius: PosFloat
    outer_range: Annotated[list[PosFloat], Length(2, 2)]
    seed: NonNegInt
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
        """Class 0 fills the ball of radius inner_radius, class 1 the shell outer_range[0]..[1]: the
        two must not touch, or the labels contradict each other (Dupont et al.'s r1 < r2 <= r3)."""
        yield from super().problems(node, ctx)
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
    normalize: bool


@dataclass
class AugmentedNODE(Model):
    _target_: str = "odex.models.augmented.AugmentedNODE"
    channels: PosInt
    hidden: PosInt
    augment_dim: NonNegInt
    time_dependent: bool
    activation: Activation
    downsample: Optional[NonNegInt]
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
    _target_: str = "odex.models.cpl.CPLNetwork"
    size: Literal["tiny", "S", "M", "L", "XL"]
    conv_layers: Optional[NonNegInt]
    dense_layers: Optional[NonNegInt]
    channels: Optional[PosInt]
    dense_width: Optional[PosInt]
    conv_inner: PosInt
    last: Literal["trunc", "lln"]
    norm_input: bool
    train_iters: PosInt
    eval_iters: PosInt
    eps: PosFloat
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
    dim: Optional[PosInt]
    hidden: Optional[PosInt]
    augment_dim: Optional[NonNegInt]
    xi: Optional[PosFloat]
    root: Optional[Literal["softplus", "sigmoid"]]
    beta1_logit: Optional[float]
    beta2_logit: Optional[float]


@dataclass
class PixelModel(Model):
    preset: Optional[str]
    presets: Optional[dict[str, MomentumPreset]]
    hidden: Optional[PosInt]
    activation: Activation
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
        row = {k: v for k, v in (presets.get(preset) or {}).items() if v is not None}
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
    _target_: str = "odex.models.momentum.PixelNODE"
    augment_dim: Optional[NonNegInt]
    preset_keys: ClassVar = ("augment_dim", "hidden")
    state_grows: ClassVar = True


@dataclass
class HeavyBallNODE(PixelModel):
    _target_: str = "odex.models.momentum.HeavyBallNODE"
    dim: Optional[PosInt]
    sigma: Optional[Activation]
    xi: Optional[PosFloat]
    gamma_logit: float
    preset_keys: ClassVar = ("dim", "hidden", "xi", "sigma")


@dataclass
class AdamNODE(PixelModel):
    _target_: str = "odex.models.momentum.AdamNODE"
    dim: Optional[PosInt]
    root: Optional[Literal["softplus", "sigmoid"]]
    beta1_logit: Optional[float]
    beta2_logit: Optional[float]
    eps: PosFloat
    preset_keys: ClassVar = ("dim", "hidden", "root", "beta1_logit", "beta2_logit")


@dataclass
class GQImageNODE(Model):
    _target_: str = "odex.models.gq_image.GQImageNODE"
    width: PosInt
    state_channels: PosInt
    readout_hidden: PosInt
    traits: ClassVar = ModelTraits(images=True)


@dataclass
class GainUpdate:
    switch_epoch: NonNegInt
    low: Annotated[float, Range(0, 1)]
    high: Annotated[float, Range(0, 1)]
    down: Annotated[float, Range(0, 1, lo_open=True)]
    up: Annotated[float, Range(1)]
    min: PosFloat
    max: PosFloat


@dataclass
class LyaNet(Model):
    _target_: str = "odex.models.lyanet.LyaNet"
    encoder: Literal["resnet18", "small"]
    channels: PosInt
    hidden: PosInt
    dropout: Annotated[float, UNIT_OPEN_RIGHT]
    anchor: PosFloat
    gain: PosFloat
    trainable_gain: bool
    gain_update: Optional[GainUpdate]
    traits: ClassVar = ModelTraits(images=True, tuple_state=True, lyapunov_parts=True, logit_dynamics=True)

    @staticmethod
    def random_field(node: dict) -> bool:
        return (node.get("dropout") or 0) > 0


@dataclass
class ODEResNet(Model):
    _target_: str = "odex.models.ode_resnet.ODEResNet"
    width: PosFloat
    stages: Annotated[list[PosInt], Length(1)]
    traits: ClassVar = ModelTraits(images=True, field_batchnorm=True)


# solver and gradient methods -----------------------------------------------------------------

class SolverMethod:
    """The name of a solver: a tableau of odex/ode/tableau.py, one of the methods only torchdiffeq's
    loop steps, or the importable path <module>.<NAME> of a ButcherTableau of the user's own."""


def is_fixed_step(method) -> bool:
    """Whether `method` is a fixed-step solver (needs solver.steps or solver.step_size)."""
    return tableau.exists(method) and not tableau.is_adaptive(method)


Loop = Literal["torchdiffeq", "odex"]


@dataclass
class Solver:
    _target_: str = "odex.ode.solver.Solver"
    method: SolverMethod
    loop: Loop                        # how the steps are taken (odex/ode/loops/)
    rtol: Tol
    atol: Tol
    t1: PosFloat
    step_size: Optional[PosFloat]
    steps: Optional[PosInt]
    max_num_steps: Optional[PosInt]

    @staticmethod
    def problems(node: dict, ctx: Context):
        yield from solver_problems(node, "", "solver.")


def solver_problems(node: dict, rel: str, full: str, grad: GradSupports | None = None):
    """The rules of a solver node (conf/solver/, or an evaluation's solver merged into the model's):
    a fixed-step method needs its step, no larger than the interval [0, t1] (torchdiffeq's and
    odex's grids would silently cut it to one step of t1); odex's loop steps tableaux only; a
    gradient method that recomputes a fixed grid refuses an adaptive one. `rel`: the keys' prefix
    relative to the checked node, `full`: as the user writes them."""
    method, t1 = node.get("method"), node.get("t1", 1.0)
    if not tableau.exists(method):
        return
    fixed = is_fixed_step(method)
    if node.get("loop", "torchdiffeq") == "torchdiffeq" and method not in tableau.names():
        yield Problem(f"{rel}loop", "torchdiffeq", f"steps only torchdiffeq's own methods; {full}method={method} "
                                                   f"is a tableau of your own: set {full}loop=odex")
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
    _target_: str = "odex.ode.grad.Direct"
    supports: ClassVar = GradSupports(random_field=True, cuda_graph=True, backprop=True)


@dataclass
class Adjoint(Grad):
    _target_: str = "odex.ode.grad.Adjoint"
    rtol: Optional[Tol]
    atol: Optional[Tol]


@dataclass
class Seminorm(Adjoint):
    _target_: str = "odex.ode.grad.SeminormAdjoint"


@dataclass
class GaussLegendre(Grad):
    _target_: str = "odex.ode.grad.GaussLegendreAdjoint"
    c: PosFloat
    max_nodes: PosInt
    rtol: Optional[Tol]
    atol: Optional[Tol]
    supports: ClassVar = GradSupports(tuple_states=False, train_batchnorm=False)


@dataclass
class CheckpointedANODE(Grad):
    _target_: str = "odex.ode.grad.CheckpointedANODE"
    supports: ClassVar = GradSupports(adaptive_solvers=False)


# objectives ------------------------------------------------------------------------------------

@dataclass
class Objective:
    _target_: str = ""
    needs: ClassVar[Needs] = Needs()
    solves_in_training: ClassVar[bool] = True      # trains through the model's ODE solve


@dataclass
class CrossEntropy(Objective):
    _target_: str = "odex.objectives.classification.CrossEntropy"
    label_smoothing: Annotated[float, UNIT_OPEN_RIGHT]


@dataclass
class Margin(Objective):
    _target_: str = "odex.objectives.classification.Margin"
    margin: PosFloat


@dataclass
class LyapunovMC(Objective):
    _target_: str = "odex.objectives.lyapunov.LyapunovMC"
    kappa: Optional[NonNegFloat]
    samples: PosInt
    radius: Optional[PosFloat]
    needs: ClassVar = Needs(model=("logit_dynamics",), why="samples the logit space, so it needs a model "
                            "whose ODE state is the logits", use_instead="model=lyanet, or objective=lyanet_path")
    solves_in_training: ClassVar = False


@dataclass
class LyapunovPath(Objective):
    _target_: str = "odex.objectives.lyapunov.LyapunovPath"
    kappa: Optional[NonNegFloat]
    needs: ClassVar = Needs(model=("lyapunov_parts", "ode"), grad=("tuple_states",),
                            why="integrates the violation as an extra state component (a tuple state)")


# optimizers and schedules ----------------------------------------------------------------------

@dataclass
class Optim:
    _target_: str = ""
    _partial_: Literal[True] = True
    lr: NonNegFloat               # 0 is allowed: frozen weights (e.g. evaluating trainer.init_from)


@dataclass
class Adam(Optim):
    _target_: str = "torch.optim.Adam"
    weight_decay: NonNegFloat
    betas: Annotated[list[Annotated[float, UNIT_OPEN_RIGHT]], Length(2, 2)]
    eps: PosFloat
    amsgrad: bool


@dataclass
class SGD(Optim):
    _target_: str = "torch.optim.SGD"
    momentum: Annotated[float, UNIT_OPEN_RIGHT]
    weight_decay: NonNegFloat
    nesterov: bool
    dampening: Annotated[float, Range(0, 1)]

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
    _target_: str = "odex.optim.optimizers.nero"
    beta: Annotated[float, UNIT_OPEN_RIGHT]
    constrain: Literal["conv", "all", "none"]
    eps: PosFloat


@dataclass
class Scheduler:
    _target_: str = ""
    _partial_: Literal[True] = True


@dataclass
class CosineAnnealingLR(Scheduler):
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: PosInt
    eta_min: NonNegFloat


@dataclass
class MultiStepLR(Scheduler):
    _target_: str = "torch.optim.lr_scheduler.MultiStepLR"
    milestones: list[PosInt]
    gamma: Annotated[float, Range(0, 1, lo_open=True)]


@dataclass
class StepLR(Scheduler):
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: PosInt
    gamma: Annotated[float, Range(0, 1, lo_open=True)]


@dataclass
class PiecewiseLinear(Scheduler):
    _target_: str = "odex.optim.schedules.PiecewiseLinear"
    points: Annotated[list[Annotated[float, Range(0, 1)]], Length(2)]
    factors: Annotated[list[NonNegFloat], Length(2)]


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
    _target_: str = "odex.evaluate.evaluators.CleanAccuracy"


@dataclass
class Attack:
    eps: Radius
    alpha: Radius
    steps: PosInt


@dataclass
class EvalSolver:
    """Another solver for an evaluation (keys of conf/solver/; t1 belongs to the model)."""
    method: SolverMethod
    loop: Loop
    rtol: Tol
    atol: Tol
    step_size: Optional[PosFloat]
    steps: Optional[PosInt]
    max_num_steps: Optional[PosInt]


PgdLoss = Literal["ce", "dlr"]


@dataclass
class PGDAccuracy(Eval):
    _target_: str = "odex.evaluate.evaluators.PGDAccuracy"
    linf: Optional[Attack]
    l2: Optional[Attack]
    random_start: bool
    seed: NonNegInt
    every: Optional[PosInt]
    limit: Optional[PosInt]
    solver: Optional[EvalSolver]
    losses: Union[PgdLoss, Annotated[list[PgdLoss], Length(1)]]
    restarts: PosInt
    larger_radius: Optional[Annotated[float, Range(1, None, lo_open=True)]]
    zero_grad_share: Annotated[float, Range(0, 1)]


Norm = Literal["linf", "l2"]
AutoAttackName = Literal["apgd_ce", "apgd_t", "fab_t", "square"]


@dataclass
class SquareAccuracy(Eval):
    _target_: str = "odex.evaluate.autoattack.SquareAccuracy"
    norm: Norm
    eps: Radius
    queries: PosInt
    p_init: Annotated[float, Range(0, 1, lo_open=True)]
    limit: Optional[PosInt]
    seed: NonNegInt
    solver: Optional[EvalSolver]
    every: Optional[PosInt]
    masking_gap: Annotated[float, Range(0, 1)]
    pixels: ClassVar[bool] = True       # attacks pixels in [0, 1]: the dataset must hold images


@dataclass
class AutoAttackAccuracy(SquareAccuracy):
    _target_: str = "odex.evaluate.autoattack.AutoAttackAccuracy"
    attacks: Annotated[list[AutoAttackName], Length(1)]
    steps: PosInt
    targets: PosInt


@dataclass
class SolverTransfer(Eval):
    _target_: str = "odex.evaluate.transfer.SolverTransfer"
    solvers: dict[str, Optional[EvalSolver]]
    norm: Norm
    eps: Radius
    alpha: Radius
    steps: PosInt
    losses: Union[PgdLoss, Annotated[list[PgdLoss], Length(1)]]
    limit: Optional[PosInt]
    seed: NonNegInt
    gap: Annotated[float, Range(0, 1)]
    every: Optional[PosInt]
    pixels: ClassVar[bool] = True


@dataclass
class GradCheck(Eval):
    _target_: str = "odex.evaluate.grad_check.GradCheck"
    every: Optional[PosInt]
    examples: PosInt
    float64: bool
    threshold: PosFloat
    solver: Optional[EvalSolver]
    needs: ClassVar = Needs(model=("ode",), why="compares the ODE gradient method with direct backprop, so it "
                            "needs a model with ODE blocks")


@dataclass
class CertifiedAccuracy(Eval):
    _target_: str = "odex.evaluate.evaluators.CertifiedAccuracy"
    eps: Annotated[list[Radius], Length(1)]
    needs: ClassVar = Needs(model=("certificate",), why="needs a model with a Lipschitz certificate")


@dataclass
class InferenceDynamics(Eval):
    _target_: str = "odex.objectives.lyapunov.InferenceDynamics"
    kappa: Optional[NonNegFloat]
    times: PosInt
    solver: Optional[EvalSolver]
    needs: ClassVar = Needs(model=("lyapunov_parts",), why="solves the model's ODE from its initial state")


OWN_CHECKPOINTS = ("last.pt",)       # odex/training/resume.py's checkpoint_path, in <run>/checkpoints/


@dataclass
class BestCheckpoint:
    _target_: str = "odex.training.callbacks.BestCheckpoint"
    monitor: str
    mode: Literal["max", "min"]
    filename: str

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
        elif name.removesuffix(".tmp") in OWN_CHECKPOINTS:
            yield Problem("filename", name, f"is odex's own checkpoint ({', '.join(OWN_CHECKPOINTS)}, written "
                                            "every epoch): choose another name, e.g. best.pt")


@dataclass
class StochasticWeightAveraging:
    _target_: str = "odex.training.callbacks.StochasticWeightAveraging"
    after_epoch: NonNegInt
    lr_factor: PosFloat
    anneal_epochs: NonNegInt
    anneal_strategy: Literal["cos", "linear"]


@dataclass
class MedianPruning:
    _target_: str = "odex.sweep.pruning.MedianPruning"
    metric: str
    mode: Literal["max", "min"]
    replicate: str
    min_configs: PosInt
    warmup_epochs: PosInt


@dataclass
class FiniteCheck:
    _target_: str = "odex.training.debug.FiniteCheck"
    detect_anomaly: bool


@dataclass
class LossMustFall:
    _target_: str = "odex.training.debug.LossMustFall"
    fraction: Annotated[float, Range(0, 1, lo_open=True)]


@dataclass
class Profile:
    _target_: str = "odex.training.debug.Profile"
    steps: PosInt
    skip: NonNegInt
    rows: PosInt


# trainer and logger ----------------------------------------------------------------------------

@dataclass
class RunHealth:
    """trainer.health (odex/training/health.py)."""
    _target_: str = "odex.training.health.RunHealth"
    enabled: bool
    checks_per_epoch: PosInt
    check_every_s: PosFloat
    loss_factor: Annotated[float, Range(1, None, lo_open=True)]
    nfe_factor: Annotated[float, Range(1, None, lo_open=True)]
    epoch_budget_s: Optional[PosFloat]


@dataclass
class Trainer:
    _target_: str = "odex.training.trainer.Trainer"
    max_epochs: PosInt
    device: str                   # auto, cpu, cuda, cuda:N (odex.config's cross checks)
    seed: NonNegInt
    init_from: Optional[str]            # a checkpoint file (its existence: odex.config's cross checks)
    threads: Union[Literal["auto"], PosInt]
    eval_every: PosInt
    grad_clip: Optional[PosFloat]
    progress: Optional[bool]
    tf32: bool
    precision: Literal["fp32", "bf16"]
    compile: Union[bool, str, None]
    channels_last: bool
    cuda_graph: bool
    resume: Literal["never", "auto", "must"]
    health: Optional[RunHealth]


@dataclass
class NullSink:
    _target_: str = "odex.tracking.tracker.NullSink"


@dataclass
class WandbSink:
    _target_: str = "odex.tracking.tracker.WandbSink"
    mode: Optional[Literal["online", "offline", "disabled"]]
    project: str
    entity: Optional[str]
    group: Optional[str]
    job_type: str
    tags: Optional[list[str]]
    name: Optional[str]
    notes: Optional[str]

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
# Which schema a node follows, read off the classes' `_target_` defaults (strings: nothing is
# imported). A `_target_` no schema states is a part of the user's own (odex/plugins.py).


@functools.cache
def by_target() -> dict[str, type]:
    """`_target_` -> the schema dataclass of odex/schema.py that states it."""
    index: dict[str, type] = {}
    for obj in list(globals().values()):
        target = getattr(obj, "__dataclass_fields__", {}).get("_target_") if isinstance(obj, type) else None
        if target is None or not target.default:
            continue
        if target.default in index and index[target.default] is not obj:     # a subclass that forgot its own
            raise RuntimeError(f"odex.schema: {index[target.default].__name__} and {obj.__name__} both state "
                               f"_target_={target.default}")
        index[target.default] = obj
    return index


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
    # each class's own module resolves its string annotations (a plugin's schema names its imports)
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in fields(cls)}


__all__ = ["by_target", "TOP_LEVEL", "Range", "Radius", "SolverMethod", "Length", "GradSupports", "ModelTraits",
           "Needs", "schema_fields"]
