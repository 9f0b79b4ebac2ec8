"""``python -m lewc.verify``: from a model name to a verdict per claim, with controls, a report and figures.

With no arguments it verifies the embedded default: a pair of Fashion-MNIST MLPs ×16 (seeds 0, 1),
trained first (in-process, ``lewc.train``) if their checkpoints are missing. It sweeps λ once with
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
import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from lewc import checkpoints, report
from lewc.analysis import analyze
from lewc.claims import Claim, evaluate_claims, evaluate_verdicts
from lewc.conventions import BN_IMAGES, DEFAULT_LAMS
from lewc.data import data_home, load_dataset
from lewc.device import resolve_device
from lewc.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.io import write_json_atomic
from lewc.merge import Pair, check_lams
from lewc.path import SweepOptions
from lewc.recipe import TrainConfig, add_recipe_arguments, config_from_args
from lewc.results import (
    RESULTS_SCHEMA,
    SWEEP_SCHEMA,
    alignments,
    for_alignment,
    json_attr,
    open_results,
    stack_alignments,
    write_netcdf,
)

CPU_FLOPS = 5e10  # sustained FLOP/s assumed for a CPU when estimating training cost
SLOW_SECONDS = 1800
MIN_TEST_IMAGES = 10
TMP_PREFIX = ".tmp-"


def parse_list(text: str, kind=float) -> list:
    try:
        values = [kind(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise LewcError(f"cannot parse {text!r} as a comma-separated list of {kind.__name__}") from None
    if not values:
        raise LewcError(f"{text!r} is an empty list")
    return values


def command_line() -> str:
    return "python -m lewc.verify " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# --- what to analyse and where it goes -------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisOptions:
    """Every option that changes a result; its hash names the results folder."""

    lams: tuple[float, ...]
    n_test: int | None
    bn_images: int
    controls: bool
    align: tuple[str, ...] = ("none",)

    def key(self) -> str:
        blob = json.dumps({"schema": RESULTS_SCHEMA, **self.__dict__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


def pair_name(meta_a: dict, meta_b: dict) -> str:
    cfg = meta_a.get("train_config")
    suffix = TrainConfig.from_dict(cfg).hash_without_seed() if isinstance(cfg, dict) else meta_a["sha256"][:8]
    return f"{meta_a['dataset']}_{meta_a['model']}_w{meta_a['width']}_s{meta_a['seed']}-{meta_b['seed']}_{suffix}"


def results_folder(meta_a: dict, meta_b: dict, options: AnalysisOptions) -> Path:
    return data_home() / "results" / f"{pair_name(meta_a, meta_b)}_a{options.key()}"


def check_writable(folder: Path) -> None:
    """Fail before any work if ``folder`` cannot be created or written."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LewcError(f"output folder {folder} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LewcError(f"output folder {folder} is not writable ({probe} is read-only)")
    if folder.exists() and not folder.is_dir():
        raise LewcError(f"output folder {folder} is a file")


def publish(tmp: Path, final: Path) -> None:
    """Make the finished folder ``tmp`` visible as ``final`` by renames (the old one, if any, goes).

    Readers see either the old complete folder or the new one; concurrent runs into one folder are
    serialised by an advisory lock, and the last to finish wins.
    """
    import fcntl

    for path in [tmp, *tmp.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    with open(final.parent / f".lock-{final.name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = None
        if final.exists():
            old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def clean_stale(parent: Path) -> None:
    """Remove leftovers of killed runs (``.tmp-*`` folders) older than a day; readers ignore the rest."""
    if not parent.is_dir():
        return
    now = _dt.datetime.now().timestamp()
    for path in parent.glob(f"{TMP_PREFIX}*"):
        if path.is_dir() and now - path.stat().st_mtime > 86400:
            shutil.rmtree(path, ignore_errors=True)


# --- checkpoints -------------------------------------------------------------------------------------


def training_cost_seconds(cfg: TrainConfig, device: torch.device, n_train: int = 55000) -> float:
    """Rough cost of training one endpoint: 3 × forward FLOPs × images × epochs at the device's rate."""
    from lewc.data import dataset_info
    from lewc.models import build

    info = dataset_info(cfg.dataset)
    with torch.device("meta"):
        model = build(
            cfg.model, cfg.width, info.num_classes, info.in_shape, cfg.norm, cfg.bias, cfg.base_width, cfg.depth
        )
    flops = checkpoints.count_flops_per_image(model, info.in_shape)
    rate = CPU_FLOPS if device.type == "cpu" else 2e14
    return 3.0 * flops * n_train * cfg.epochs / rate


def train_command(cfg: TrainConfig) -> str:
    """The ``experiments.train`` command that makes ``cfg``'s checkpoint (for messages)."""
    parts = ["python -m experiments.train", f"--model {cfg.model}", f"--width {cfg.width}", f"--dataset {cfg.dataset}"]
    parts += [f"--seed {cfg.seed}", f"--epochs {cfg.epochs}", f"--lr {cfg.lr}", f"--wd {cfg.wd}"]
    parts += [f"--batch-size {cfg.batch_size}", f"--norm {cfg.norm}", f"--base-width {cfg.base_width}"]
    parts += [f"--depth {cfg.depth}"] if cfg.depth is not None else []
    parts += ["--no-bias"] if not cfg.bias else []
    return " ".join(parts)


def checkpoint_folder(args: argparse.Namespace) -> Path:
    return Path(args.ckpt_dir) if args.ckpt_dir else data_home() / "checkpoints"


def plan_pair(args: argparse.Namespace, width: int, seeds: tuple[int, int], device: torch.device) -> list[TrainConfig]:
    """The pair's configs; missing checkpoints are checked against --no-train and the cost gate here."""
    configs = [config_from_args(args, width, s) for s in seeds]
    missing = [c for c in configs if not checkpoints.sidecar_path(c.checkpoint_path(checkpoint_folder(args))).exists()]
    if missing and args.no_train:
        paths = ", ".join(str(c.checkpoint_path(checkpoint_folder(args))) for c in missing)
        how = " && ".join(train_command(c) for c in missing)
        raise LewcError(f"missing checkpoint(s) {paths}; train them with: {how}")
    cost = sum(training_cost_seconds(c, device) for c in missing)
    if cost > SLOW_SECONDS and not args.allow_slow:
        raise LewcError(
            f"training {len(missing)} endpoint(s) of {args.model} ×{width} on {device.type} would take "
            f"about {cost / 3600:.1f} h by a FLOP estimate; pass --allow-slow to proceed, or train on a GPU"
        )
    return configs


def ensure_trained(configs: list[TrainConfig], args: argparse.Namespace, device: torch.device) -> list[Path]:
    from lewc.train import train

    paths = []
    for cfg in configs:
        path = cfg.checkpoint_path(checkpoint_folder(args))
        if not checkpoints.sidecar_path(path).exists():
            print(f"training missing endpoint {path.name} (seed {cfg.seed})", file=sys.stderr)
        paths.append(
            train(cfg, checkpoint_folder(args), str(device), data_root=args.data_root, progress=not args.quiet)
        )
    return paths


# --- one pair ------------------------------------------------------------------------------------------


def run_controls(pair: Pair, ds, options: AnalysisOptions, sweep_options: SweepOptions) -> dict[str, xr.Dataset]:
    """The positive and negative controls through the same pipeline (see lewc.controls)."""
    from lewc import controls

    out = {}
    probe = ds.normalize(ds.test.x[:64])
    builders = {
        "positive": lambda: controls.disjoint_block_pair(pair.model_a, pair.model_b, pair.meta_a, pair.meta_b, probe),
        "negative": lambda: controls.self_pair(pair.model_a, pair.meta_a),
    }
    for name, build in builders.items():
        try:
            a, b, meta_a, meta_b, note = build()
        except LewcError as err:
            print(f"warning: no {name} control: {err}", file=sys.stderr)
            continue
        res = analyze(Pair(a, b, meta_a, meta_b), ds, list(options.lams), sweep_options, {"control": name})
        res.attrs["control"] = name
        res.attrs["control_note"] = note
        out[name] = res
    return out


def analyse_pair(
    paths: list[Path], args: argparse.Namespace, options: AnalysisOptions, device: torch.device, out_dir: Path | None
) -> tuple[Path, dict, xr.Dataset]:
    """Verify one pair into its own folder (reused when it exists); returns (report.json, report, results)."""
    meta_a, meta_b = checkpoints.read_meta(paths[0]), checkpoints.read_meta(paths[1])
    out_dir = out_dir or results_folder(meta_a, meta_b, options)
    if (out_dir / "report.json").is_file() and not args.force and args.out is None:
        print(f"reusing {out_dir} (same pair, same analysis; --force redoes it)", file=sys.stderr)
        return (
            out_dir / "report.json",
            json.loads((out_dir / "report.json").read_text()),
            open_results(out_dir / "results.nc").load(),
        )
    model_a, meta_a = checkpoints.load(paths[0], device)
    model_b, meta_b = checkpoints.load(paths[1], device)
    pair = Pair(model_a, model_b, meta_a, meta_b)
    ds = load_dataset(meta_a["dataset"], device, args.data_root, meta_a.get("train_config", {}).get("n_calib"))
    sweep_options = SweepOptions(
        n_test=options.n_test, bn_images=options.bn_images, progress=not args.quiet, batch_size=args.batch_size_eval
    )
    provenance = {
        "command": command_line(),
        "checkpoint_a": str(paths[0]),
        "checkpoint_b": str(paths[1]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seeds": [meta_a["seed"], meta_b["seed"]],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "analysis_options": json_attr(options.__dict__),
        "analysis_key": options.key(),
    }
    by_align = {"none": analyze(pair, ds, list(options.lams), sweep_options, provenance)}
    for method in options.align:
        if method == "none":
            continue
        model_b_aligned, meta_b_aligned = aligned_endpoint(method, pair, ds, args, device)
        aligned = Pair(model_a, model_b_aligned, meta_a, meta_b_aligned)
        by_align[method] = analyze(aligned, ds, list(options.lams), sweep_options, provenance | {"alignment": method})
    controls = run_controls(pair, ds, options, sweep_options) if options.controls else {}
    stacked = stack_alignments(by_align)
    claims = evaluate_verdicts([stacked])
    align_claims = {m: evaluate_claims(r) for m, r in by_align.items() if m != "none"}
    control_claims = {name: evaluate_claims(c) for name, c in controls.items()}
    warn_degenerate(claims)
    rep = write_folder(out_dir, stacked, claims, controls, control_claims, align_claims)
    return out_dir / "report.json", rep, stacked


def aligned_endpoint(method: str, pair: Pair, ds, args: argparse.Namespace, device: torch.device):
    """B permuted towards A by ``method``, cached as a checkpoint under ``<checkpoints>/aligned/``."""
    from lewc import align

    def batches():
        n = min(align.ACTIVATION_IMAGES, len(ds.train))
        return [x for x, _ in ds.batches("train", args.batch_size_eval, n)]

    folder = checkpoint_folder(args) / "aligned"
    cached = checkpoints.sidecar_path(align.aligned_path(folder, pair.meta_a, pair.meta_b, method)).is_file()
    model, meta = align.load_or_align(
        folder, method, pair.model_a, pair.model_b, pair.meta_a, pair.meta_b, batches, device
    )
    info = meta["alignment"]
    print(
        f"{'reusing' if cached else 'aligned'} B to A by {method}: objective {info['objective_before']:.4g} → "
        f"{info['objective_after']:.4g} ({info['passes']} pass(es), {info['seconds']:.1f} s)",
        file=sys.stderr,
    )
    return model, meta


def warn_degenerate(claims: list[Claim]) -> None:
    notes = {c.note.split(" — ")[0] for c in claims if c.note.startswith("degenerate pair")}
    for note in sorted(notes):
        print(f"warning: {note}; the claims that need A and B apart are INCONCLUSIVE", file=sys.stderr)


def write_folder(
    out_dir: Path,
    res: xr.Dataset,
    claims: list[Claim],
    controls: dict[str, xr.Dataset],
    control_claims: dict[str, list[Claim]],
    align_claims: dict[str, list[Claim]] | None = None,
) -> dict:
    """Build the whole folder privately, then publish it with one rename."""
    from lewc import plots

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out_dir.name}-", dir=out_dir.parent))
    try:
        write_netcdf(res, tmp / "results.nc")
        for name, c in controls.items():
            write_netcdf(c, tmp / f"control_{name}.nc")
        figures = plots.pair_figures(for_alignment(res), tmp, res)
        files = {
            "results": "results.nc",
            "controls": {name: f"control_{name}.nc" for name in controls},
            "markdown": "report.md",
            "figures": [f"{stem}.png" for stem, _ in figures],
        }
        rep = report.build_report(res, claims, files, command_line(), controls, control_claims, align_claims)
        (tmp / "report.md").write_text(report.markdown(rep, figures))
        (tmp / "report.json").write_text(report.dumps(rep))
        publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return rep


# --- several pairs and widths -----------------------------------------------------------------------


def sweep_dataset(results: dict[tuple[int, int], xr.Dataset], widths: list[int], n_pairs: int) -> xr.Dataset:
    """Combine per-pair results into one Dataset with ``width`` and ``pair`` dimensions."""
    keep = [
        "acc",
        "loss",
        "loss_cal",
        "beta",
        "barrier",
        "barrier_ci",
        "acc_barrier",
        "loss_barrier_raw",
        "loss_barrier_cal",
        "ens_agreement",
        "ens_kl",
        "exponent",
        "exponent_k_lo",
        "exponent_k_hi",
        "weak_additivity",
        "weak_additivity_null",
        "ro_b_on_a",
        "ro_a_on_b",
        "cos_lewc",
        "cos_llfc",
        "rel_err_lewc",
        "rel_err_llfc",
    ]
    rows = []
    for w in widths:
        pairs = [
            results[(w, p)][[v for v in keep if v in results[(w, p)]]].drop_vars("depth", errors="ignore")
            for p in range(n_pairs)
        ]
        rows.append(xr.concat(pairs, dim="pair", coords="minimal", compat="override", combine_attrs="drop"))
    out = xr.concat(rows, dim="width", coords="minimal", compat="override", combine_attrs="drop")
    out = out.assign_coords(width=widths, pair=list(range(n_pairs)))
    first = results[(widths[0], 0)]
    if "depth" in first.coords:
        out = out.assign_coords(depth=("layer", first.depth.values))
    out.attrs = {
        "schema": SWEEP_SCHEMA,
        "command": command_line(),
        "dataset": first.attrs.get("dataset"),
        "pairs": json_attr(
            {
                f"w{w}_p{p}": [results[(w, p)].attrs.get("sha256_a"), results[(w, p)].attrs.get("sha256_b")]
                for w in widths
                for p in range(n_pairs)
            }
        ),
    }
    return out


def sweep_table(sweep: xr.Dataset) -> str:
    """Barrier vs width (and alignment), mean over pairs with a t-interval over pairs (n = pairs)."""
    from scipy import stats as sstats

    methods = alignments(sweep)
    lines = ["width  align        pairs  acc_mid (pp) [95% CI over pairs]      loss_mid_cal [95% CI over pairs]"]
    for w in sweep.width.values:
        for method in methods:
            cells = []
            for name in ("acc_mid", "loss_mid_cal"):
                sel = sweep.barrier.sel(width=w, barrier_name=name)
                v = for_alignment(sel, method).values
                v = v[np.isfinite(v)]
                mean = v.mean() if len(v) else np.nan
                half = sstats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
                cells.append(f"{mean:8.3f} [{mean - half:8.3f}, {mean + half:8.3f}]")
            lines.append(f"{int(w):5d}  {method:11s}  {sweep.sizes['pair']:5d}  {cells[0]:34s}  {cells[1]}")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m lewc.verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_recipe_arguments(p, model_default="mlp")
    g = p.add_argument_group("pairs")
    g.add_argument("--width", type=int, default=16, help="width multiplier of the pair (default 16)")
    g.add_argument("--widths", help="comma-separated widths for a sweep, e.g. 1,4,16 (overrides --width)")
    g.add_argument("--seeds", default="0,1", help="seeds, comma-separated; consecutive seeds form pairs (default 0,1)")
    g.add_argument("--ckpt-a", type=Path, help="checkpoint of endpoint A (.safetensors); skips lookup/training")
    g.add_argument("--ckpt-b", type=Path, help="checkpoint of endpoint B (.safetensors)")
    g.add_argument("--ckpt-dir", type=Path, help="checkpoint folder (default data/checkpoints/)")
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
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def validate(args: argparse.Namespace) -> tuple[AnalysisOptions, list[int], list[int]]:
    """Check every input before anything is trained, analysed or written."""
    lams = check_lams(parse_list(args.lams))
    if not any(np.isclose(lams, 0.5)):
        raise LewcError("the λ grid must contain 0.5 (barriers and verdicts are taken at λ = ½)")
    widths = parse_list(args.widths, int) if args.widths else [args.width]
    if any(w <= 0 for w in widths):
        raise LewcError(f"widths must be positive, got {widths}")
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
    if args.bn_images < 2:
        raise LewcError(f"--bn-images must be at least 2 (BatchNorm statistics need a batch), got {args.bn_images}")
    if args.batch_size_eval <= 0:
        raise LewcError(f"--batch-size-eval must be positive, got {args.batch_size_eval}")
    if args.out is not None:
        check_writable(args.out)
    check_writable(data_home() / "results")
    from lewc.align import check_methods

    methods = check_methods(args.align)
    methods = ["none"] + [m for m in methods if m != "none"]
    options = AnalysisOptions(tuple(lams), args.n_test, args.bn_images, not args.no_controls, tuple(methods))
    return options, widths, seeds


def check_checkpoint_pair(path_a: Path, path_b: Path, args: argparse.Namespace) -> None:
    """Both checkpoints load, fit each other and differ; recipe flags are not silently ignored."""
    for path in (path_a, path_b):
        if checkpoints.weights_path(path) != Path(path) and Path(path).suffix not in ("", ".json"):
            raise LewcError(f"checkpoint {path} is not a .safetensors file (lewc never unpickles .pt files)")
        if not checkpoints.weights_path(path).is_file():
            raise LewcError(f"checkpoint {path} does not exist")
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
    paths = ensure_trained(plan_pair(args, widths[0], (seeds[0], seeds[1]), device), args, device)
    path, _, _ = analyse_pair(paths, args, options, device, args.out)
    return path.parent


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    options, widths, seeds = validate(args)
    device = resolve_device(args.device)
    if args.ckpt_a:
        check_checkpoint_pair(args.ckpt_a, args.ckpt_b, args)
        path, rep, _ = analyse_pair([args.ckpt_a, args.ckpt_b], args, options, device, args.out)
        finish(path, rep, args)
        return
    pairs = [(seeds[i], seeds[i + 1]) for i in range(0, len(seeds), 2)]
    plans = {(w, p): plan_pair(args, w, seed_pair, device) for w in widths for p, seed_pair in enumerate(pairs)}
    if len(plans) == 1:
        paths = ensure_trained(plans[(widths[0], 0)], args, device)
        path, rep, _ = analyse_pair(paths, args, options, device, args.out)
        finish(path, rep, args)
        return
    results, report_paths, combined = {}, {}, {}
    for w in widths:
        for p, seed_pair in enumerate(pairs):
            paths = ensure_trained(plans[(w, p)], args, device)
            out = args.out / f"w{w}_p{p}" if args.out else None
            path, rep, res = analyse_pair(paths, args, options, device, out)
            print(
                f"width {w}, seeds {seed_pair}: " + ", ".join(f"{c['id']} {c['verdict']}" for c in rep["claims"]),
                file=sys.stderr,
            )
            results[(w, p)] = res
            report_paths[f"w{w}_p{p}"] = str(path)
        combined[w] = evaluate_verdicts([results[(w, p)] for p in range(len(pairs))])
    write_sweep(args, options, widths, seeds, pairs, results, report_paths, combined)


def write_sweep(args, options, widths, seeds, pairs, results, report_paths, combined) -> None:
    """The combined sweep folder: sweep.nc, verdicts over pairs per width, figures."""
    from lewc import plots

    sweep = sweep_dataset(results, widths, len(pairs))
    name = (
        f"{args.dataset or results[(widths[0], 0)].attrs['dataset']}_{args.model}_sweep_w{'-'.join(map(str, widths))}"
    )
    name += f"_s{'-'.join(map(str, seeds))}_a{options.key()}"
    out_dir = args.out or data_home() / "results" / name
    write_netcdf(sweep, out_dir / "sweep.nc")
    table = sweep_table(sweep)
    figures = []
    for stem, (fig, caption) in (
        ("barrier_vs_width", plots.barrier_vs_width(sweep)),
        ("beta_vs_width", plots.beta_vs_width(sweep)),
    ):
        plots.save(fig, out_dir / stem)
        figures.append((stem, caption))
    verdicts = {int(w): report.clean([c.__dict__ for c in claims]) for w, claims in combined.items()}
    summary = {
        "schema": "lewc.sweep-report/2",
        "command": command_line(),
        "widths": widths,
        "pairs": pairs,
        "table": table,
        "pair_reports": report_paths,
        "claims_over_pairs": verdicts,
        "barriers": {
            int(w): {
                str(n): sweep.barrier.sel(width=w, barrier_name=n).values.tolist() for n in sweep.barrier_name.values
            }
            for w in widths
        },
        "barrier_dims": list(sweep.barrier.sel(width=widths[0], barrier_name="acc_mid").dims),
        "alignments": alignments(sweep),
    }
    md = ["# lewc width sweep", "", f"Command: `{command_line()}`", "", "```", table, "```", ""]
    for w, claims in combined.items():
        md += [f"## Verdicts at width {w} over {len(pairs)} pair(s)", "", "```"]
        md += [report.verdict_table([c.__dict__ for c in claims]), "```", ""]
        print(f"width {w}, {len(pairs)} pair(s):\n" + report.verdict_table([c.__dict__ for c in claims]))
    md += [f"![{s}]({s}.png)\n\n*{c}*\n" for s, c in figures]
    (out_dir / "report.md").write_text("\n".join(md))
    write_json_atomic(out_dir / "report.json", report.clean(summary))
    print(table)
    print(out_dir / "report.json")


def finish(path: Path, rep: dict, args: argparse.Namespace) -> None:
    if args.json:
        print(report.dumps(rep), end="")
        print(path, file=sys.stderr)
        return
    a, b = rep["pair"]["a"], rep["pair"]["b"]
    print(
        f"{a['model']} ×{a['width']} on {a['dataset']}: endpoint test accuracy "
        f"{a.get('test_acc', float('nan')):.4f} / {b.get('test_acc', float('nan')):.4f}"
    )
    print(report.verdict_table(rep["claims"], rep.get("controls", {})))
    table = report.alignment_table(rep)
    if table:
        print("\npermutations side by side:\n" + table)
    print(path)


if __name__ == "__main__":
    main()
