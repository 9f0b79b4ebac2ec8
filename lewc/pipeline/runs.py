"""Checkpoints in, a published results folder out: the runs every client shares.

``lewc.verify`` (the command line), ``lewc.commands.study`` (its jobs, in a worker process or on a
SLURM node) and ``lewc.commands.table1`` all end here with explicit, typed arguments — training
configs, ``AnalysisOptions`` and a ``RunContext`` — never an argparse ``Namespace`` or ``sys.argv``.

* ``verify_configs``: train the pair's missing endpoints (cost gate first), then ``verify_checkpoints``.
* ``verify_checkpoints``: load lewc checkpoints, measure the endpoints (chance-level ones are refused),
  analyse, publish; a folder computed from exactly these weights and this dataset is reused.
* ``verify_foreign``: plain state dicts plus an architecture (``lewc.pipeline.interop``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import xarray as xr

from lewc.align.methods import check_methods
from lewc.core.conventions import BN_IMAGES, DEFAULT_LAMS
from lewc.core.errors import LewcError
from lewc.core.io import data_home, read_json
from lewc.models import get_family
from lewc.pipeline import interop, memplan
from lewc.pipeline.endpoints import check_endpoints, checkpoint_folder, ensure_trained, plan_pair
from lewc.pipeline.folders import AnalysisOptions, check_writable, results_folder, run_provenance
from lewc.pipeline.pair import RunSettings, analyse_pair, write_folder
from lewc.reporting.results import open_results
from lewc.sweep.merge import Pair, check_lams
from lewc.training import checkpoints
from lewc.training.data import dataset_info, load_dataset
from lewc.training.recipe import TrainConfig

log = logging.getLogger("lewc.verify")  # the command line's stages, whichever client runs them
MIN_TEST_IMAGES = 10


@dataclass(frozen=True)
class RunContext:
    """Where a run reads and writes and how it reports — nothing here changes a number."""

    command: str = ""  # recorded in the results' provenance (the command line, or a driver's description)
    data_root: str | None = None  # folder searched first for dataset files
    ckpt_dir: Path | None = None  # checkpoint folder (default data/checkpoints/)
    batch_size_eval: int = 500
    progress: bool = True
    keep_samples: bool = False  # also write samples.nc
    force: bool = False  # redo an analysis whose folder exists
    allow_chance: bool = False  # analyse chance-level endpoints anyway (recorded in the results)

    def settings(self, align_cache: bool = True) -> RunSettings:
        cache = checkpoint_folder(self.ckpt_dir) / "aligned" if align_cache else None
        return RunSettings(self.batch_size_eval, self.progress, cache, self.keep_samples, self.allow_chance)


class Verified(NamedTuple):
    """What a run published: the path of report.json, the report, and the results (results.nc, loaded)."""

    report_path: Path
    report: dict
    results: xr.Dataset | None


def analysis_options(
    lams=DEFAULT_LAMS,
    n_test: int | None = None,
    bn_images: int = BN_IMAGES,
    controls: bool = True,
    align=("none", "weights"),
) -> AnalysisOptions:
    """Checked options: λ in [0, 1] with 0, ½ and 1; known alignments, ``none`` first; counts in range."""
    grid = check_lams(list(lams))
    if not any(np.isclose(grid, 0.5)):
        raise LewcError("the λ grid must contain 0.5 (barriers and verdicts are taken at λ = ½)")
    if n_test is not None and n_test < MIN_TEST_IMAGES:
        raise LewcError(f"--n-test must be at least {MIN_TEST_IMAGES} (bootstrap intervals need images)")
    if bn_images < 2:
        raise LewcError(f"--bn-images must be at least 2 (BatchNorm statistics need a batch), got {bn_images}")
    methods = check_methods(align if isinstance(align, str) else ",".join(align))
    methods = ["none"] + [m for m in methods if m != "none"]
    return AnalysisOptions(tuple(grid), n_test, bn_images, bool(controls), tuple(methods))


def used_options(options: AnalysisOptions, n_test_images: int) -> AnalysisOptions:
    """The options as run: an ``n_test`` at or above the test set's size is all of it (recorded as such)."""
    if options.n_test is not None and options.n_test >= n_test_images:
        if options.n_test > n_test_images:
            log.warning("--n-test %d exceeds the %d test images; using all of them", options.n_test, n_test_images)
        return dataclasses.replace(options, n_test=None)
    return options


def reusable(out_dir: Path, meta_a: dict, meta_b: dict, data_id: str) -> bool:
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
        attrs.get("sha256_a") == meta_a["sha256"]
        and attrs.get("sha256_b") == meta_b["sha256"]
        and attrs.get("dataset_identity") == data_id
    )


def verify_configs(
    configs: list[TrainConfig],
    options: AnalysisOptions,
    device: torch.device,
    ctx: RunContext,
    *,
    no_train: bool = False,
    allow_slow: bool = False,
    out_dir: Path | None = None,
) -> Verified:
    """Train the pair's missing endpoints (resuming a snapshot), then verify them into their folder.

    Everything is checked before any training: the configs, the cost gate, and that the results can be
    written (a read-only folder found after hours of training would lose them).
    """
    for cfg in configs:
        cfg.validate()
    check_writable(out_dir if out_dir is not None else data_home() / "results")
    folder = checkpoint_folder(ctx.ckpt_dir)
    plan_pair(configs, folder, device, no_train, allow_slow)
    memplan.check_configs(configs, options, device, ctx.batch_size_eval)  # fits, or exit 2 before training
    paths = ensure_trained(configs, folder, device, ctx.data_root, ctx.progress)
    return verify_checkpoints(paths, options, device, ctx, out_dir)


def verify_checkpoints(
    paths: list[Path], options: AnalysisOptions, device: torch.device, ctx: RunContext, out_dir: Path | None = None
) -> Verified:
    """Verify one pair of lewc checkpoints into its folder (reused when it exists, unless ``ctx.force``).

    The folder is named by content (both weights' sha256 and the dataset's identity), and the
    endpoints' accuracies are measured before any analysis: chance-level endpoints are refused.
    An explicit ``out_dir`` is always (re)written.
    """
    meta_a, meta_b = checkpoints.read_meta(paths[0]), checkpoints.read_meta(paths[1])
    t0 = time.perf_counter()
    train_config = meta_a.get("train_config") or {}
    n_calib, inputs = train_config.get("n_calib"), train_config.get("inputs", "standardized")
    if inputs != (meta_b.get("train_config") or {}).get("inputs", "standardized"):
        raise LewcError("the two checkpoints were trained on differently scaled inputs (train_config 'inputs')")
    ds = load_dataset(meta_a["dataset"], device, ctx.data_root, n_calib, inputs=inputs)
    options = used_options(options, len(ds.test)).on(device)  # the device type names non-CPU folders
    explicit = out_dir is not None
    out_dir = out_dir or results_folder(meta_a, meta_b, options, ds.identity)
    samples_ok = not ctx.keep_samples or (out_dir / "samples.nc").is_file()
    if not ctx.force and not explicit and samples_ok and reusable(out_dir, meta_a, meta_b, ds.identity):
        log.info(
            "reusing %s: the same weights (A sha256 %s, B %s), dataset %s (identity %s) and analysis (%s); "
            "--force redoes it",
            out_dir,
            meta_a["sha256"][:16],
            meta_b["sha256"][:16],
            meta_a["dataset"],
            ds.identity,
            options.key(),
        )
        report = read_json(out_dir / "report.json", "report")
        return Verified(out_dir / "report.json", report, open_results(out_dir / "results.nc").load())
    model_a, meta_a = checkpoints.load(paths[0], device)
    model_b, meta_b = checkpoints.load(paths[1], device)
    pair = Pair(model_a, model_b, meta_a, meta_b)
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
    seeds = [meta_a["seed"], meta_b["seed"]]
    provenance = run_provenance(ctx.command, options, device, seeds, files, dataset_identity=ds.identity)
    result = analyse_pair(pair, ds, options, ctx.settings(), device, provenance)
    report = write_folder(out_dir, result, ctx.command, keep_samples=ctx.keep_samples)
    return Verified(out_dir / "report.json", report, result.results)


def verify_foreign(
    arch,
    path_a: Path,
    path_b: Path,
    dataset: str | None,
    options: AnalysisOptions,
    device: torch.device,
    ctx: RunContext,
    out_dir: Path | None = None,
) -> Verified:
    """Plain state dicts of ``arch`` (an ``interop.ArchSpec``): build, load strictly, trace if foreign, verify."""
    if arch.family is None and not dataset:
        raise LewcError("--arch module:factory needs --dataset (the data to evaluate the models on)")
    dataset = dataset or get_family(arch.family).default_dataset
    info = dataset_info(dataset)
    ds = load_dataset(dataset, device, ctx.data_root)
    endpoints = [
        interop.foreign_endpoint(arch, Path(p), tag, dataset, info.num_classes, info.in_shape)
        for p, tag in ((path_a, "A"), (path_b, "B"))
    ]
    (model_a, meta_a), (model_b, meta_b) = endpoints
    if meta_a["sha256"] == meta_b["sha256"]:
        raise LewcError("--ckpt-a and --ckpt-b are the same weights (identical sha256)")
    # built on the CPU from the files; the dataset is on ``device`` already (a CPU model on CUDA data
    # crashed here in addmm)
    model_a, model_b = model_a.to(device), model_b.to(device)
    with torch.no_grad():
        classes = model_a(ds.normalize(ds.test.x[:2])).shape[1]
    if classes < info.num_classes:
        raise LewcError(f"the models have {classes} outputs but {dataset} has {info.num_classes} classes")
    pair = Pair(model_a, model_b, meta_a, meta_b)
    options = options.on(device)
    name = f"{dataset}_{arch.label}_{meta_a['sha256'][:8]}-{meta_b['sha256'][:8]}_d{ds.identity[:8]}_a{options.key()}"
    out_dir = out_dir or data_home() / "results" / name
    files = {"checkpoint_a": str(path_a), "checkpoint_b": str(path_b)}
    provenance = run_provenance(ctx.command, options, device, ["A", "B"], files, dataset_identity=ds.identity)
    result = analyse_pair(pair, ds, options, ctx.settings(align_cache=False), device, provenance)
    report = write_folder(out_dir, result, ctx.command, keep_samples=ctx.keep_samples)
    return Verified(out_dir / "report.json", report, result.results)
