"""The training loop as a library function: ``lewc.training.train.train(config) -> checkpoint path``.

The seed fixes the initialisation *and* the data order (and augmentation draws): the data order
of epoch e comes from a generator seeded with (seed, e), so a run resumed from an epoch snapshot
replays exactly the batches an uninterrupted run would see, and ends with bit-identical weights on
CPU *for the same thread count* (the reduction order of a CPU matmul depends on it; the count is
recorded in the snapshot and the sidecar, and a resume with another count says so). A snapshot
(model, optimizer, scheduler, epoch, history) is written atomically after every epoch; calling
``train`` again resumes from it. A finished checkpoint with the same configuration is reused
unless ``force``.

Under ``torchrun --nproc_per_node N -m lewc.commands.train`` it trains with DistributedDataParallel
at the same global batch size (each rank takes 1/N of every global batch; gloo on CPU, NCCL on
CUDA) and only rank 0 writes. ``lewc.commands.train`` is the command-line front end.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lewc.core.device import resolve_device
from lewc.core.errors import LewcError
from lewc.core.io import atomic_path, data_home
from lewc.models import CapturingModel, build, get_family
from lewc.training import checkpoints
from lewc.training.data import DeviceDataset, load_dataset
from lewc.training.recipe import TrainConfig

log = logging.getLogger(__name__)


def checkpoint_dir() -> Path:
    return data_home() / "checkpoints"


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "linear") -> float:
    """Linear warm-up to 1, then linear decay to 0 at ``total_steps`` (``constant``: stay at 1)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def integrated_decay(cfg: TrainConfig, n_train: int) -> float:
    """Σ_t lr_t · wd over every optimiser step of ``cfg``: how much weight decay has acted, the quantity
    the paper's mechanism (decay → low-rank weights) depends on; 10 epochs at 3e-3 ≈ 0.17 on MNIST."""
    steps_per_epoch = n_train // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    return cfg.wd * cfg.lr * sum(lr_factor(s, total, warmup, cfg.schedule) for s in range(total))


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of one epoch's data order and augmentation draws, derived from (seed, epoch)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: DeviceDataset, split: str, batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on a split, in eval mode, fp32."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=ds.device)
    loss = torch.zeros((), device=ds.device, dtype=torch.float64)
    n = 0
    for x, y in ds.batches(split, batch_size):
        logits = model(x).float()
        correct += (logits.argmax(1) == y).sum()
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        n += len(y)
    model.train(was_training)
    return correct.item() / n, loss.item() / n


class Distributed:
    """Rank and world size from torchrun's environment (a single process when absent)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def snapshot_path(ckpt: Path) -> Path:
    return ckpt.with_suffix(".snapshot.pt")


def build_model(cfg: TrainConfig, ds: DeviceDataset) -> CapturingModel:
    torch.manual_seed(cfg.seed)  # the seed fixes the initialisation
    return build(
        cfg.model,
        cfg.width,
        ds.info.num_classes,
        ds.info.in_shape,
        norm=cfg.norm,
        bias=cfg.bias,
        base_width=cfg.base_width,
        depth=cfg.depth,
    )


def log_epoch(row: dict, epochs: int, lr: float, board=None) -> None:
    """One plain line per epoch (kept by any log file), and the same numbers as TensorBoard scalars."""
    log.info(
        "epoch %d/%d loss %.4f acc %.4f lr %.4g %.1f s",
        row["epoch"],
        epochs,
        row["train_loss"],
        row["train_acc"],
        lr,
        row["seconds"],
    )
    if board is not None:
        for key, value in (
            ("train/loss", row["train_loss"]),
            ("train/acc", row["train_acc"]),
            ("lr", lr),
            ("images_per_s", row["images_per_s"]),
        ):
            board.add_scalar(key, value, row["epoch"])
        board.flush()


def summary_writer(folder: Path, name: str):
    """``torch.utils.tensorboard.SummaryWriter`` under ``folder/name`` (tensorboard is an optional extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LewcError("--tensorboard needs the tensorboard package: pip install 'lewc[tensorboard]'") from None
    return SummaryWriter(log_dir=str(Path(folder) / name))


@dataclass
class Run:
    """One training run between its steps: the configuration, where it runs, the data, the model, its
    optimiser and schedule, and the epochs done so far (``history``, one row per epoch)."""

    cfg: TrainConfig
    dev: torch.device
    dist: Distributed
    ds: DeviceDataset
    model: CapturingModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    is_conv: bool
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    step_net: torch.nn.Module | None = None  # what a step calls: the model, wrapped by DDP and/or compiled

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    @property
    def use_bf16(self) -> bool:
        return self.cfg.precision == "bf16"  # part of the config and the checkpoint's identity, whatever the device

    @property
    def local_batch_size(self) -> int:
        return self.cfg.batch_size // self.dist.world


def finished_checkpoint(cfg: TrainConfig, ckpt: Path, force: bool) -> bool:
    """Whether ``ckpt`` is already trained with ``cfg`` (reused); another configuration there is an error."""
    if checkpoints.sidecar_path(ckpt).exists() and not force:
        if checkpoints.read_checkpoint_meta(ckpt).train_config == cfg.as_dict():
            return True
        raise LewcError(f"{ckpt} exists with a different configuration; use --force to retrain")
    return False


def setup(cfg: TrainConfig, dev: torch.device, data_root: str | None, dataset: DeviceDataset | None) -> Run:
    """The processes, the device, the data, the seeded model, the optimiser and its schedule (epoch 0)."""
    dist = Distributed(dev)
    if cfg.batch_size % dist.world:
        raise LewcError(f"batch size {cfg.batch_size} is not divisible by {dist.world} processes")
    if dev.type == "cuda" and dist.enabled:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    ds = dataset if dataset is not None else load_dataset(cfg.dataset, dev, data_root, cfg.n_calib, inputs=cfg.inputs)
    model = build_model(cfg, ds).to(dev)
    is_conv = get_family(cfg.model).convolutional
    if dev.type == "cuda" and is_conv:
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(ds.train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise LewcError(f"batch size {cfg.batch_size} exceeds the {len(ds.train)} training images")
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.wd,
        **({"fused": True} if dev.type == "cuda" else {"foreach": True}),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule))
    return Run(cfg, dev, dist, ds, model, optimizer, scheduler, steps_per_epoch, is_conv)


def resume(run: Run, snap: Path) -> None:
    """Continue ``run`` from its epoch snapshot: model, optimiser, schedule, epoch and history."""
    cfg, dev = run.cfg, run.dev
    try:
        state = torch.load(snap, map_location=dev, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign snapshot raises many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LewcError(f"snapshot {snap} cannot be read ({first}); delete it or use --force") from None
    if not isinstance(state, dict) or state.get("config") != cfg.as_dict():
        raise LewcError(f"snapshot {snap} belongs to another configuration; delete it or use --force")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.start_epoch, run.history = int(state["epoch"]), list(state["history"])
    if dev.type == "cpu" and state.get("threads") not in (None, torch.get_num_threads()):
        log.warning(
            "the snapshot was written with %s CPU threads, this run uses %s: the result will not be "
            "bit-identical to an uninterrupted run (--threads sets the count)",
            state["threads"],
            torch.get_num_threads(),
        )
    if run.dist.is_main:
        log.info("resuming %s from epoch %d/%d", cfg.name, run.start_epoch, cfg.epochs)


def write_snapshot(run: Run, epochs_done: int, snap: Path) -> None:
    """The resumable state after ``epochs_done`` epochs, written atomically."""
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": epochs_done,
        "history": run.history,
        "config": run.cfg.as_dict(),
        "threads": torch.get_num_threads(),
    }
    with atomic_path(snap) as tmp:
        torch.save(state, tmp)


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch; (loss, correct count) stay on the device (no host sync)."""
    with torch.autocast(device_type=run.dev.type, dtype=torch.bfloat16, enabled=run.use_bf16):
        logits = run.step_net(x)
        loss = F.cross_entropy(logits.float(), y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    return loss.detach(), (logits.argmax(1) == y).sum()


def train_epoch(run: Run, epoch: int, bar: tqdm) -> dict:
    """One epoch in the order and with the augmentation draws of (seed, epoch); returns its history row."""
    cfg, dev, ds, dist = run.cfg, run.dev, run.ds, run.dist
    steps_per_epoch, local_bs = run.steps_per_epoch, run.local_batch_size
    gen = epoch_generator(cfg.seed, epoch, dev)
    order = torch.randperm(len(ds.train), device=dev, generator=gen)
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    t0, seen = time.perf_counter(), 0
    for step in range(steps_per_epoch):
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x_global = ds.augment(ds.train.x[idx], gen)  # same draws on every rank
        sl = slice(dist.rank * local_bs, (dist.rank + 1) * local_bs)
        x = ds.normalize(x_global[sl])
        if dev.type == "cuda" and run.is_conv:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, right = train_step(run, x, ds.train.y[idx][sl])
        loss_sum += loss
        correct += right
        seen += local_bs
        if (step + 1) % 50 == 0 or step + 1 == steps_per_epoch:  # the only host syncs
            bar.update(step + 1 - (bar.n - epoch * steps_per_epoch))
            bar.set_postfix(
                epoch=f"{epoch + 1}/{cfg.epochs}",
                loss=f"{loss_sum.item() / (step + 1):.4f}",
                acc=f"{correct.item() / seen:.4f}",
                img_s=f"{seen * dist.world / (time.perf_counter() - t0):.0f}",
            )
    loss_epoch = loss_sum.item() / steps_per_epoch
    if not math.isfinite(loss_epoch):
        raise LewcError(f"training diverged (loss {loss_epoch}) in epoch {epoch + 1}; lower --lr")
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "train_loss": loss_epoch,
        "train_acc": correct.item() / seen,
        "seconds": seconds,
        "images_per_s": seen * dist.world / seconds,
    }


def finish(run: Run, ckpt: Path, snap: Path, board=None) -> None:
    """The trained model's final accuracies, its checkpoint and sidecar; the snapshot is then removed."""
    cfg, dev, ds, model = run.cfg, run.dev, run.ds, run.model
    train_acc, train_loss = evaluate(model, ds, "train")
    test_acc, test_loss = evaluate(model, ds, "test")
    log.info(
        "%s: test acc %.4f loss %.4f, train acc %.4f loss %.4f",
        cfg.name,
        test_acc,
        test_loss,
        train_acc,
        train_loss,
    )
    if board is not None:
        board.add_scalar("test/acc", test_acc, cfg.epochs)
        board.add_scalar("test/loss", test_loss, cfg.epochs)
        board.close()
    meta = checkpoints.CheckpointMeta.of_config(
        cfg,
        ds.info,
        dataset=cfg.dataset,
        seed=cfg.seed,
        train_config=cfg.as_dict(),
        epochs=cfg.epochs,
        optimizer="SGD",
        schedule=f"linear warm-up {cfg.warmup_epochs} epoch(s), then linear decay to 0",
        world_size=run.dist.world,
        device=str(dev),
        bf16_autocast=run.use_bf16,
        threads=torch.get_num_threads(),
        determinism=(
            "bit-identical for the same torch version and CPU thread count (deterministic algorithms on)"
            if dev.type == "cpu"
            else "not guaranteed: deterministic algorithms are off on CUDA (atomics in some kernels); "
            "expect run-to-run differences at float rounding"
        ),
        train_acc=train_acc,
        train_loss=train_loss,
        test_acc=test_acc,
        test_loss=test_loss,
        history=run.history,
        parameters=checkpoints.parameter_count(model),
    )
    checkpoints.save(model, ckpt, meta)
    snap.unlink(missing_ok=True)


def train(
    cfg: TrainConfig,
    out_dir: Path | None = None,
    device: str | None = None,
    force: bool = False,
    compile_model: bool = False,
    data_root: str | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    dataset: DeviceDataset | None = None,
    tensorboard: Path | None = None,
    snapshot_every: int = 1,
    snapshot_minutes: float | None = None,
) -> Path:
    """Train (or reuse, or resume) the checkpoint of ``cfg``; returns its ``.safetensors`` path.

    ``stop_after_epoch`` simulates an interruption (for tests): training stops after that many
    epochs with the snapshot written and no checkpoint. ``tensorboard`` names a folder that gets
    TensorBoard scalars per epoch (``train/loss``, ``train/acc``, ``lr``, ``images_per_s``) and the
    final ``test/acc`` and ``test/loss``, in a subfolder per checkpoint name.

    A resumable snapshot is written every ``snapshot_every`` epochs, or, when ``snapshot_minutes`` is
    given, at the end of the first epoch after that many minutes since the last one (on CUDA the
    default is every 10 minutes: an MLP ×16 snapshot is ≈ 1 GB, more time than a GPU epoch).

    The steps: ``finished_checkpoint`` (reuse), ``setup``, ``resume`` (from the snapshot),
    ``train_epoch`` and ``write_snapshot`` per epoch, ``finish`` (evaluate, save the checkpoint).
    """
    cfg.validate()
    dev = resolve_device(device)
    out_dir = Path(out_dir) if out_dir else checkpoint_dir()
    ckpt = out_dir / f"{cfg.name}.safetensors"
    if finished_checkpoint(cfg, ckpt, force):
        return ckpt
    run = setup(cfg, dev, data_root, dataset)
    dev, dist = run.dev, run.dist
    snap = snapshot_path(ckpt)
    if snap.exists() and not force:
        resume(run, snap)
    net = torch.nn.parallel.DistributedDataParallel(run.model) if dist.enabled else run.model
    run.step_net = torch.compile(net) if compile_model else net
    board = summary_writer(tensorboard, cfg.name) if tensorboard is not None and dist.is_main else None
    bar = tqdm(
        total=run.total_steps,
        initial=run.start_epoch * run.steps_per_epoch,
        desc=cfg.name,
        unit="step",
        disable=None if progress and dist.is_main else True,  # None: a bar on a terminal only
        file=sys.stderr,
        dynamic_ncols=True,
    )
    if dist.is_main:
        log.info(
            "training %s: %d epoch(s) of %d steps, batch %d, %s, %d thread(s)",
            cfg.name,
            cfg.epochs,
            run.steps_per_epoch,
            cfg.batch_size,
            dev,
            torch.get_num_threads(),
        )
    run.model.train()
    if snapshot_minutes is None and dev.type == "cuda":
        snapshot_minutes = 10.0
    last_snapshot = time.monotonic()
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            run.history.append(train_epoch(run, epoch, bar))
            stopping = stop_after_epoch is not None and epoch + 1 >= stop_after_epoch
            if snapshot_minutes is None:
                due = (epoch + 1) % max(1, snapshot_every) == 0
            else:
                due = time.monotonic() - last_snapshot >= 60.0 * snapshot_minutes
            if dist.is_main:
                log_epoch(run.history[-1], cfg.epochs, run.scheduler.get_last_lr()[0], board)
            if dist.is_main and (due or stopping or epoch + 1 == cfg.epochs):
                last_snapshot = time.monotonic()
                write_snapshot(run, epoch + 1, snap)
            dist.barrier()
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
                if board is not None:
                    board.close()
                return snap
    except BaseException:
        if board is not None:
            board.close()
        raise
    finally:
        bar.close()
    if dist.is_main:
        finish(run, ckpt, snap, board)
    dist.barrier()
    dist.close()
    return ckpt
