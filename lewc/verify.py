"""``python -m lewc.verify``: from a model name to a verdict per claim, with controls, a report and figures.

With no arguments it verifies the embedded default: a pair of Fashion-MNIST MLPs ×1 (3×512; seeds 0, 1),
trained first (in-process, ``lewc.training.train``) if their checkpoints are missing. It sweeps λ once with
the merge engine and the layer capture, runs the same pipeline on a positive control (exact LEWC:
the endpoints in disjoint blocks of a 2× wide network) and a negative control (exact LLFC: A with
itself), and publishes one folder: ``results.nc`` (+ ``control_*.nc``), figures, ``report.md`` and
``report.json``. The folder's name identifies the pair *and* the analysis options, so a different
analysis never overwrites another and rerunning the same one reuses it (``--force`` redoes it).
The last line printed is the path of ``report.json``.

``--seeds 0,1,2,3`` forms pairs (0,1), (2,3): each pair gets its own folder, and the verdicts are
combined over pairs (intervals resample pairs, then images). ``--widths 1,4,16`` repeats that per
width and writes ``sweep.nc`` with ``width`` and ``pair`` dimensions.

Exit codes: 0 ran (whatever the verdicts), 2 bad input (one line, nothing written), 1 internal error.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lewc.core import logs
from lewc.core.conventions import BN_IMAGES, DEFAULT_LAMS
from lewc.core.device import resolve_device
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.validate import check_int, check_plain_name, short
from lewc.models.registry import MAX_BASE_WIDTH, MAX_WIDTH
from lewc.pipeline.endpoints import check_endpoints, checkpoint_folder, ensure_trained, plan_pair
from lewc.pipeline.folders import AnalysisOptions, check_writable, results_folder, run_provenance
from lewc.pipeline.pair import PairResult, RunSettings, analyse_pair, write_folder
from lewc.pipeline.widths import write_sweep
from lewc.reporting import report
from lewc.reporting.results import open_results
from lewc.stats.claims import evaluate_verdicts
from lewc.sweep.merge import Pair, check_lams
from lewc.training import checkpoints
from lewc.training.checkpoints import MAX_SEED
from lewc.training.data import data_home, dataset_info, load_dataset
from lewc.training.recipe import TrainConfig, add_recipe_arguments, config_from_args

MIN_TEST_IMAGES = 10
log = logging.getLogger("lewc.verify")  # not __name__: that is "__main__" under python -m lewc.verify
MAX_COUNT = 10**8  # images, epochs, batch sizes: far above any dataset here, far below an overflow
MAX_SEEDS = 1000


def parse_list(text: str, kind=float) -> list:
    try:
        values = [kind(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise LewcError(f"cannot parse {short(text)} as a comma-separated list of {kind.__name__}") from None
    if not values:
        raise LewcError(f"{short(text)} is an empty list")
    return values


def command_line() -> str:
    return "python -m lewc.verify " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# --- one pair from its checkpoints ------------------------------------------------------------------


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    return RunSettings(
        batch_size_eval=args.batch_size_eval,
        progress=not args.quiet,
        align_cache=checkpoint_folder(args.ckpt_dir) / "aligned",
        keep_samples=args.keep_samples,
    )


def pair_configs(args: argparse.Namespace, width: int, seeds: tuple[int, int]) -> list[TrainConfig]:
    return [config_from_args(args, width, s) for s in seeds]


def plan(args: argparse.Namespace, width: int, seeds: tuple[int, int], device: torch.device) -> list[TrainConfig]:
    folder = checkpoint_folder(args.ckpt_dir)
    return plan_pair(pair_configs(args, width, seeds), folder, device, args.no_train, args.allow_slow)


def trained(configs: list[TrainConfig], args: argparse.Namespace, device: torch.device) -> list[Path]:
    return ensure_trained(configs, checkpoint_folder(args.ckpt_dir), device, args.data_root, not args.quiet)


def used_options(options: AnalysisOptions, n_test_images: int) -> AnalysisOptions:
    """The options as run: an ``--n-test`` at or above the test set's size is all of it (recorded as such)."""
    if options.n_test is not None and options.n_test >= n_test_images:
        if options.n_test > n_test_images:
            log.warning("--n-test %d exceeds the %d test images; using all of them", options.n_test, n_test_images)
        return dataclasses.replace(options, n_test=None)
    return options


def reusable(out_dir: Path, meta_a: dict, meta_b: dict, data_id: str) -> bool:
    """A published folder whose results were computed from exactly these weights and this dataset."""
    if not (out_dir / "report.json").is_file() or not (out_dir / "results.nc").is_file():
        return False
    attrs = open_results(out_dir / "results.nc").attrs
    return (
        attrs.get("sha256_a") == meta_a["sha256"]
        and attrs.get("sha256_b") == meta_b["sha256"]
        and attrs.get("dataset_identity") == data_id
    )


def verify_checkpoints(
    paths: list[Path], args: argparse.Namespace, options: AnalysisOptions, device: torch.device, out_dir: Path | None
) -> tuple[Path, dict, object]:
    """Verify one pair of checkpoints into its folder (reused when it exists): (report.json, report, results).

    The folder is named by content (both weights' sha256 and the dataset's identity), and the
    endpoints' accuracies are measured before any analysis: chance-level endpoints are refused.
    """
    meta_a, meta_b = checkpoints.read_meta(paths[0]), checkpoints.read_meta(paths[1])
    t0 = time.perf_counter()
    n_calib = (meta_a.get("train_config") or {}).get("n_calib")
    ds = load_dataset(meta_a["dataset"], device, args.data_root, n_calib)
    options = used_options(options, len(ds.test))
    out_dir = out_dir or results_folder(meta_a, meta_b, options, ds.identity)
    samples_ok = not args.keep_samples or (out_dir / "samples.nc").is_file()
    if not args.force and args.out is None and samples_ok and reusable(out_dir, meta_a, meta_b, ds.identity):
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
        return (
            out_dir / "report.json",
            json.loads((out_dir / "report.json").read_text()),
            open_results(out_dir / "results.nc").load(),
        )
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
        args.batch_size_eval,
    )
    files = {"checkpoint_a": str(paths[0]), "checkpoint_b": str(paths[1])}
    seeds = [meta_a["seed"], meta_b["seed"]]
    provenance = run_provenance(command_line(), options, device, seeds, files, dataset_identity=ds.identity)
    result: PairResult = analyse_pair(pair, ds, options, settings_from_args(args), device, provenance)
    rep = write_folder(out_dir, result, command_line(), keep_samples=args.keep_samples)
    return out_dir / "report.json", rep, result.results


def verify_state_dicts(args: argparse.Namespace, options: AnalysisOptions, device: torch.device) -> tuple[Path, dict]:
    """``--arch`` with plain state dicts: build, load strictly, trace if foreign, verify on ``--dataset``."""
    from lewc.models import get_family
    from lewc.pipeline import interop

    if not args.ckpt_a:
        raise LewcError("--arch describes the checkpoints given by --ckpt-a and --ckpt-b; give both")
    arch = interop.parse_arch(args.arch, args.arch_kwargs)
    if arch.family is None and not args.dataset:
        raise LewcError("--arch module:factory needs --dataset (the data to evaluate the models on)")
    dataset = args.dataset or get_family(arch.family).default_dataset
    info = dataset_info(dataset)
    ds = load_dataset(dataset, device, args.data_root)
    endpoints = [
        interop.foreign_endpoint(arch, Path(p), tag, dataset, info.num_classes, info.in_shape)
        for p, tag in ((args.ckpt_a, "A"), (args.ckpt_b, "B"))
    ]
    (model_a, meta_a), (model_b, meta_b) = endpoints
    if meta_a["sha256"] == meta_b["sha256"]:
        raise LewcError("--ckpt-a and --ckpt-b are the same weights (identical sha256)")
    with torch.no_grad():
        classes = model_a(ds.normalize(ds.test.x[:2])).shape[1]
    if classes < info.num_classes:
        raise LewcError(f"the models have {classes} outputs but {dataset} has {info.num_classes} classes")
    pair = Pair(model_a.to(device), model_b.to(device), meta_a, meta_b)
    name = f"{dataset}_{arch.label}_{meta_a['sha256'][:8]}-{meta_b['sha256'][:8]}_d{ds.identity[:8]}_a{options.key()}"
    out_dir = args.out or data_home() / "results" / name
    files = {"checkpoint_a": str(args.ckpt_a), "checkpoint_b": str(args.ckpt_b)}
    provenance = run_provenance(command_line(), options, device, ["A", "B"], files, dataset_identity=ds.identity)
    settings = RunSettings(batch_size_eval=args.batch_size_eval, progress=not args.quiet, align_cache=None)
    result = analyse_pair(pair, ds, options, settings, device, provenance)
    return out_dir / "report.json", write_folder(out_dir, result, command_line(), keep_samples=args.keep_samples)


# --- command line --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m lewc.verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_recipe_arguments(p, model_default="mlp")
    g = p.add_argument_group("pairs")
    g.add_argument(
        "--width",
        type=int,
        default=1,
        help="width multiplier of the pair over the field's ×1 network (default 1; mlp ×1 = 3×512 hidden units, "
        "×16 = 3×8192; resnet20 ×1 = 16/32/64 channels; vgg ×1 = 64…512 channels)",
    )
    g.add_argument("--widths", help="comma-separated widths for a sweep, e.g. 1,4,16 (overrides --width)")
    g.add_argument("--seeds", default="0,1", help="seeds, comma-separated; consecutive seeds form pairs (default 0,1)")
    g.add_argument(
        "--ckpt-a", type=Path, help="checkpoint of endpoint A (.safetensors; with --arch also .pt/.pth); skips training"
    )
    g.add_argument("--ckpt-b", type=Path, help="checkpoint of endpoint B (.safetensors)")
    g.add_argument("--ckpt-dir", type=Path, help="checkpoint folder (default data/checkpoints/)")
    g.add_argument(
        "--arch",
        help="architecture of plain state-dict checkpoints (--ckpt-a/--ckpt-b as .pt/.pth/.safetensors without a "
        "lewc sidecar): a lewc family with options, e.g. mlp:width=16,depth=3, or package.module:factory, e.g. "
        "torchvision.models:resnet18 (evaluated on --dataset, default: the family's)",
    )
    g.add_argument("--arch-kwargs", help="keyword arguments of an --arch factory, e.g. num_classes=10,weights=none")
    g.add_argument("--no-train", action="store_true", help="never train: fail if a checkpoint is missing")
    g.add_argument("--allow-slow", action="store_true", help="train even when the cost estimate is large here")
    g = p.add_argument_group("analysis (these options name the results folder)")
    g.add_argument(
        "--lams",
        default=",".join(str(v) for v in DEFAULT_LAMS),
        help="λ grid in [0, 1], must contain 0, 0.5 and 1 (default 0,0.1,…,1)",
    )
    g.add_argument("--n-test", type=int, help=f"evaluate on the first N ≥ {MIN_TEST_IMAGES} test images (default: all)")
    g.add_argument(
        "--bn-images",
        type=int,
        default=BN_IMAGES,
        help=f"training images for BN re-estimation, ≥ 2 (default {BN_IMAGES})",
    )
    g.add_argument(
        "--no-controls", action="store_true", help="skip the positive (exact LEWC) and negative (exact LLFC) controls"
    )
    g.add_argument(
        "--align",
        default="none,weights",
        help="alignments of B to A analysed side by side: none, weights (weight matching), activations "
        "(activation matching on 2,000 training images), random (a control), random_direction (B replaced by A "
        "moved a random direction as far as B, tensor by tensor); 'none' is always included "
        "(default none,weights: the paper's comparison; weight matching needs no data)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--batch-size-eval", type=int, default=500, help="evaluation batch size (default 500)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--data-root", help="folder searched first for the dataset files")
    g.add_argument("--out", type=Path, help="output folder (default data/results/<pair>_a<analysis hash>/)")
    g.add_argument("--force", action="store_true", help="redo an analysis whose results folder already exists")
    g.add_argument("--json", action="store_true", help="print report.json to stdout instead of the table")
    g.add_argument(
        "--keep-samples",
        action="store_true",
        help="also write samples.nc: the per-image Gram terms, sampled coordinates, condition sums and logits "
        "(tens of MB; results.nc keeps the summaries and the claims' bootstrap replicates)",
    )
    logs.add_common_arguments(p)
    return p


def validate(args: argparse.Namespace) -> tuple[AnalysisOptions, list[int], list[int]]:
    """Check every input before anything is trained, analysed or written."""
    lams = check_lams(parse_list(args.lams))
    if not any(np.isclose(lams, 0.5)):
        raise LewcError("the λ grid must contain 0.5 (barriers and verdicts are taken at λ = ½)")
    widths = parse_list(args.widths, int) if args.widths else [args.width]
    for w in widths:
        check_int(w, "width", 1, MAX_WIDTH)
    seeds = parse_list(args.seeds, int)
    if len(seeds) < 2 or len(seeds) % 2:
        raise LewcError(f"--seeds needs an even number (≥ 2) of seeds, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise LewcError(f"--seeds must be distinct (a pair of one seed is not independent), got {seeds}")
    if bool(args.ckpt_a) != bool(args.ckpt_b):
        raise LewcError("--ckpt-a and --ckpt-b go together")
    if args.ckpt_a and (args.widths or args.seeds != "0,1"):
        raise LewcError("--ckpt-a/--ckpt-b name one pair; they cannot be combined with --widths or --seeds")
    if args.n_test is not None and args.n_test < MIN_TEST_IMAGES:
        raise LewcError(f"--n-test must be at least {MIN_TEST_IMAGES} (bootstrap intervals need images)")
    if args.n_test is not None:  # above the test set's size it is clamped to all of it (used_options)
        check_int(args.n_test, "--n-test", MIN_TEST_IMAGES, MAX_COUNT)
    if args.bn_images < 2:
        raise LewcError(f"--bn-images must be at least 2 (BatchNorm statistics need a batch), got {args.bn_images}")
    check_int(args.bn_images, "--bn-images", 2, MAX_COUNT)
    if args.batch_size_eval <= 0:
        raise LewcError(f"--batch-size-eval must be positive, got {args.batch_size_eval}")
    check_int(args.batch_size_eval, "--batch-size-eval", 1, MAX_COUNT)
    for flag in ("epochs", "batch_size", "base_width", "depth"):
        value = getattr(args, flag)
        if value is not None:
            check_int(value, f"--{flag.replace('_', '-')}", 1, MAX_BASE_WIDTH if flag == "base_width" else MAX_COUNT)
    if len(seeds) > MAX_SEEDS or any(s < 0 or s > MAX_SEED for s in seeds):
        raise LewcError(f"--seeds takes at most {MAX_SEEDS} seeds in [0, {MAX_SEED}]")
    if args.out is not None:
        check_writable(args.out)
    check_writable(data_home() / "results")
    from lewc.align.methods import check_methods

    methods = check_methods(args.align)
    methods = ["none"] + [m for m in methods if m != "none"]
    options = AnalysisOptions(tuple(lams), args.n_test, args.bn_images, not args.no_controls, tuple(methods))
    return options, widths, seeds


def check_checkpoint_pair(path_a: Path, path_b: Path, args: argparse.Namespace) -> None:
    """Both checkpoints load, fit each other and differ; recipe flags are not silently ignored."""
    for path in (path_a, path_b):
        if checkpoints.weights_path(path) != Path(path) and Path(path).suffix not in ("", ".json"):
            raise LewcError(f"checkpoint {path} is not a .safetensors file (lewc never unpickles .pt files)")
        checkpoints.check_file(checkpoints.weights_path(path), "checkpoint")
    model_a, meta_a = checkpoints.load(path_a, "cpu")
    model_b, meta_b = checkpoints.load(path_b, "cpu")
    Pair(model_a, model_b, meta_a, meta_b)  # architecture, dataset, names and shapes agree
    if meta_a.get("sha256") == meta_b.get("sha256"):
        raise LewcError(
            "--ckpt-a and --ckpt-b are the same weights (identical sha256): a pair must be two independently "
            "trained networks (the negative control already merges A with itself)"
        )
    given = [f"--{k.replace('_', '-')}" for k in ("dataset", "epochs", "lr", "wd", "norm", "base_width", "depth")]
    ignored = [flag for flag in given if getattr(args, flag[2:].replace("-", "_")) is not None]
    if args.no_bias:
        ignored.append("--no-bias")
    if ignored:
        raise LewcError(f"{', '.join(ignored)} describe(s) training, but --ckpt-a/--ckpt-b name finished checkpoints")


def verify_pair(argv: list[str]) -> Path:
    """One pair, as the command line would run it, for drivers (``experiments.study``): the folder.

    Raises ``LewcError`` on bad input; trains missing endpoints; reuses a finished analysis.
    """
    args = build_parser().parse_args([*argv, "--quiet"])
    options, widths, seeds = validate(args)
    if len(widths) != 1 or len(seeds) != 2:
        raise LewcError("verify_pair takes one width and one pair of seeds")
    device = resolve_device(args.device)
    paths = trained(plan(args, widths[0], (seeds[0], seeds[1]), device), args, device)
    path, _, _ = verify_checkpoints(paths, args, options, device, args.out)
    return path.parent


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.start(args)
    options, widths, seeds = validate(args)
    device = resolve_device(args.device)
    if args.arch:
        path, rep = verify_state_dicts(args, options, device)
        finish(path, rep, args)
        return
    if args.ckpt_a:
        check_checkpoint_pair(args.ckpt_a, args.ckpt_b, args)
        path, rep, _ = verify_checkpoints([args.ckpt_a, args.ckpt_b], args, options, device, args.out)
        finish(path, rep, args)
        return
    pairs = [(seeds[i], seeds[i + 1]) for i in range(0, len(seeds), 2)]
    plans = {(w, p): plan(args, w, seed_pair, device) for w in widths for p, seed_pair in enumerate(pairs)}
    if len(plans) == 1:
        paths = trained(plans[(widths[0], 0)], args, device)
        path, rep, _ = verify_checkpoints(paths, args, options, device, args.out)
        finish(path, rep, args)
        return
    results, report_paths, combined = {}, {}, {}
    for w in widths:
        for p, seed_pair in enumerate(pairs):
            paths = trained(plans[(w, p)], args, device)
            out = args.out / check_plain_name(f"w{w}_p{p}", "--out subfolder") if args.out else None
            path, rep, res = verify_checkpoints(paths, args, options, device, out)
            log.info(
                "width %d, seeds %s: %s", w, seed_pair, ", ".join(f"{c['id']} {c['verdict']}" for c in rep["claims"])
            )
            results[(w, p)] = res
            report_paths[f"w{w}_p{p}"] = str(path)
        combined[w] = evaluate_verdicts([results[(w, p)] for p in range(len(pairs))])
    dataset = args.dataset or results[(widths[0], 0)].attrs["dataset"]
    name = f"{dataset}_{args.model}_sweep_w{'-'.join(map(str, widths))}_s{'-'.join(map(str, seeds))}_a{options.key()}"
    if len(name) > 200:  # many widths or seeds: their list is hashed instead of spelled out
        digest = hashlib.sha256(f"{widths}/{seeds}".encode()).hexdigest()[:12]
        name = f"{dataset}_{args.model}_sweep_{len(widths)}w-{len(seeds)}s-{digest}_a{options.key()}"
    check_plain_name(name, "sweep folder name")
    write_sweep(
        args.out or data_home() / "results" / name, results, widths, pairs, report_paths, combined, command_line()
    )


def finish(path: Path, rep: dict, args: argparse.Namespace) -> None:
    if args.json:
        print(report.dumps(rep), end="")
        print(path, file=sys.stderr)
        return
    a = rep["pair"]["a"]
    label = rep.get("width_label") or f"{a['model']} ×{a['width']}"
    ends = rep["endpoint_test_acc"]  # measured: the λ = 0 and λ = 1 slices of this sweep, never the sidecar
    print(f"{label} on {a['dataset']}: endpoint test accuracy (measured) {ends['a']:.2f} % / {ends['b']:.2f} %")
    print(report.verdict_table(rep["claims"], rep.get("controls", {})))
    table = report.alignment_table(rep)
    if table:
        print("\npermutations side by side:\n" + table)
    print(path)


if __name__ == "__main__":
    main()
