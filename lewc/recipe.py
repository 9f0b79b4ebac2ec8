"""The training recipe: one dataclass of hyper-parameters and the per-dataset defaults.

The paper's recipe (arXiv 2510.08023): SGD with momentum 0.9 and strong weight decay 3e-3 (the
effect disappears at 1e-4), a warm-up then a decaying learning rate. Per-dataset defaults for
epochs and learning rate are lewc's choice, made so endpoints are well trained:

=================  ======  =====  ==========  ==========================================
dataset            epochs  lr     batch size  why
=================  ======  =====  ==========  ==========================================
fashion-mnist      10      0.05   128         ~89% test accuracy for the MLP, minutes on CPU
mnist              10      0.05   128         same recipe as Fashion-MNIST
cifar10/cifar100   100     0.1    128         standard CIFAR ResNet/VGG budget, halved from 200
synthetic          3       0.05   64          tests only
=================  ======  =====  ==========  ==========================================

Warm-up is linear over the first ``warmup_epochs`` (1 by default), then the rate decays linearly
(per step) to zero at the end of training.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from lewc.errors import LewcError
from lewc.models import DEFAULT_NORM, check_model_name, default_base_width
from lewc.models.mlp import DEFAULT_DEPTH

EPOCHS = {"fashion-mnist": 10, "mnist": 10, "cifar10": 100, "cifar100": 100, "synthetic": 3}
LR = {"fashion-mnist": 0.05, "mnist": 0.05, "cifar10": 0.1, "cifar100": 0.1, "synthetic": 0.05}
BATCH = {"fashion-mnist": 128, "mnist": 128, "cifar10": 128, "cifar100": 128, "synthetic": 64}
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
    n_calib: int = 5000
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        check_model_name(self.model)
        problems = []
        if self.width <= 0:
            problems.append(f"width must be positive (got {self.width})")
        if self.epochs <= 0:
            problems.append(f"epochs must be positive (got {self.epochs})")
        if not self.lr > 0:
            problems.append(f"learning rate must be positive (got {self.lr})")
        if self.wd < 0:
            problems.append(f"weight decay must be non-negative (got {self.wd})")
        if self.batch_size <= 0:
            problems.append(f"batch size must be positive (got {self.batch_size})")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1) (got {self.momentum})")
        if problems:
            raise LewcError("; ".join(problems))

    def hash_without_seed(self) -> str:
        """Short hash of every field but the seed: the two endpoints of a pair share it."""
        fields = dataclasses.asdict(self)
        fields.pop("seed")
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """Checkpoint file stem, e.g. ``fashion-mnist_mlp_w16_s0_1a2b3c4d``."""
        return f"{self.dataset}_{self.model}_w{self.width}_s{self.seed}_{self.hash_without_seed()}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_config(model: str, width: int, dataset: str, seed: int, **overrides) -> TrainConfig:
    """The recipe's defaults for (model, dataset), with ``None``-valued overrides ignored."""
    check_model_name(model)
    if dataset not in EPOCHS:
        raise LewcError(f"unknown dataset {dataset!r}; choose one of {', '.join(EPOCHS)}")
    cfg = dict(
        model=model,
        width=width,
        dataset=dataset,
        seed=seed,
        epochs=EPOCHS[dataset],
        lr=LR[dataset],
        batch_size=BATCH[dataset],
        norm=DEFAULT_NORM[model],
        base_width=default_base_width(model),
        depth=DEFAULT_DEPTH if model == "mlp" else None,
        n_calib=500 if dataset == "synthetic" else 5000,
    )
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**cfg)
    config.validate()
    return config


def config_from_args(args: argparse.Namespace, width: int, seed: int) -> TrainConfig:
    """The config named by the recipe flags shared by ``experiments.train`` and ``lewc.verify``."""
    return default_config(
        args.model,
        width,
        args.dataset,
        seed,
        epochs=args.epochs,
        lr=args.lr,
        wd=args.wd,
        batch_size=args.batch_size,
        norm=args.norm,
        bias=False if args.no_bias else None,
        base_width=args.base_width,
        depth=args.depth,
    )
