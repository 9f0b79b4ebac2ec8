"""The endpoints of a pair: find their checkpoints, or train them when the cost allows.

Configs come in already resolved (``lewc.training.recipe``); nothing here reads the command line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lewc.core.errors import LewcError
from lewc.training import checkpoints
from lewc.training.data import data_home
from lewc.training.recipe import TrainConfig

CPU_FLOPS = 5e10  # sustained FLOP/s assumed for a CPU when estimating training cost
GPU_FLOPS = 2e14  # one data-centre GPU in bf16
SLOW_SECONDS = 1800
log = logging.getLogger(__name__)


def checkpoint_folder(ckpt_dir: Path | None = None) -> Path:
    return Path(ckpt_dir) if ckpt_dir else data_home() / "checkpoints"


def training_cost_seconds(cfg: TrainConfig, device: torch.device, n_train: int = 55000) -> float:
    """Rough cost of training one endpoint: 3 × forward FLOPs × images × epochs at the device's rate."""
    from lewc.models import build
    from lewc.training.data import dataset_info

    info = dataset_info(cfg.dataset)
    with torch.device("meta"):
        model = build(
            cfg.model, cfg.width, info.num_classes, info.in_shape, cfg.norm, cfg.bias, cfg.base_width, cfg.depth
        )
    flops = checkpoints.count_flops_per_image(model, info.in_shape)
    rate = CPU_FLOPS if device.type == "cpu" else GPU_FLOPS
    return 3.0 * flops * n_train * cfg.epochs / rate


def train_command(cfg: TrainConfig) -> str:
    """The ``experiments.train`` command that makes ``cfg``'s checkpoint (for messages)."""
    parts = ["python -m experiments.train", f"--model {cfg.model}", f"--width {cfg.width}", f"--dataset {cfg.dataset}"]
    parts += [f"--seed {cfg.seed}", f"--epochs {cfg.epochs}", f"--lr {cfg.lr}", f"--wd {cfg.wd}"]
    parts += [f"--batch-size {cfg.batch_size}", f"--norm {cfg.norm}", f"--base-width {cfg.base_width}"]
    parts += [f"--depth {cfg.depth}"] if cfg.depth is not None else []
    parts += ["--no-bias"] if not cfg.bias else []
    return " ".join(parts)


def plan_pair(
    configs: list[TrainConfig], folder: Path, device: torch.device, no_train: bool = False, allow_slow: bool = False
) -> list[TrainConfig]:
    """Check the pair's missing checkpoints against ``no_train`` and the cost gate, before any work."""
    missing = [c for c in configs if not checkpoints.sidecar_path(c.checkpoint_path(folder)).exists()]
    if missing and no_train:
        paths = ", ".join(str(c.checkpoint_path(folder)) for c in missing)
        how = " && ".join(train_command(c) for c in missing)
        raise LewcError(f"missing checkpoint(s) {paths}; train them with: {how}")
    cost = sum(training_cost_seconds(c, device) for c in missing)
    if cost > SLOW_SECONDS and not allow_slow:
        c = configs[0]
        raise LewcError(
            f"training {len(missing)} endpoint(s) of {c.model} ×{c.width} on {device.type} would take "
            f"about {cost / 3600:.1f} h by a FLOP estimate; pass --allow-slow to proceed, or train on a GPU"
        )
    return configs


def ensure_trained(
    configs: list[TrainConfig], folder: Path, device: torch.device, data_root=None, progress: bool = True
) -> list[Path]:
    """The checkpoint of every config, training (or resuming) the missing ones in this process."""
    from lewc.training.train import train

    paths = []
    for cfg in configs:
        path = cfg.checkpoint_path(folder)
        if not checkpoints.sidecar_path(path).exists():
            log.info("train: missing endpoint %s (seed %d)", path.name, cfg.seed)
        paths.append(train(cfg, folder, str(device), data_root=data_root, progress=progress))
    return paths
