"""A request in, a published results folder out: the one entry point every client shares.

``lewc.verify`` (the command line), ``lewc.commands.study`` (its jobs, in a worker process or on a
SLURM node) and ``lewc.commands.table1`` build a ``lewc.pipeline.request.Request`` and call ``run``
(``run_all`` for several pairs: every pair through the gates before any is trained). ``run`` checks
what depends on this machine once (the device, that the results can be written, the training cost),
loads each endpoint once, names the results folder once and publishes it — the main results first, then
again with the controls (``lewc.pipeline.pair.analyse_and_publish``: a control that fails leaves the
main results published, its report saying why):

* ``Configs``: train the pair's missing endpoints (resuming a snapshot), then as ``Checkpoints``;
* ``Checkpoints``: load lewc checkpoints, measure the endpoints (chance-level ones are refused),
  analyse, publish; a folder computed from exactly these weights and this dataset is reused (one whose
  controls did not complete is completed: only the controls run);
* ``StateDicts``: plain state dicts plus an architecture (``lewc.pipeline.interop``); never reused.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import NamedTuple

import torch
import xarray as xr

from lewc.core.device import resolve_device
from lewc.core.errors import LewcError
from lewc.core.io import data_home, read_json
from lewc.models import get_family
from lewc.pipeline import interop, memplan
from lewc.pipeline.endpoints import check_distinct, check_endpoints, checkpoint_folder, ensure_trained, plan_pair
from lewc.pipeline.folders import AnalysisOptions, check_writable, results_folder, run_provenance
from lewc.pipeline.pair import RunSettings, analyse_and_publish, resume_controls
from lewc.pipeline.request import Checkpoints, Configs, Request, RunContext, StateDicts
from lewc.reporting.report import controls_done
from lewc.reporting.results import open_results
from lewc.sweep.merge import Pair
from lewc.training import checkpoints
from lewc.training.checkpoints import CheckpointMeta
from lewc.training.data import dataset_info, load_dataset

log = logging.getLogger("lewc.verify")  # the command line's stages, whichever client runs them


class Verified(NamedTuple):
    """What a run published: the path of report.json, the report, and the results (results.nc, loaded)."""

    report_path: Path
    report: dict
    results: xr.Dataset | None


def settings(ctx: RunContext, align_cache: bool = True) -> RunSettings:
    """The analysis's run settings (an alignment cache beside the checkpoints for lewc's own endpoints)."""
    cache = checkpoint_folder(ctx.ckpt_dir) / "aligned" if align_cache else None
    return RunSettings(ctx.batch_size_eval, ctx.progress, cache, ctx.keep_samples, ctx.allow_chance)


# --- the entry point ------------------------------------------------------------------------------------------


def run(request: Request) -> Verified:
    """Verify one pair as ``request`` says; returns what was published (or reused)."""
    return run_all([request])[0]


def run_all(requests: list[Request]) -> list[Verified]:
    """Several pairs: all of them through the gates first (a refusal costs no training), then each in turn."""
    devices = [gate(r) for r in requests]
    return [_run(r, device) for r, device in zip(requests, devices, strict=True)]


def gate(request: Request) -> torch.device:
    """What a request cannot know about this machine, checked before any work: the device, that the results
    can be written (a read-only folder found after hours of training would lose them), the training cost."""
    ctx = request.context
    device = resolve_device(ctx.device)
    check_writable(ctx.out if ctx.out is not None else data_home() / "results")
    ends = request.endpoints
    if isinstance(ends, Configs):
        plan_pair(list(ends.configs), checkpoint_folder(ctx.ckpt_dir), device, ends.no_train, ctx.allow_slow)
        memplan.check_configs(list(ends.configs), request.options, device, ctx.batch_size_eval)  # fits, or exit 2
    return device


def _run(request: Request, device: torch.device) -> Verified:
    ctx, ends = request.context, request.endpoints
    if ctx.threads is not None:
        torch.set_num_threads(ctx.threads)
    if isinstance(ends, StateDicts):
        return verify_state_dicts(ends, request.options, device, ctx)
    paths = list(ends.paths) if isinstance(ends, Checkpoints) else None
    if isinstance(ends, Configs):
        paths = ensure_trained(list(ends.configs), checkpoint_folder(ctx.ckpt_dir), device, ctx.data_root, ctx.progress)
    assert paths is not None
    return verify_checkpoints(paths, request.options, device, ctx)


def used_options(options: AnalysisOptions, n_test_images: int) -> AnalysisOptions:
    """The options as run: an ``n_test`` at or above the test set's size is all of it (recorded as such)."""
    if options.n_test is not None and options.n_test >= n_test_images:
        if options.n_test > n_test_images:
            log.warning("--n-test %d exceeds the %d test images; using all of them", options.n_test, n_test_images)
        return dataclasses.replace(options, n_test=None)
    return options


def reusable(out_dir: Path, meta_a: CheckpointMeta, meta_b: CheckpointMeta, data_id: str) -> bool:
    """A published folder whose results were computed from exactly these weights and this dataset."""
    if not (out_dir / "report.json").is_file() or not (out_dir / "results.nc").is_file():
        return False
    try:  # a damaged folder (truncated, emptied, foreign) is redone, never read into a report
        report = read_json(out_dir / "report.json", "report")
        attrs = open_results(out_dir / "results.nc").attrs
    except (LewcError, OSError, ValueError) as err:
        log.warning("not reusing %s: %s", out_dir, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return False
    if not isinstance(report, dict) or not isinstance(report.get("barriers"), dict):
        return False
    return (
        attrs.get("sha256_a") == meta_a.sha256
        and attrs.get("sha256_b") == meta_b.sha256
        and attrs.get("dataset_identity") == data_id
    )


def verify_checkpoints(paths: list[Path], options: AnalysisOptions, device: torch.device, ctx: RunContext) -> Verified:
    """Verify one pair of lewc checkpoints into its folder (reused when it exists, unless ``ctx.force``).

    Each checkpoint is loaded once (sidecar, sha256, every tensor checked) and the pair checked to fit
    (one architecture, one dataset, two different sets of weights) before the dataset is read. The
    folder is named by content (both weights' sha256 and the dataset's identity), and the endpoints'
    accuracies are measured before any analysis: chance-level endpoints are refused. An explicit
    ``ctx.out`` is always (re)written.
    """
    t0 = time.perf_counter()
    for path in paths:
        if checkpoints.weights_path(path) != Path(path) and Path(path).suffix not in ("", ".json"):
            raise LewcError(f"checkpoint {path} is not a .safetensors file (lewc never unpickles .pt files)")
        checkpoints.check_file(checkpoints.weights_path(path), "checkpoint")
    model_a, meta_a = checkpoints.load(paths[0], device)
    model_b, meta_b = checkpoints.load(paths[1], device)
    pair = Pair(model_a, model_b, meta_a, meta_b)  # architecture, dataset, names and shapes agree
    check_distinct(meta_a, meta_b)
    n_calib, inputs = meta_a.trained_with("n_calib"), meta_a.trained_with("inputs", "standardized")
    if inputs != meta_b.trained_with("inputs", "standardized"):
        raise LewcError("the two checkpoints were trained on differently scaled inputs (train_config 'inputs')")
    ds = load_dataset(meta_a.dataset, device, ctx.data_root, n_calib, inputs=inputs)
    options = used_options(options, len(ds.test)).on(device)  # the device type names non-CPU folders
    out_dir = ctx.out or results_folder(meta_a, meta_b, options, ds.identity)
    samples_ok = not ctx.keep_samples or (out_dir / "samples.nc").is_file()
    if not ctx.force and ctx.out is None and samples_ok and reusable(out_dir, meta_a, meta_b, ds.identity):
        log.info(
            "reusing %s: the same weights (A sha256 %s, B %s), dataset %s (identity %s) and analysis (%s); "
            "--force redoes it",
            out_dir,
            meta_a.sha256[:16],
            meta_b.sha256[:16],
            meta_a.dataset,
            ds.identity,
            options.key(),
        )
        report = read_json(out_dir / "report.json", "report")
        if not controls_done(report):
            report = resume_controls(out_dir, report, pair, ds, options, settings(ctx), device)
        return Verified(out_dir / "report.json", report, open_results(out_dir / "results.nc").load())
    log.info(
        "load: %s and %s, %s (%d train, %d test images) on %s, %.1f s",
        paths[0].name,
        paths[1].name,
        ds.info.name,
        len(ds.train),
        len(ds.test),
        device,
        time.perf_counter() - t0,
    )
    check_endpoints(
        {"a": model_a, "b": model_b},
        {"a": meta_a, "b": meta_b},
        {"a": paths[0], "b": paths[1]},
        ds,
        options.n_test,
        ctx.batch_size_eval,
        ctx.allow_chance,
    )
    files = {"checkpoint_a": str(paths[0]), "checkpoint_b": str(paths[1])}
    seeds = [meta_a.seed, meta_b.seed]
    provenance = run_provenance(ctx.command, options, device, seeds, files, dataset_identity=ds.identity)
    report, results = analyse_and_publish(out_dir, pair, ds, options, settings(ctx), device, provenance, ctx.command)
    return Verified(out_dir / "report.json", report, results)


def verify_state_dicts(ends: StateDicts, options: AnalysisOptions, device: torch.device, ctx: RunContext) -> Verified:
    """Plain state dicts of an architecture: build, load strictly, trace if foreign, verify (never reused)."""
    arch = interop.parse_arch(ends.arch, ends.arch_kwargs)
    if arch.family is None and not ends.dataset:
        raise LewcError("--arch module:factory needs --dataset (the data to evaluate the models on)")
    dataset = ends.dataset or get_family(arch.family).default_dataset
    info = dataset_info(dataset)
    ds = load_dataset(dataset, device, ctx.data_root)
    path_a, path_b = ends.paths
    endpoints = [
        interop.foreign_endpoint(arch, Path(p), tag, dataset, info.num_classes, info.in_shape)
        for p, tag in ((path_a, "A"), (path_b, "B"))
    ]
    (model_a, meta_a), (model_b, meta_b) = endpoints
    check_distinct(meta_a, meta_b)
    # built on the CPU from the files; the dataset is on ``device`` already (a CPU model on CUDA data
    # crashed here in addmm)
    model_a, model_b = model_a.to(device), model_b.to(device)
    with torch.no_grad():
        classes = model_a(ds.normalize(ds.test.x[:2])).shape[1]
    if classes < info.num_classes:
        raise LewcError(f"the models have {classes} outputs but {dataset} has {info.num_classes} classes")
    pair = Pair(model_a, model_b, meta_a, meta_b)
    options = options.on(device)
    out_dir = ctx.out or results_folder(meta_a, meta_b, options, ds.identity, label=f"{dataset}_{arch.label}")
    files = {"checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    provenance = run_provenance(ctx.command, options, device, ["A", "B"], files, dataset_identity=ds.identity)
    run_settings = settings(ctx, align_cache=False)
    report, results = analyse_and_publish(out_dir, pair, ds, options, run_settings, device, provenance, ctx.command)
    return Verified(out_dir / "report.json", report, results)
