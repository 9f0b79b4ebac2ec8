"""Fit, or fail early in one line: the whole run's device memory against the device, before any work.

``check_configs`` runs before a pair is trained (``lewc.pipeline.runs.gate``), and
``compute_batches_for`` before a pair is swept (``lewc.pipeline.pair.analyse_pair``, every client): the
plan of ``lewc.sweep.memory.plan_run`` (the admission passes, every sweep — each alignment and both
controls —, alignment's buffers, BN re-estimation, and what stays alive meanwhile) is compared with the
device's free memory (``torch.cuda.mem_get_info``). When it does not fit, the compute batch
(``--batch-size-eval``) is halved until it does — it changes memory and speed, never a number (the
statistics' own batches are fixed: ``BN_BATCH``, ``CONDITION_BATCH``) — or the run exits 2 with one
line naming the fix. The compute batch is chosen per sweep: the positive control (a 2× wide network)
sweeps at the largest batch whose peak stays within the main sweeps' (``plan_run``), so it needs no
more memory than they do. On the CPU nothing is checked.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch

from lewc.models import build
from lewc.sweep.memory import DATASET_IMAGES, RunPlan, fit_compute_batch, plan_run
from lewc.training.checkpoints import CheckpointMeta
from lewc.training.data import dataset_info

log = logging.getLogger("lewc.verify")


def _meta_build(model: str, width: int, num_classes: int, in_shape, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return build(model, width, num_classes, tuple(in_shape), **kwargs)


def builder_from_meta(
    meta: CheckpointMeta | None, model: torch.nn.Module | None = None
) -> Callable[[int], torch.nn.Module]:
    """``k → the endpoints' architecture at k× width on the meta device``, from a sidecar; a foreign
    architecture (no lewc family, or no sidecar) is a meta-device copy of ``model`` at 1× (2× raises:
    bounded instead)."""

    def build(k: int) -> torch.nn.Module:
        try:
            if meta is None:
                raise LookupError("no sidecar: the architecture is the model's own")
            kwargs = {"norm": meta.norm, "bias": bool(meta.bias)}
            kwargs |= {"base_width": meta.base_width, "depth": meta.depth}
            return _meta_build(meta.model, k * int(meta.width), int(meta.num_classes), meta.in_shape, **kwargs)
        except Exception:
            if k != 1 or model is None:
                raise
            memo = {}
            for t in [*model.parameters(), *model.buffers()]:
                empty = torch.empty(t.shape, dtype=t.dtype, device="meta")
                memo[id(t)] = torch.nn.Parameter(empty, t.requires_grad) if isinstance(t, torch.nn.Parameter) else empty
            return copy.deepcopy(model, memo)

    return build


def device_budget(device: torch.device) -> int | None:
    """Bytes this process may use on ``device``: free plus what it holds already (the plan counts
    that); None on the CPU."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free) + int(torch.cuda.memory_allocated(device))


def fit_plan(
    build: Callable[[int], torch.nn.Module], in_shape, options, requested: int, device, dataset_bytes: int
) -> RunPlan | None:
    """The run's plan at the largest compute batch that fits (``requested`` when it does; see the module
    doc); None on the CPU (nothing is checked)."""
    budget = device_budget(device)
    if budget is None:
        return None

    def plan_at(batch: int) -> RunPlan:
        return plan_run(
            build, tuple(in_shape), batch, len(options.lams), options.controls, tuple(options.align), dataset_bytes
        )

    plan = fit_compute_batch(plan_at, requested, budget)
    log.info("memory plan on %s (%.1f GiB usable): %s", device, budget / 2**30, plan.describe())
    if plan.compute_batch != requested:
        log.warning(
            "compute batch %d does not fit on %s; evaluating in batches of %d (no number changes: docs/conventions.md)",
            requested,
            device,
            plan.compute_batch,
        )
    return plan


def fit(build: Callable[[int], torch.nn.Module], in_shape, options, requested: int, device, dataset_bytes: int) -> int:
    """The main sweeps' compute batch to run with (``requested`` when it fits; see the module doc)."""
    plan = fit_plan(build, in_shape, options, requested, device, dataset_bytes)
    return requested if plan is None else plan.compute_batch


def check_configs(configs, options, device, requested: int) -> int:
    """Before training: the pair's analysis fits on ``device`` at some compute batch (else exit 2)."""
    if device.type != "cuda":
        return requested
    cfg = configs[0]
    info = dataset_info(cfg.dataset)
    meta = CheckpointMeta.of_config(cfg, info)  # the architecture the pair will have, before it is trained
    images = DATASET_IMAGES.get(cfg.dataset, 0)
    dataset_bytes = images * (int(torch.Size(info.in_shape).numel()) + 8)
    return fit(builder_from_meta(meta), info.in_shape, options, requested, device, dataset_bytes)


def compute_batches_for(pair, ds, options, requested: int, device) -> dict[str, int]:
    """Before sweeping a loaded pair: the compute batch of each sweep that fits (the dataset is on the device
    already): ``main`` (every alignment's sweep), ``positive`` and ``negative`` (the controls)."""
    if device.type != "cuda":
        return dict.fromkeys(("main", "positive", "negative"), requested)
    held = {id(t): t for s in (ds.train, ds.calib, ds.test) for t in (s.x, s.y)}
    dataset_bytes = sum(t.numel() * t.element_size() for t in held.values())
    build = builder_from_meta(pair.meta_a, pair.model_a)
    plan = fit_plan(build, ds.info.in_shape, options, requested, device, dataset_bytes)
    assert plan is not None
    return {
        "main": plan.compute_batch,
        "positive": plan.batch_for("positive control"),
        "negative": plan.batch_for("negative control"),
    }
