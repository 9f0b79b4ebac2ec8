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
combined over pairs (the mean's t-interval over pairs, n − 1 d.f., and one new pair's prediction
interval; one pair's intervals are over its test images only). ``--widths 1,4,16`` repeats that per
width and writes the grid product a study writes (``study.nc`` over ``width`` × ``pair``, ``study.md``,
figures) beside ``report.json`` (the verdicts over pairs per width).

Exit codes: 0 ran (whatever the verdicts), 2 bad input (one line, nothing written), 1 internal error.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from lewc.align.methods import methods_help
from lewc.core import logs
from lewc.core.conventions import BN_IMAGES, DEFAULT_LAMS
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.limits import check_limit
from lewc.core.validate import check_int, check_path, check_plain_name, short
from lewc.models.registry import MAX_WIDTH
from lewc.pipeline.folders import AnalysisOptions, sweep_folder
from lewc.pipeline.request import (
    MIN_TEST_IMAGES,
    Checkpoints,
    Configs,
    Request,
    RunContext,
    StateDicts,
    analysis_options,
)
from lewc.pipeline.runs import run, run_all
from lewc.pipeline.widths import write_sweep
from lewc.reporting import report
from lewc.training.checkpoints import MAX_SEED
from lewc.training.recipe import TrainConfig, add_recipe_arguments, config_from_args

log = logging.getLogger("lewc.verify")  # not __name__: that is "__main__" under python -m lewc.verify
MAX_SEEDS = 1000
OUTPUT_FLAGS = {"request", "json", "verbose", "quiet", "threads"}  # all a --request file leaves to the flags


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


# --- from flags to the pipeline's typed arguments ---------------------------------------------------------


def context_from_args(args: argparse.Namespace, out: Path | None = None) -> RunContext:
    return RunContext(
        command=command_line(),
        device=args.device,
        threads=args.threads,
        data_root=args.data_root,
        ckpt_dir=args.ckpt_dir,
        out=out,
        batch_size_eval=args.batch_size_eval,
        progress=not args.quiet,
        keep_samples=args.keep_samples,
        force=args.force,
        allow_chance=args.allow_chance,
        allow_slow=args.allow_slow,
    )


def pair_configs(args: argparse.Namespace, width: int, seeds: tuple[int, int]) -> list[TrainConfig]:
    return [config_from_args(args, width, s) for s in seeds]


def requests_from_args(args: argparse.Namespace, options: AnalysisOptions, widths, seeds) -> dict:
    """``{(width, pair index): Request}``: what the flags ask for, one request per pair (checked as built)."""
    if args.request:
        return {(0, 0): request_file(args)}
    if args.arch:
        if not args.ckpt_a:
            raise LewcError("--arch describes the checkpoints given by --ckpt-a and --ckpt-b; give both")
        ends = StateDicts(args.arch, (args.ckpt_a, args.ckpt_b), args.arch_kwargs, args.dataset)
        return {(0, 0): Request(ends, options, context_from_args(args, args.out))}
    if args.ckpt_a:
        check_no_recipe_flags(args)
        return {(0, 0): Request(Checkpoints((args.ckpt_a, args.ckpt_b)), options, context_from_args(args, args.out))}
    pairs = [(seeds[i], seeds[i + 1]) for i in range(0, len(seeds), 2)]
    one = len(widths) == 1 and len(pairs) == 1
    requests = {}
    for w in widths:
        for p, seed_pair in enumerate(pairs):
            out = args.out
            if args.out and not one:
                out = args.out / check_plain_name(f"w{w}_p{p}", "--out subfolder")
            ends = Configs(tuple(pair_configs(args, w, seed_pair)), args.no_train)
            requests[(w, p)] = Request(ends, options, context_from_args(args, out))
    return requests


def request_file(args: argparse.Namespace) -> Request:
    """``--request FILE``: a request as JSON (a study job's file); it names everything, so no other flag may."""
    defaults = vars(build_parser().parse_args([]))
    ignored = [k for k, v in vars(args).items() if k not in OUTPUT_FLAGS and v != defaults.get(k)]
    if ignored:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in ignored)
        raise LewcError(f"--request names the pair, the analysis and the run; {flags} cannot be added to it")
    path = Path(args.request)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise LewcError(f"cannot read request {path} ({type(err).__name__})") from None
    try:
        return Request.from_json(text)
    except LewcError as err:
        raise LewcError(f"{path}: {err}") from None


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
    g.add_argument(
        "--request",
        type=Path,
        help="run a request file (JSON, lewc.pipeline.request; a study job's file) instead of the pair, analysis "
        "and run flags",
    )
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
        help=f"alignments of B to A analysed side by side, comma-separated: {methods_help()}; 'none' is always "
        "included (default none,weights: the paper's comparison; weight matching needs no data)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--batch-size-eval", type=int, default=500, help="evaluation batch size (default 500)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--data-root", help="folder searched first for the dataset files")
    g.add_argument("--out", type=Path, help="output folder (default data/results/<pair>_a<analysis hash>/)")
    g.add_argument("--force", action="store_true", help="redo an analysis whose results folder already exists")
    g.add_argument(
        "--allow-chance",
        action="store_true",
        help="analyse endpoints at chance level anyway (e.g. to study initialisation; refused by default, "
        "recorded in results.nc and report.json under 'admission')",
    )
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
    """The flags that only the command line has (widths, seeds, their combinations), checked before anything
    is trained, analysed or written; the analysis options and run settings check themselves
    (``lewc.pipeline.request``)."""
    options = analysis_options(parse_list(args.lams), args.n_test, args.bn_images, not args.no_controls, args.align)
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
    for flag in ("ckpt_a", "ckpt_b"):
        if getattr(args, flag):
            check_path(getattr(args, flag), f"--{flag.replace('_', '-')}")  # the flag named in the error
    if args.ckpt_a and (args.widths or args.seeds != "0,1"):
        raise LewcError("--ckpt-a/--ckpt-b name one pair; they cannot be combined with --widths or --seeds")
    for flag in ("epochs", "batch_size", "base_width", "depth"):
        value = getattr(args, flag)
        if value is not None:
            check_limit(value, flag, f"--{flag.replace('_', '-')}")
    if len(seeds) > MAX_SEEDS or any(s < 0 or s > MAX_SEED for s in seeds):
        raise LewcError(f"--seeds takes at most {MAX_SEEDS} seeds in [0, {MAX_SEED}]")
    context_from_args(args, args.out)  # the run settings (paths, batch size) check themselves
    return options, widths, seeds


def check_no_recipe_flags(args: argparse.Namespace) -> None:
    """Recipe flags describe training: with finished checkpoints they would be silently ignored."""
    given = [f"--{k.replace('_', '-')}" for k in ("dataset", "epochs", "lr", "wd", "norm", "base_width", "depth")]
    ignored = [flag for flag in given if getattr(args, flag[2:].replace("-", "_")) is not None]
    if args.no_bias:
        ignored.append("--no-bias")
    if ignored:
        raise LewcError(f"{', '.join(ignored)} describe(s) training, but --ckpt-a/--ckpt-b name finished checkpoints")


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.start(args)
    options, widths, seeds = validate(args)
    requests = requests_from_args(args, options, widths, seeds)
    if len(requests) == 1:
        done = run(next(iter(requests.values())))
        finish(done.report_path, done.report, args)
        return
    pairs = [(seeds[i], seeds[i + 1]) for i in range(0, len(seeds), 2)]
    done_all = dict(zip(requests, run_all(list(requests.values())), strict=True))  # every pair gated first
    for w in widths:
        for p, seed_pair in enumerate(pairs):
            claims = done_all[(w, p)].report["claims"]
            log.info("width %d, seeds %s: %s", w, seed_pair, ", ".join(f"{c['id']} {c['verdict']}" for c in claims))
    dataset = args.dataset or done_all[(widths[0], 0)].results.attrs["dataset"]
    folder = args.out or sweep_folder(dataset, args.model, widths, seeds, options)
    write_sweep(folder, done_all, widths, pairs, sweep_settings(args, dataset, seeds), command_line())


def sweep_settings(args: argparse.Namespace, dataset: str, seeds: list[int]) -> dict:
    """What a width sweep's study.nc records as its spec: the model, data, recipe and the recipe flags given
    (as grid-axis names, so ``lewc trend`` reads them as a study's fixed settings)."""
    flags = {k: getattr(args, k) for k in ("epochs", "lr", "wd", "norm", "base_width", "depth", "batch_size")}
    flags |= {k: getattr(args, k, None) for k in ("schedule", "inputs")}
    overrides = {k: v for k, v in flags.items() if v is not None} | ({"bias": False} if args.no_bias else {})
    return {
        "model": args.model,
        "dataset": dataset,
        "recipe": getattr(args, "recipe", None),
        "seeds": seeds,
        "overrides": overrides,
    }


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
