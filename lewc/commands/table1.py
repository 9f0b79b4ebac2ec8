"""``python -m lewc.commands.table1``: the paper's Table 1 (barriers at λ = ½) in one command, beside lewc's.

For each row it trains the seed pairs with the ``paper`` recipe (docs/recipes.md) unless their
checkpoints exist, verifies each pair without permutation and with weight matching (exactly
``python -m lewc.verify --recipe paper --align none,weights``), and prints lewc's accuracy barrier
(pp) and calibrated loss barrier (nats) at λ = ½ beside the paper's numbers:

=========  ===============================  ==============  ====================
row        network (width in units)         dataset         needs
=========  ===============================  ==============  ====================
mlp        MLP ×16 (3×8192)                 MNIST           minutes on one GPU
vgg11      VGG-11 ×16 (1024…8192 ch)        CIFAR-10        a GPU, hours
resnet20   ResNet-20 ×32 (512/1024/2048 ch) CIFAR-10        a GPU, hours
=========  ===============================  ==============  ====================

The CIFAR rows need CIFAR-10: torchvision downloads it into ``data/datasets/`` (needs internet), or
extract ``cifar-10-python.tar.gz`` there (or into ``--data-root``). Before anything runs the
command prints the FLOP-based cost of the endpoints it has to train on the chosen device. With
several pairs (``--pairs N``) lewc's column is the mean over pairs with the range.

``--smoke`` runs the whole path — training, both alignments, the table — on tiny networks on
synthetic data on the CPU in seconds (the test suite runs it); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from lewc.core import logs
from lewc.core.device import resolve_device
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.io import data_home, write_atomic, write_json_atomic
from lewc.models import width_label
from lewc.pipeline.endpoints import checkpoint_folder, training_cost_seconds
from lewc.pipeline.folders import check_writable
from lewc.pipeline.request import Configs, Request, RunContext, analysis_options
from lewc.pipeline.runs import run
from lewc.training import checkpoints
from lewc.training.recipe import default_config


@dataclass(frozen=True)
class Row:
    """One row of the paper's Table 1 (λ = ½; accuracy barrier in pp, loss barrier in nats)."""

    model: str
    width: int
    dataset: str
    paper_none: tuple[float, float]  # (accuracy barrier, loss barrier) without permutation
    paper_wm: tuple[float, float]  # the same with weight matching


ROWS = {
    "mlp": Row("mlp", 16, "mnist", (0.519, 0.013), (-0.027, -0.003)),
    "vgg11": Row("vgg11", 16, "cifar10", (1.308, 0.066), (7.000, 0.177)),
    "resnet20": Row("resnet20", 32, "cifar10", (2.694, 0.087), (5.135, 0.173)),
}
log = logging.getLogger("lewc.commands.table1")  # not __name__: that is "__main__" under python -m
# base width 8 and 3 epochs: the tiny VGG/ResNet get well above chance (lewc refuses chance-level endpoints)
SMOKE_FLAGS = ["--dataset", "synthetic", "--base-width", "8", "--epochs", "3", "--batch-size", "64", "--n-test", "200"]
SMOKE_FLAGS += ["--no-controls"]
SMOKE_FLAGS += ["--lams", "0,0.5,1", "--bn-images", "64"]


def row_argv(row: Row, pair: int, args: argparse.Namespace) -> list[str]:
    argv = ["--model", row.model, "--width", "1" if args.smoke else str(row.width), "--recipe", "paper"]
    argv += ["--seeds", f"{2 * pair},{2 * pair + 1}", "--align", "none,weights", "--allow-slow"]
    argv += SMOKE_FLAGS if args.smoke else ["--dataset", row.dataset]
    argv += ["--device", args.device] if args.device else []
    argv += ["--data-root", args.data_root] if args.data_root else []
    argv += ["--ckpt-dir", str(args.ckpt_dir)] if args.ckpt_dir else []
    return argv


SMOKE_TRAINING = {"base_width": 8, "epochs": 3, "batch_size": 64}
SMOKE_ANALYSIS = {"lams": (0.0, 0.5, 1.0), "n_test": 200, "bn_images": 64, "controls": False}


def row_job(row: Row, pair: int, args: argparse.Namespace):
    """The row's pair as a request: exactly what ``row_argv`` asks verify for (the command it records)."""
    width = 1 if args.smoke else row.width
    dataset = "synthetic" if args.smoke else row.dataset
    training = SMOKE_TRAINING if args.smoke else {}
    configs = tuple(
        default_config(row.model, width, dataset, seed, recipe="paper", **training) for seed in (2 * pair, 2 * pair + 1)
    )
    options = analysis_options(align=("none", "weights"), **(SMOKE_ANALYSIS if args.smoke else {}))
    context = RunContext(
        command="python -m lewc.verify " + shlex.join(row_argv(row, pair, args)),
        device=args.device,
        data_root=args.data_root,
        ckpt_dir=args.ckpt_dir,
        progress=False,
        allow_slow=True,  # the command printed its own cost estimate first
    )
    return Request(Configs(configs), options, context)


def cost_line(rows: list[Row], args: argparse.Namespace) -> str:
    """The FLOP estimate of the endpoints still to train (lewc.pipeline.endpoints' rates)."""
    device = resolve_device(args.device)
    total, missing = 0.0, 0
    for row in rows:
        for pair in range(args.pairs):
            for cfg in row_job(row, pair, args).endpoints.configs:
                if not checkpoints.sidecar_path(cfg.checkpoint_path(checkpoint_folder(args.ckpt_dir))).exists():
                    missing += 1
                    total += training_cost_seconds(cfg, device)
    return (
        f"{len(rows)} row(s) × {args.pairs} pair(s); {missing} endpoint(s) to train with the paper recipe, "
        f"≈ {total / 3600:.2f} h on {device.type} by a FLOP estimate"
    )


def barriers(report: dict) -> dict[str, tuple[float, float]]:
    """(accuracy barrier pp, calibrated loss barrier nats) at λ = ½ per alignment, from report.json."""
    out = {"none": (report["barriers"]["acc_mid"]["value"], report["barriers"]["loss_mid_cal"]["value"])}
    for method, column in report.get("alignments", {}).items():
        b = column["barriers"]
        out[method] = (b["acc_mid"]["value"], b["loss_mid_cal"]["value"])
    return out


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def table(results: dict[str, list[dict]], smoke: bool) -> str:
    head = (
        "| network | dataset | pairs | lewc acc barrier (pp) | paper | lewc cal. loss barrier | paper "
        "| lewc WM acc barrier | paper WM | lewc WM cal. loss | paper WM |"
    )
    lines = [head, "|" + "---|" * 11]
    for name, reports in results.items():
        row = ROWS[name]
        per = [barriers(r) for r in reports]
        none_acc = [b["none"][0] for b in per]
        none_loss = [b["none"][1] for b in per]
        wm_acc = [b["weights"][0] for b in per if "weights" in b]
        wm_loss = [b["weights"][1] for b in per if "weights" in b]
        label = width_label(row.model, 1 if smoke else row.width, 8 if smoke else None)
        dataset = "synthetic (smoke)" if smoke else row.dataset
        lines.append(
            f"| {label} | {dataset} | {len(reports)} | {_cell(none_acc, 3)} | {row.paper_none[0]:.3f} "
            f"| {_cell(none_loss, 4)} | {row.paper_none[1]:.3f} | {_cell(wm_acc, 3)} | {row.paper_wm[0]:.3f} "
            f"| {_cell(wm_loss, 4)} | {row.paper_wm[1]:.3f} |"
        )
    lines.append("")
    lines.append(
        "λ = ½. lewc's loss barrier is the temperature-calibrated one (the paper calibrates); several pairs: "
        "mean [min, max]. Paper: Ito et al., arXiv 2510.08023, Table 1."
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m lewc.commands.table1", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", default="mlp,vgg11,resnet20", help="comma-separated rows (default mlp,vgg11,resnet20)")
    p.add_argument("--pairs", type=int, default=1, help="seed pairs per row: (0,1), (2,3), … (default 1)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--data-root", help="folder searched first for MNIST / CIFAR-10")
    p.add_argument("--ckpt-dir", type=Path, help="checkpoint folder (default data/checkpoints/)")
    p.add_argument("--out", type=Path, help="where table1.md and table1.json go (default data/results/table1/)")
    p.add_argument("--smoke", action="store_true", help="tiny networks on synthetic data on the CPU, in seconds")
    p.add_argument("--dry-run", action="store_true", help="print the cost estimate and the verify commands only")
    logs.add_common_arguments(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.start(args)
    names = [n for n in args.rows.replace(" ", "").split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        raise LewcError(f"unknown row(s) {unknown or names}; choose from {', '.join(ROWS)}")
    if args.pairs < 1 or args.pairs > 50:
        raise LewcError(f"--pairs must be between 1 and 50, got {args.pairs}")
    if args.smoke and args.device is None:
        args.device = "cpu"
    rows = [ROWS[n] for n in names]
    log.info(cost_line(rows, args))
    if args.dry_run:
        for name, row in zip(names, rows, strict=True):
            for pair in range(args.pairs):
                print(f"{name} pair {pair}: python -m lewc.verify {' '.join(row_argv(row, pair, args))}")
        return
    out = args.out or data_home() / "results" / ("table1_smoke" if args.smoke else "table1")
    check_writable(out)  # before any training or analysis, as trend does: a printable path, a folder, writable
    results: dict[str, list[dict]] = {}
    for name, row in zip(names, rows, strict=True):
        for pair in range(args.pairs):
            done = run(row_job(row, pair, args))
            results.setdefault(name, []).append(done.report)
            log.info("%s pair %d: %s", name, pair, done.report_path.parent)
    text = table(results, args.smoke)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "table1.md", lambda p: p.write_text(text + "\n"))
    summary = {n: [barriers(r) for r in reps] for n, reps in results.items()}
    write_json_atomic(out / "table1.json", {"rows": summary, "paper": {n: ROWS[n].__dict__ for n in results}})
    print(text)
    print(out / "table1.md")


if __name__ == "__main__":
    main()
