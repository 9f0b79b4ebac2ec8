"""The endpoints of a pair: find their checkpoints, or train them when the cost allows.

Configs come in already resolved (``lewc.training.recipe``); nothing here reads the command line.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from lewc.core.errors import LewcError
from lewc.core.io import data_home
from lewc.models import build
from lewc.training import checkpoints
from lewc.training.checkpoints import CheckpointMeta
from lewc.training.data import dataset_info
from lewc.training.recipe import TrainConfig
from lewc.training.train import train

CPU_FLOPS = 5e10  # sustained FLOP/s assumed for a CPU when estimating training cost
GPU_FLOPS = 2e14  # one data-centre GPU in bf16
SLOW_SECONDS = 1800
log = logging.getLogger(__name__)


def check_distinct(meta_a: CheckpointMeta, meta_b: CheckpointMeta, names: str = "--ckpt-a and --ckpt-b") -> None:
    """Refuse a "pair" of one set of weights (equal sha256): the negative control already merges A with itself."""
    if meta_a.sha256 == meta_b.sha256:
        raise LewcError(
            f"{names} are the same weights (identical sha256): a pair must be two independently "
            "trained networks (the negative control already merges A with itself)"
        )


def checkpoint_folder(ckpt_dir: Path | None = None) -> Path:
    return Path(ckpt_dir) if ckpt_dir else data_home() / "checkpoints"


def training_cost_seconds(cfg: TrainConfig, device: torch.device, n_train: int = 55000) -> float:
    """Rough cost of training one endpoint: 3 × forward FLOPs × images × epochs at the device's rate."""
    info = dataset_info(cfg.dataset)
    with torch.device("meta"):
        model = build(
            cfg.model, cfg.width, info.num_classes, info.in_shape, cfg.norm, cfg.bias, cfg.base_width, cfg.depth
        )
    flops = checkpoints.count_flops_per_image(model, info.in_shape)
    rate = CPU_FLOPS if device.type == "cpu" else GPU_FLOPS
    return 3.0 * flops * n_train * cfg.epochs / rate


def train_command(cfg: TrainConfig) -> str:
    """The ``lewc train`` command that makes ``cfg``'s checkpoint (for messages)."""
    parts = ["lewc train", f"--model {cfg.model}", f"--width {cfg.width}", f"--dataset {cfg.dataset}"]
    parts += [f"--seed {cfg.seed}", f"--epochs {cfg.epochs}", f"--lr {cfg.lr}", f"--wd {cfg.wd}"]
    parts += [f"--batch-size {cfg.batch_size}", f"--norm {cfg.norm}", f"--base-width {cfg.base_width}"]
    parts += [f"--depth {cfg.depth}"] if cfg.depth is not None else []
    parts += ["--no-bias"] if not cfg.bias else []
    parts += [f"--schedule {cfg.schedule}"] if cfg.schedule != "linear" else []
    parts += [f"--inputs {cfg.inputs}"] if cfg.inputs != "standardized" else []
    parts += [f"--recipe {cfg.recipe}"]
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
    if missing and device.type != "cpu":  # an accelerator is what training is for: say, and proceed
        c = configs[0]
        log.info(
            "train: %d endpoint(s) of %s ×%d on %s, about %.1f h by a FLOP estimate",
            len(missing),
            c.model,
            c.width,
            device.type,
            cost / 3600,
        )
        return configs
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
    paths = []
    for cfg in configs:
        path = cfg.checkpoint_path(folder)
        if not checkpoints.sidecar_path(path).exists():
            log.info("train: missing endpoint %s (seed %d)", path.name, cfg.seed)
        paths.append(train(cfg, folder, str(device), data_root=data_root, progress=progress))
    return paths


# --- the endpoints' accuracy, measured (a sidecar's number is never trusted) ---------------------------

CHANCE_MARGIN = 0.05  # 5 pp above chance at least
SIDECAR_TOLERANCE = 0.01  # 1 pp between the sidecar's test accuracy and the measured one


def chance_threshold(num_classes: int, n_images: int) -> float:
    """Accuracy at or below which an endpoint counts as at chance: 1/K + max(5 pp, 3 binomial s.e.).

    The s.e. is that of a chance-level classifier on ``n_images``: a trained network reaching less is
    indistinguishable from guessing (a wrong dataset, or untrained weights), and its "connectivity"
    says nothing about the claim.
    """
    p = 1.0 / num_classes
    return p + max(CHANCE_MARGIN, 3.0 * math.sqrt(p * (1 - p) / max(n_images, 1)))


@torch.no_grad()
def measure_test_accuracy(model: torch.nn.Module, ds, n_test: int | None, batch_size: int = 500) -> tuple[float, int]:
    """(top-1 accuracy, images) of ``model`` on the first ``n_test`` test images (all when None)."""
    correct, n = 0, 0
    for x, y in ds.batches("test", batch_size, n_test):
        correct += int((model(x).argmax(-1) == y).sum())
        n += len(y)
    return correct / max(n, 1), n


def check_endpoints(
    models: dict,
    metas: dict[str, CheckpointMeta],
    paths: dict,
    ds,
    n_test: int | None,
    batch_size: int,
    allow_chance: bool = False,
) -> dict:
    """Measure both endpoints on the test split; refuse chance-level ones; warn on a lying sidecar.

    Returns ``{"a": accuracy, "b": accuracy}``. Raises ``LewcError`` (one line) when an endpoint is at
    chance; prints a ``WARNING`` when the sidecar's ``test_acc`` is off by more than 1 pp (or, on a
    subset of the test set, by more than 3 binomial standard errors of the subset, if that is larger).
    """
    measured = {}
    for end in ("a", "b"):
        acc, n = measure_test_accuracy(models[end], ds, n_test, batch_size)
        claimed = metas[end].test_acc  # validated by the sidecar schema: a number in [0, 1] or absent
        claimed = None if claimed is None else float(claimed)
        said = f"; its sidecar claims {claimed:.4f}" if claimed is not None else ""
        limit = chance_threshold(ds.info.num_classes, n)
        if acc <= limit and not allow_chance:  # the opt-in is recorded by lewc.pipeline.admission
            raise LewcError(
                f"endpoint {end.upper()} ({paths[end]}) reaches {acc:.4f} on {n} {ds.info.name} test images{said}: "
                f"at chance (≤ 1/{ds.info.num_classes} + max(5 pp, 3 s.e.) = {limit:.4f}); these weights were "
                "not trained on this dataset, or not trained — nothing to verify"
            )
        if claimed is not None:
            tolerance = SIDECAR_TOLERANCE
            if n < len(ds.test):
                tolerance = max(tolerance, 3.0 * math.sqrt(max(acc * (1 - acc), 1e-4) / n))
            if abs(claimed - acc) > tolerance:
                log.warning(
                    "endpoint %s (%s): its sidecar says test accuracy %.4f, measured %.4f on %d %s test images "
                    "(differ by more than %.1f pp); the measured value is used",
                    end.upper(),
                    paths[end],
                    claimed,
                    acc,
                    n,
                    ds.info.name,
                    100 * tolerance,
                )
        measured[end] = acc
    return measured
