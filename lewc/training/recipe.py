"""The training recipe, defined once: presets, the config dataclass and the CLI flags.

Two presets (``--recipe``), each a table of per-dataset defaults; the preset's name is a field of
``TrainConfig``, so it is part of every checkpoint's identity and results of two presets never mix.
Where each value comes from, value by value, is in docs/recipes.md.

``quick`` (lewc's demo and test recipe; minutes on a CPU):

=================  ======  =====  ==========  =======  =============================================
dataset            epochs  lr     batch size  warm-up  why
=================  ======  =====  ==========  =======  =============================================
fashion-mnist      10      0.05   128         1 ep.    ~89% test accuracy for the MLP, minutes on CPU
mnist              10      0.05   128         1 ep.    same recipe as Fashion-MNIST
cifar10/cifar100   100     0.1    128         1 ep.    standard CIFAR ResNet/VGG budget, halved from 200
synthetic          3       0.05   64          1 ep.    tests only
=================  ======  =====  ==========  =======  =============================================

``paper`` (the best reconstruction of the paper's training, arXiv 2510.08023, from what it states:
SGD, momentum 0.9, weight decay 3e-3, a warm-up then a decaying rate; epochs and batch size follow
the co-author's earlier code, 100 epochs at batch 500; the learning rate and warm-up length are
guesses): every dataset 100 epochs, lr 0.1, batch 500, 1 warm-up epoch (synthetic: as ``quick``).

Both: SGD with momentum 0.9, weight decay 3e-3 (the paper's; the effect disappears at 1e-4), linear
warm-up over ``warmup_epochs`` then linear decay (per step) to zero; CIFAR gets a 4-pixel pad +
random crop and a horizontal flip, MNIST-likes no augmentation. The default dataset, normalisation,
base width and depth come from the model family's spec (``lewc.models.registry``).

``add_recipe_arguments`` declares the recipe's flags for every command that names a checkpoint
(``lewc.commands.train``, ``train_pair``, ``sweep``, ``study`` and ``lewc.verify``), and
``config_from_args`` turns them into a ``TrainConfig``: train and verify resolve the same name.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from lewc.core.conventions import N_CALIB
from lewc.core.errors import LewcError
from lewc.core.limits import LIMITS, MAX_COUNT  # noqa: F401  (MAX_COUNT: re-exported for the command lines)
from lewc.core.validate import short
from lewc.models import family_names, get_family, width_label
from lewc.models.common import NORMS
from lewc.training.data import dataset_names, get_dataset

SCHEDULES = {
    "linear": "linear warm-up, then linear decay (per step) to 0",
    "constant": "linear warm-up, then the peak rate to the end (the co-author's code keeps lr constant)",
}
INPUTS = {
    "standardized": "pixels/255 minus the dataset's mean, divided by its std",
    "raw": "pixels/255 in [0, 1], no standardisation (as neither reference says it standardises)",
}
# Fields added after the first release → their default; at the default they are not part of as_dict().
LATER_FIELDS = {"schedule": "linear", "inputs": "standardized", "precision": "fp32"}
PRECISIONS = {
    "fp32": "float32 throughout (the analysis's precision; bit-reproducible on the CPU)",
    "bf16": "bf16 autocast for the forward pass (the fast path on a GPU), float32 weights and loss",
}


@dataclass(frozen=True)
class DatasetRecipe:
    """A preset's training values for one dataset; the calibration split's size is the dataset's own
    (``DatasetSpec.n_calib``)."""

    epochs: int
    lr: float
    batch_size: int
    warmup_epochs: float = 1.0


_QUICK_SYNTHETIC = DatasetRecipe(3, 0.05, 64)
# A registered dataset without a row in a preset trains with the MNIST-like quick recipe.
FALLBACK_RECIPE = DatasetRecipe(10, 0.05, 128)
_PAPER = DatasetRecipe(100, 0.1, 500, warmup_epochs=1.0)
RECIPES: dict[str, dict[str, DatasetRecipe]] = {
    "quick": {
        "fashion-mnist": DatasetRecipe(10, 0.05, 128),
        "mnist": DatasetRecipe(10, 0.05, 128),
        "cifar10": DatasetRecipe(100, 0.1, 128),
        "cifar100": DatasetRecipe(100, 0.1, 128),
        "synthetic": _QUICK_SYNTHETIC,
    },
    "paper": {
        "fashion-mnist": _PAPER,
        "mnist": _PAPER,
        "cifar10": _PAPER,
        "cifar100": _PAPER,
        "synthetic": _QUICK_SYNTHETIC,
    },
}
DEFAULT_RECIPE = "quick"
WEIGHT_DECAY = 3e-3
MOMENTUM = 0.9


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained checkpoint (the seed included)."""

    model: str
    width: int
    dataset: str
    seed: int
    epochs: int
    lr: float
    wd: float = WEIGHT_DECAY
    momentum: float = MOMENTUM
    batch_size: int = 128
    warmup_epochs: float = 1.0
    norm: str = "none"
    bias: bool = True
    base_width: int = 32
    depth: int | None = None
    n_calib: int = N_CALIB
    recipe: str = DEFAULT_RECIPE
    extra: dict = field(default_factory=dict)
    schedule: str = "linear"
    inputs: str = "standardized"
    precision: str = "fp32"  # training arithmetic: part of the checkpoint's identity when not fp32

    def validate(self) -> None:
        family = get_family(self.model)
        problems = []
        if self.recipe not in RECIPES:
            problems.append(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if self.dataset not in dataset_names():
            problems.append(f"unknown dataset {self.dataset!r}; choose one of {', '.join(dataset_names())}")
        for key in ("width", "epochs", "batch_size", "base_width"):  # the limits of lewc.core.limits
            value, limit = getattr(self, key), LIMITS[key][1]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{key.replace('_', ' ')} must be a positive integer (got {value!r})")
            elif value > limit:
                problems.append(f"{key.replace('_', ' ')} must be in [1, {limit}], got {short(value)}")
        if self.depth is not None and family.default_depth is None:
            problems.append(f"{self.model} has a fixed depth, but a depth of {self.depth} was given")
        elif self.depth is not None and (isinstance(self.depth, bool) or not isinstance(self.depth, int)):
            problems.append(f"depth must be a positive integer (got {self.depth!r})")
        elif self.depth is not None and self.depth <= 0:
            problems.append(f"depth must be positive (got {self.depth})")
        elif self.depth is not None and self.depth > LIMITS["depth"][1]:
            problems.append(f"depth must be in [1, {LIMITS['depth'][1]}], got {short(self.depth)}")
        if not self.lr > 0:
            problems.append(f"learning rate must be positive (got {self.lr})")
        if not self.wd >= 0:
            problems.append(f"weight decay must be non-negative (got {self.wd})")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1) (got {self.momentum})")
        if self.norm not in NORMS:
            problems.append(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.schedule not in SCHEDULES:
            problems.append(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.inputs not in INPUTS:
            problems.append(f"unknown inputs {self.inputs!r}; choose one of {', '.join(INPUTS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if problems:
            raise LewcError("; ".join(problems))

    def hash_without_seed(self) -> str:
        """Short hash of every field but the seed: the two endpoints of a pair share it."""
        fields = self.as_dict()
        fields.pop("seed")
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """Checkpoint file stem, e.g. ``mnist_mlp_w16-3x8192_paper_s0_1a2b3c4d`` (width in units, preset)."""
        width = f"w{self.width}-{self.units_slug}"
        return f"{self.dataset}_{self.model}_{width}_{self.recipe}_s{self.seed}_{self.hash_without_seed()}"

    @property
    def width_label(self) -> str:
        """The width in units, e.g. ``MLP ×16 (3×8192)``."""
        return width_label(self.model, self.width, self.base_width, self.depth)

    @property
    def units_slug(self) -> str:
        return units_slug(self.model, self.width, self.base_width, self.depth)

    def checkpoint_path(self, folder: Path) -> Path:
        return Path(folder) / f"{self.name}.safetensors"

    def as_dict(self) -> dict:
        """The config as a sidecar stores it. Fields added after the first release are left out while
        they hold their default, so every earlier checkpoint keeps its name and identity."""
        values = dataclasses.asdict(self)
        for key, default in LATER_FIELDS.items():
            if values[key] == default:
                values.pop(key)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild a config from a sidecar's ``train_config`` (unknown keys are a one-line error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LewcError(f"train_config has unknown keys {unknown}")
        try:
            return cls(**values)
        except TypeError as err:
            raise LewcError(f"train_config is incomplete ({err})") from None


def units_slug(model: str, width: int, base_width: int | None = None, depth: int | None = None) -> str:
    """The width in units as a file-name part: ``3x8192``, ``512-1024-2048ch``, ``1024-8192ch``."""
    label = width_label(model, width, base_width, depth)
    units = label[label.rindex("(") + 1 : -1] if label.endswith(")") else f"w{width}"
    return units.replace("×", "x").replace("/", "-").replace("…", "-").replace(" ", "")


def default_dataset(model: str) -> str:
    return get_family(model).default_dataset


def dataset_recipe(preset: str, dataset: str) -> DatasetRecipe:
    """The preset's values for a registered dataset (an unknown dataset is refused by the registry)."""
    get_dataset(dataset)
    return RECIPES[preset].get(dataset, FALLBACK_RECIPE)


def default_config(
    model: str, width: int, dataset: str | None, seed: int, recipe: str | None = None, **overrides
) -> TrainConfig:
    """The preset's defaults for (model, dataset), with ``None``-valued overrides ignored."""
    family = get_family(model)
    dataset = dataset or family.default_dataset
    preset = recipe or DEFAULT_RECIPE
    if preset not in RECIPES:
        raise LewcError(f"unknown recipe {preset!r}; choose one of {', '.join(RECIPES)}")
    recipe_values = dataset_recipe(preset, dataset)
    cfg = dict(
        model=model,
        width=width,
        dataset=dataset,
        seed=seed,
        epochs=recipe_values.epochs,
        lr=recipe_values.lr,
        batch_size=recipe_values.batch_size,
        warmup_epochs=recipe_values.warmup_epochs,
        recipe=preset,
        norm=family.default_norm,
        base_width=family.base_width,
        depth=family.default_depth,
        n_calib=get_dataset(dataset).n_calib,
    )
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**cfg)
    config.validate()
    return config


def add_recipe_arguments(parser: argparse.ArgumentParser, model_default: str | None = None) -> None:
    """The recipe's flags (``None`` = the family's or dataset's default), declared once for all commands."""
    g = parser.add_argument_group("model and training recipe (defaults: lewc/training/recipe.py and the model family)")
    families = ", ".join(family_names())
    if model_default is None:
        g.add_argument("--model", required=True, help=f"model family: {families}")
    else:
        g.add_argument("--model", default=model_default, help=f"model family: {families} (default {model_default})")
    g.add_argument(
        "--recipe",
        choices=list(RECIPES),
        help="training preset (default quick): quick = lewc's demo recipe (10 epochs on MNIST-likes, batch 128); "
        "paper = the reconstruction of the paper's (100 epochs, batch 500, lr 0.1, 1 warm-up epoch); "
        "docs/recipes.md gives each value's source. The preset is part of the checkpoint's identity",
    )
    defaults = ", ".join(f"{n}: {get_family(n).default_dataset}" for n in family_names())
    g.add_argument(
        "--dataset",
        help=f"{', '.join(dataset_names())} (default per family, as in the paper — {defaults})",
    )
    g.add_argument("--epochs", type=int, help="training epochs (default per preset and dataset, docs/recipes.md)")
    g.add_argument("--lr", type=float, help="peak learning rate of SGD (default per dataset)")
    g.add_argument(
        "--wd", type=float, help=f"weight decay (default {WEIGHT_DECAY}, the paper's; LEWC vanishes at 1e-4)"
    )
    g.add_argument("--batch-size", type=int, help="global training batch size (default per dataset)")
    g.add_argument("--norm", choices=list(NORMS), help="normalisation (default per family: none for mlp, bn otherwise)")
    g.add_argument("--no-bias", action="store_true", help="bias-free layers (the setting of the paper's theorem)")
    g.add_argument(
        "--schedule",
        choices=list(SCHEDULES),
        help="learning-rate schedule after warm-up (default linear): "
        + "; ".join(f"{k} = {v}" for k, v in SCHEDULES.items())
        + ". Part of the checkpoint's identity",
    )
    g.add_argument(
        "--inputs",
        choices=list(INPUTS),
        help="input scaling (default standardized): "
        + "; ".join(f"{k} = {v}" for k, v in INPUTS.items())
        + ". Part of the checkpoint's identity; the analysis feeds the same inputs",
    )
    g.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="training arithmetic (default fp32): "
        + "; ".join(f"{k} = {v}" for k, v in PRECISIONS.items())
        + ". Part of the checkpoint's identity",
    )
    g.add_argument(
        "--base-width",
        type=int,
        help="units/channels at width ×1 (default per family: mlp 512 = the field's 3×512 MLP, vgg 64, resnet20 16)",
    )
    g.add_argument("--depth", type=int, help="hidden layers, for families with a depth knob (mlp: default 3)")


def config_from_args(args: argparse.Namespace, width: int, seed: int) -> TrainConfig:
    """The config named by the recipe flags (the same for ``lewc.commands.train`` and ``lewc.verify``)."""
    return default_config(
        args.model,
        width,
        args.dataset,
        seed,
        recipe=getattr(args, "recipe", None),
        epochs=args.epochs,
        lr=args.lr,
        wd=args.wd,
        batch_size=args.batch_size,
        norm=args.norm,
        bias=False if args.no_bias else None,
        base_width=args.base_width,
        depth=args.depth,
        schedule=getattr(args, "schedule", None),
        inputs=getattr(args, "inputs", None),
        precision=getattr(args, "precision", None),
    )
