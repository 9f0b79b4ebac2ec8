"""``python -m lewc.verify``: from a model name to a verdict per claim, a report and figures.

With no arguments it verifies the embedded default: a pair of Fashion-MNIST MLPs ×16 (seeds 0, 1),
trained first if their checkpoints are missing. It finds (or trains, through ``experiments.train``)
the pair, sweeps λ once with the merge engine and the layer capture, and writes into ``--out``
(default ``data/results/<pair>/``): ``results.nc``, figures (PNG + PDF), ``report.md`` and, last,
``report.json``. The last line printed is the path of ``report.json``.

With ``--widths`` it verifies one pair per width and per two seeds (``--seeds 0,1,2,3`` → pairs
(0,1) and (2,3)) and writes a combined ``sweep.nc`` with ``width`` and ``pair`` dimensions.

Exit codes: 0 ran (whatever the verdicts), 2 bad input, 1 internal error.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from lewc import checkpoints, plots, report
from lewc.analysis import analyze
from lewc.claims import evaluate_claims
from lewc.data import data_home, load_dataset
from lewc.device import resolve_device
from lewc.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.io import write_json_atomic
from lewc.merge import Pair, check_lams
from lewc.path import SweepOptions
from lewc.recipe import TrainConfig, config_from_args
from lewc.results import json_attr, write_netcdf

DEFAULT_LAMS = [round(i / 10, 1) for i in range(11)]
CPU_FLOPS = 5e10  # sustained FLOP/s assumed for a CPU when estimating training cost
SLOW_SECONDS = 1800
DEFAULT_DATASET = {"mlp": "fashion-mnist", "vgg11": "cifar10", "vgg16": "cifar10", "resnet20": "cifar10"}


def parse_list(text: str, kind=float) -> list:
    try:
        return [kind(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise LewcError(f"cannot parse {text!r} as a comma-separated list of {kind.__name__}") from None


def command_line() -> str:
    return "python -m lewc.verify " + " ".join(shlex.quote(a) for a in sys.argv[1:])


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


def train_args(cfg: TrainConfig, args: argparse.Namespace) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        "--model",
        cfg.model,
        "--width",
        str(cfg.width),
        "--dataset",
        cfg.dataset,
        "--seed",
        str(cfg.seed),
        "--epochs",
        str(cfg.epochs),
        "--lr",
        str(cfg.lr),
        "--wd",
        str(cfg.wd),
        "--batch-size",
        str(cfg.batch_size),
        "--norm",
        cfg.norm,
        "--base-width",
        str(cfg.base_width),
    ]
    if cfg.depth is not None:
        cmd += ["--depth", str(cfg.depth)]
    if not cfg.bias:
        cmd.append("--no-bias")
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    if args.device:
        cmd += ["--device", args.device]
    if args.ckpt_dir:
        cmd += ["--out", str(args.ckpt_dir)]
    return cmd


def find_or_train(args: argparse.Namespace, width: int, seeds: tuple[int, int], device: torch.device) -> list[Path]:
    """Checkpoint paths of the pair; missing ones are trained (unless --no-train) via experiments.train."""
    configs = [config_from_args(args, width, s) for s in seeds]
    folder = Path(args.ckpt_dir) if args.ckpt_dir else data_home() / "checkpoints"
    paths = [folder / f"{cfg.name}.safetensors" for cfg in configs]
    missing = [(cfg, p) for cfg, p in zip(configs, paths, strict=True) if not checkpoints.sidecar_path(p).exists()]
    if not missing:
        return paths
    if args.no_train:
        how = " && ".join(
            " ".join(train_args(cfg, args)[1:]).replace("-m experiments", "python -m experiments", 1)
            for cfg, _ in missing
        )
        raise LewcError(f"missing checkpoint(s) {', '.join(str(p) for _, p in missing)}; train them with: {how}")
    cost = sum(training_cost_seconds(cfg, device) for cfg, _ in missing)
    if cost > SLOW_SECONDS and not args.allow_slow:
        raise LewcError(
            f"training {len(missing)} endpoint(s) of {args.model} ×{width} on {device.type} would take "
            f"about {cost / 3600:.1f} h by a FLOP estimate; pass --allow-slow to proceed, or train on a GPU"
        )
    for cfg, path in missing:
        print(f"training missing endpoint {path.name} (seed {cfg.seed})", file=sys.stderr)
        proc = subprocess.run(train_args(cfg, args), stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise LewcError(f"training {path.name} failed (exit {proc.returncode}); see the messages above")
    return paths


def pair_name(meta_a: dict, meta_b: dict) -> str:
    cfg = meta_a.get("train_config", {})
    suffix = TrainConfig(**cfg).hash_without_seed() if cfg else meta_a["sha256"][:8]
    return f"{meta_a['dataset']}_{meta_a['model']}_w{meta_a['width']}_s{meta_a['seed']}-{meta_b['seed']}_{suffix}"


def verify_pair(
    paths: list[Path], args: argparse.Namespace, lams: list[float], device: torch.device, out_dir: Path | None
) -> tuple[Path, dict, xr.Dataset]:
    """Verify one pair; returns (report.json path, report, results Dataset)."""
    model_a, meta_a = checkpoints.load(paths[0], device)
    model_b, meta_b = checkpoints.load(paths[1], device)
    if args.dataset and not (args.ckpt_a or args.ckpt_b) and meta_a["dataset"] != args.dataset:
        raise LewcError(f"checkpoint dataset {meta_a['dataset']} differs from --dataset {args.dataset}")
    pair = Pair(model_a, model_b, meta_a, meta_b)
    ds = load_dataset(meta_a["dataset"], device, args.data_root, meta_a.get("train_config", {}).get("n_calib"))
    out_dir = out_dir or data_home() / "results" / pair_name(meta_a, meta_b)
    options = SweepOptions(
        n_test=args.n_test, bn_images=args.bn_images, progress=not args.quiet, batch_size=args.batch_size_eval
    )
    provenance = {
        "command": command_line(),
        "checkpoint_a": str(paths[0]),
        "checkpoint_b": str(paths[1]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seeds": [meta_a["seed"], meta_b["seed"]],
        "device": str(device),
    }
    res = analyze(pair, ds, lams, options, provenance)
    claims = evaluate_claims(res)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Everything is written into a private folder first and moved in file by file (each move is
    # atomic), report.json last: an interrupted run never leaves a report that lies.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tmp-") as tmp_name:
        tmp = Path(tmp_name)
        write_netcdf(res, tmp / "results.nc")
        figures = plots.pair_figures(res, tmp)
        files = {
            "results": "results.nc",
            "markdown": "report.md",
            "figures": [f"{stem}.{ext}" for stem, _ in figures for ext in ("png", "pdf")],
        }
        rep = report.build_report(res, claims, files, command_line())
        (tmp / "report.md").write_text(report.markdown(rep, figures))
        (tmp / "report.json").write_text(report.dumps(rep))
        for name in ["results.nc", *files["figures"], "report.md", "report.json"]:
            os.replace(tmp / name, out_dir / name)
    return out_dir / "report.json", rep, res


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
        "weak_additivity_baseline",
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
        "schema": "lewc.sweep/1",
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
    """Barrier vs width, mean over pairs with a t-interval over pairs (n = pairs)."""
    from scipy import stats as sstats

    lines = ["width  pairs  acc_mid (pp) [95% CI over pairs]      loss_mid_cal [95% CI over pairs]"]
    for w in sweep.width.values:
        cells = []
        for name in ("acc_mid", "loss_mid_cal"):
            v = sweep.barrier.sel(width=w, barrier_name=name).values
            v = v[np.isfinite(v)]
            mean = v.mean()
            half = sstats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
            cells.append(f"{mean:8.3f} [{mean - half:8.3f}, {mean + half:8.3f}]")
        lines.append(f"{int(w):5d}  {sweep.sizes['pair']:5d}  {cells[0]:34s}  {cells[1]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m lewc.verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="mlp", help="mlp (default), vgg11, vgg16 or resnet20")
    p.add_argument("--width", type=int, default=16, help="width multiplier of the pair (default 16)")
    p.add_argument("--widths", help="comma-separated widths for a sweep, e.g. 1,4,16 (overrides --width)")
    p.add_argument(
        "--dataset",
        help="fashion-mnist, mnist, cifar10, cifar100 or synthetic (default: fashion-mnist for the mlp, "
        "cifar10 for the convnets, as in the paper)",
    )
    p.add_argument("--seeds", default="0,1", help="seeds, comma-separated; consecutive seeds form pairs (default 0,1)")
    p.add_argument("--ckpt-a", type=Path, help="checkpoint of endpoint A (.safetensors); skips lookup/training")
    p.add_argument("--ckpt-b", type=Path, help="checkpoint of endpoint B (.safetensors)")
    p.add_argument("--ckpt-dir", type=Path, help="checkpoint folder (default data/checkpoints/)")
    p.add_argument(
        "--lams",
        default=",".join(str(v) for v in DEFAULT_LAMS),
        help="λ grid in [0, 1], must contain 0, 0.5 and 1 (default 0,0.1,…,1)",
    )
    p.add_argument("--n-test", type=int, help="evaluate on the first N test images (default: all)")
    p.add_argument("--bn-images", type=int, default=10_000, help="training images for BN re-estimation (default 10000)")
    p.add_argument("--batch-size-eval", type=int, default=500, help="evaluation batch size (default 500)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--data-root", help="folder searched first for the dataset files")
    p.add_argument("--out", type=Path, help="output folder (default data/results/<pair name>/)")
    p.add_argument("--no-train", action="store_true", help="never train: fail if a checkpoint is missing")
    p.add_argument(
        "--allow-slow", action="store_true", help="train even when the cost estimate is large for this device"
    )
    p.add_argument(
        "--json", action="store_true", help="print report.json to stdout instead of the table (path to stderr)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("training recipe of missing checkpoints (defaults: lewc/recipe.py)")
    g.add_argument("--epochs", type=int, help="training epochs")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--wd", type=float, help="weight decay (default 3e-3)")
    g.add_argument("--batch-size", type=int, help="training batch size")
    g.add_argument("--norm", choices=["bn", "ln", "none"], help="normalisation")
    g.add_argument("--no-bias", action="store_true", help="bias-free layers")
    g.add_argument("--base-width", type=int, help="units/channels at width 1")
    g.add_argument("--depth", type=int, help="hidden layers of the mlp")
    return p


def validate(args: argparse.Namespace) -> tuple[list[float], list[int], list[int]]:
    """Check every input before anything is written (and fill the model's default dataset)."""
    if args.dataset is None:
        args.dataset = DEFAULT_DATASET.get(args.model, "fashion-mnist")
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
    if args.ckpt_a and args.widths:
        raise LewcError("--ckpt-a/--ckpt-b name one pair; they cannot be combined with --widths")
    if args.n_test is not None and args.n_test <= 0:
        raise LewcError("--n-test must be positive")
    for path in (args.ckpt_a, args.ckpt_b):
        if path is not None and not checkpoints.weights_path(path).is_file():
            raise LewcError(f"checkpoint {path} does not exist")
    return lams, widths, seeds


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    lams, widths, seeds = validate(args)
    device = resolve_device(args.device)
    if args.ckpt_a:
        for p in (args.ckpt_a, args.ckpt_b):  # corrupt or mismatched pairs fail before anything is written
            checkpoints.load(p, "cpu")
        path, rep, _ = verify_pair([args.ckpt_a, args.ckpt_b], args, lams, device, args.out)
        finish(path, rep, args)
        return
    pairs = [(seeds[i], seeds[i + 1]) for i in range(0, len(seeds), 2)]
    if len(widths) == 1 and len(pairs) == 1:
        paths = find_or_train(args, widths[0], pairs[0], device)
        path, rep, _ = verify_pair(paths, args, lams, device, args.out)
        finish(path, rep, args)
        return
    results, report_paths = {}, {}
    for w in widths:
        for p, seed_pair in enumerate(pairs):
            paths = find_or_train(args, w, seed_pair, device)
            out = args.out / f"w{w}_p{p}" if args.out else None
            path, rep, res = verify_pair(paths, args, lams, device, out)
            print(
                f"width {w}, seeds {seed_pair}: " + ", ".join(f"{c['id']} {c['verdict']}" for c in rep["claims"]),
                file=sys.stderr,
            )
            results[(w, p)] = res
            report_paths[f"w{w}_p{p}"] = str(path)
    sweep = sweep_dataset(results, widths, len(pairs))
    name = f"{args.dataset}_{args.model}_sweep_w{'-'.join(map(str, widths))}_s{'-'.join(map(str, seeds))}"
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
    summary = {
        "schema": "lewc.sweep-report/1",
        "command": command_line(),
        "widths": widths,
        "pairs": pairs,
        "table": table,
        "pair_reports": report_paths,
        "barriers": {
            int(w): {
                str(n): sweep.barrier.sel(width=w, barrier_name=n).values.tolist() for n in sweep.barrier_name.values
            }
            for w in widths
        },
    }
    md = ["# lewc width sweep", "", f"Command: `{command_line()}`", "", "```", table, "```", ""]
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
    a = rep["pair"]["a"]
    print(
        f"{a['model']} ×{a['width']} on {a['dataset']}: endpoint test accuracy "
        f"{rep['pair']['a'].get('test_acc', float('nan')):.4f} / {rep['pair']['b'].get('test_acc', float('nan')):.4f}"
    )
    print(report.verdict_table(rep["claims"]))
    print(path)


if __name__ == "__main__":
    main()
