"""``python -m experiments.study SPEC.toml``: map where permutation-free LMC holds, over a declarative grid.

A spec names a model and dataset, the axes of the grid (any of width, wd, epochs, bias, depth,
norm, lr, base_width, each a list) and the number of independent seed pairs per cell. Each (cell,
pair) is one job: "train the pair (cached by its recipe), verify it (cached by the analysis
options)" — exactly ``python -m lewc.verify`` with that cell's flags, so a study never computes a
number verify would not. Jobs run on an existing engine, submitit:

* ``--executor local`` (default): each job a subprocess on this machine, at most ``--parallel`` at a
  time (default from the spec, else 1), the CPU threads split between them;
* ``--executor slurm``: a job array (partition, GPUs per job, time limit and array parallelism from
  the spec's ``[slurm]`` table or the flags); a job that asks for several GPUs trains with torchrun;
* ``--executor inprocess``: jobs one after another in this process (tests, debugging).

When the jobs are done, ``study.nc`` holds every cell's barriers (raw and calibrated, with and
without alignment), β at λ = ½ and every claim's value, with one named dimension per axis plus
``pair`` and ``align``; ``study.md`` lists the verdicts per cell (combined over pairs) and every
failed job with its error — a failure never hides the other cells. Rerunning the same spec does only
what is missing (finished analyses are reused, interrupted training resumes from its snapshot).

Spec format (TOML)::

    [study]
    name = "fmnist-mlp-width"      # folder under data/studies/
    model = "mlp"
    dataset = "fashion-mnist"      # optional: the family's default
    pairs = 2                      # seed pairs (0,1), (2,3), ...
    align = "none,weights"         # optional, as lewc.verify --align
    n_test = 10000                 # optional
    controls = false               # optional (default false: controls do not depend on the grid)

    [grid]
    width = [1, 4, 16]
    wd = [1e-4, 3e-3]
    bias = [true, false]

    [slurm]                        # optional, for --executor slurm
    partition = "gpu"
    gpus_per_job = 1
    timeout_min = 120
    array_parallelism = 32
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.reporting.results import STUDY_SCHEMA

AXES = {  # grid axis → (verify flag, value type)
    "width": ("--width", int),
    "wd": ("--wd", float),
    "epochs": ("--epochs", int),
    "bias": ("--no-bias", bool),
    "depth": ("--depth", int),
    "norm": ("--norm", str),
    "lr": ("--lr", float),
    "base_width": ("--base-width", int),
}
STUDY_KEYS = {"name", "model", "dataset", "pairs", "align", "n_test", "controls", "lams", "parallel"}
SLURM_KEYS = {"partition", "gpus_per_job", "timeout_min", "array_parallelism", "cpus_per_job"}


@dataclass
class StudySpec:
    """A validated spec: the fixed settings, the grid axes in file order, and the executor settings."""

    name: str
    model: str
    dataset: str | None
    pairs: int
    grid: dict[str, list]
    align: str = "none,weights"
    n_test: int | None = None
    controls: bool = False
    lams: str | None = None
    parallel: int = 1
    slurm: dict = field(default_factory=dict)

    def cells(self) -> list[dict]:
        names = list(self.grid)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def argv(self, cell: dict, pair: int) -> list[str]:
        """The ``lewc.verify`` flags of one (cell, pair)."""
        argv = ["--model", self.model, "--seeds", f"{2 * pair},{2 * pair + 1}", "--align", self.align]
        argv += ["--dataset", self.dataset] if self.dataset else []
        argv += ["--n-test", str(self.n_test)] if self.n_test else []
        argv += ["--lams", self.lams] if self.lams else []
        argv += [] if self.controls else ["--no-controls"]
        for axis, value in cell.items():
            flag, _ = AXES[axis]
            if axis == "bias":
                argv += [] if value else ["--no-bias"]
            else:
                argv += [flag, str(value)]
        return argv


def load_spec(path: Path) -> StudySpec:
    """Parse and check a spec; every problem is one line before anything runs."""
    if not path.is_file():
        raise LewcError(f"study spec {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LewcError(f"study spec {path} is not valid TOML ({err})") from None
    unknown_tables = set(raw) - {"study", "grid", "slurm"}
    if unknown_tables:
        raise LewcError(f"unknown table(s) {sorted(unknown_tables)} in {path}; use [study], [grid], [slurm]")
    study, grid, slurm = raw.get("study", {}), raw.get("grid", {}), raw.get("slurm", {})
    for table, allowed, label in ((study, STUDY_KEYS, "[study]"), (slurm, SLURM_KEYS, "[slurm]")):
        bad = set(table) - allowed
        if bad:
            raise LewcError(f"unknown key(s) {sorted(bad)} in {label}; allowed: {', '.join(sorted(allowed))}")
    bad_axes = set(grid) - set(AXES)
    if bad_axes:
        raise LewcError(f"unknown grid axis {sorted(bad_axes)}; axes: {', '.join(AXES)}")
    if not grid:
        raise LewcError("the [grid] table is empty: name at least one axis, e.g. width = [1, 4, 16]")
    for key in ("name", "model"):
        if not isinstance(study.get(key), str) or not study.get(key):
            raise LewcError(f"[study] needs a {key} (a string)")
    clean: dict[str, list] = {}
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise LewcError(f"grid axis {axis} must be a non-empty list, got {values!r}")
        kind = AXES[axis][1]
        if any(type(v) is not kind and not (kind is float and type(v) is int) for v in values):
            raise LewcError(f"grid axis {axis} takes {kind.__name__} values, got {values!r}")
        if len(set(values)) != len(values):
            raise LewcError(f"grid axis {axis} repeats a value: {values!r}")
        if kind in (int, float) and any(v <= 0 for v in values) and axis != "wd":
            raise LewcError(f"grid axis {axis} must be positive, got {values!r}")
        if axis == "wd" and any(v < 0 for v in values):
            raise LewcError(f"weight decay cannot be negative, got {values!r}")
        clean[axis] = [kind(v) for v in values]
    pairs = study.get("pairs", 1)
    if not isinstance(pairs, int) or pairs < 1:
        raise LewcError(f"[study] pairs must be a positive integer, got {pairs!r}")
    parallel = study.get("parallel", 1)
    if not isinstance(parallel, int) or parallel < 1:
        raise LewcError(f"[study] parallel must be a positive integer, got {parallel!r}")
    spec = StudySpec(
        name=study["name"],
        model=study["model"],
        dataset=study.get("dataset"),
        pairs=pairs,
        grid=clean,
        align=study.get("align", "none,weights"),
        n_test=study.get("n_test"),
        controls=bool(study.get("controls", False)),
        lams=study.get("lams"),
        parallel=parallel,
        slurm=slurm,
    )
    check_cells(spec)
    return spec


def check_cells(spec: StudySpec) -> None:
    """Every cell's flags go through verify's own validation and recipe (conflicts, bad values)."""
    from lewc.training.recipe import config_from_args
    from lewc.verify import build_parser, validate

    parser = build_parser()
    for cell in spec.cells():
        argv = spec.argv(cell, 0)
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            raise LewcError(f"cell {cell} gives verify flags it refuses: {' '.join(argv)}") from None
        validate(args)
        config_from_args(args, args.width, 0).validate()


# --- jobs -----------------------------------------------------------------------------------------------


def run_job(argv: list[str], threads: int | None = None) -> str:
    """One (cell, pair): train if needed, verify, return the results folder. Runs in the worker."""
    import torch

    from lewc.verify import verify_pair

    if threads:
        torch.set_num_threads(threads)
    try:
        return str(verify_pair(argv))
    except SystemExit as exc:  # argparse refusing a flag: report it as an error of this job
        raise LewcError(f"verify refused the flags {' '.join(argv)} (exit {exc.code})") from None


@dataclass
class Outcome:
    cell: dict
    pair: int
    folder: str | None = None
    error: str | None = None


def run_inprocess(jobs: list[tuple[dict, int, list[str]]], progress) -> list[Outcome]:
    outcomes = []
    for cell, pair, argv in jobs:
        try:
            outcomes.append(Outcome(cell, pair, folder=run_job(argv)))
        except Exception as err:  # noqa: BLE001 - a failed cell is recorded, never fatal to the others
            outcomes.append(Outcome(cell, pair, error=f"{type(err).__name__}: {str(err).splitlines()[0]}"))
        progress(outcomes[-1])
    return outcomes


def run_submitit(jobs, executor, max_parallel: int, progress, as_array: bool = False) -> list[Outcome]:
    """Submit through a submitit executor, at most ``max_parallel`` running at once; collect results.

    With ``as_array`` (SLURM) everything is submitted at once as one job array and the scheduler
    enforces the parallelism.
    """
    pending = list(jobs)
    running: list = []
    outcomes: list[Outcome] = []
    if as_array:
        with executor.batch():
            submitted = [(cell, pair, executor.submit(run_job, argv)) for cell, pair, argv in pending]
        running, pending = submitted, []
    try:
        _collect(pending, running, outcomes, executor, max_parallel, progress)
    except BaseException:  # Ctrl-C or SIGTERM: cancel the jobs in flight (their training resumes next run)
        for _, _, job in running:
            process = getattr(job, "_process", None)  # submitit's local job: a process tree on this machine
            if process is not None:
                _terminate_tree(process.pid)
            else:
                job.cancel(check=False)
        raise
    return outcomes


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _terminate_tree(pid: int, grace_s: float = 3.0) -> None:
    """Stop a local job and everything it started (submitit's cancel only interrupts the parent).

    SIGTERM first; submitit's worker ignores it (on SLURM it means "requeue"), so whatever is still
    alive after ``grace_s`` gets SIGKILL — safe, since training snapshots and results are atomic.
    """
    import signal

    pids = [pid, *_descendants(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _collect(pending, running, outcomes, executor, max_parallel: int, progress) -> None:
    """Keep up to ``max_parallel`` jobs running; record each as it finishes (``running`` is updated in place)."""
    while pending or running:
        while pending and len(running) < max_parallel:
            cell, pair, argv = pending.pop(0)
            running.append((cell, pair, executor.submit(run_job, argv, executor_threads(max_parallel))))
        time.sleep(0.5)
        still = []
        for cell, pair, job in running:
            if not job.done():
                still.append((cell, pair, job))
                continue
            try:
                outcomes.append(Outcome(cell, pair, folder=job.result()))
            except Exception as err:  # noqa: BLE001 - submitit re-raises the worker's error with its log
                first = str(err).strip().splitlines()
                message = next((line for line in reversed(first) if "Error" in line), first[0] if first else "")
                outcomes.append(Outcome(cell, pair, error=message.strip()))
            progress(outcomes[-1])
        running[:] = still


def executor_threads(parallel: int) -> int:
    return max(1, (os.cpu_count() or 1) // parallel)


def make_executor(kind: str, folder: Path, spec: StudySpec, args: argparse.Namespace):
    import submitit

    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=args.timeout_min or 24 * 60)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    slurm = spec.slurm | {k: v for k, v in vars(args).items() if k in SLURM_KEYS and v is not None}
    params = {"timeout_min": slurm.get("timeout_min", 120), "gpus_per_node": slurm.get("gpus_per_job", 1)}
    if "partition" in slurm:
        params["slurm_partition"] = slurm["partition"]
    if "cpus_per_job" in slurm:
        params["cpus_per_task"] = slurm["cpus_per_job"]
    params["slurm_array_parallelism"] = slurm.get("array_parallelism", 32)
    executor.update_parameters(**params)
    return executor


# --- combining --------------------------------------------------------------------------------------------


def combine(spec: StudySpec, outcomes: list[Outcome]):
    """``study.nc``: one dimension per axis, plus pair, align and the barrier/claim names."""
    import numpy as np
    import xarray as xr

    from lewc.reporting.results import alignments, for_alignment, open_results
    from lewc.reporting.results import barrier as results_barrier
    from lewc.stats.claims import evaluate_verdicts

    axes = list(spec.grid)
    shape = [len(spec.grid[a]) for a in axes]
    methods = ["none"] + [m for m in spec.align.split(",") if m and m != "none"]
    barrier_names = ["acc_mid", "loss_mid_raw", "loss_mid_cal"]
    barrier = np.full([*shape, spec.pairs, len(methods), len(barrier_names)], np.nan)
    beta = np.full([*shape, spec.pairs, len(methods)], np.nan)
    acc_ends = np.full([*shape, spec.pairs, 2], np.nan)
    errors = np.full([*shape, spec.pairs], "", dtype=object)
    total_depth = np.full([*shape, spec.pairs], np.nan)
    max_ell = 64
    magnitude = np.full([*shape, spec.pairs, len(methods), max_ell], np.nan)  # a + b at λ = ½ per depth ℓ
    per_cell: dict[tuple, list] = {}
    for o in outcomes:
        index = tuple(spec.grid[a].index(o.cell[a]) for a in axes) + (o.pair,)
        if o.error:
            errors[index] = o.error
            continue
        res = open_results(Path(o.folder) / "results.nc").load()
        per_cell.setdefault(index[:-1], []).append(res)
        for j, method in enumerate(methods):
            if method not in alignments(res):
                continue
            r = for_alignment(res, method)
            barrier[index + (j,)] = [float(results_barrier(r, n)) for n in barrier_names]
            beta[index + (j,)] = float(r.beta.sel(lam=0.5, method="nearest"))
            if "coef_a_full" in r:
                mid = r.sel(lam=0.5, method="nearest")
                for name in r.layer.values:
                    ell = int(r.depth.sel(layer=name))
                    if ell <= max_ell:
                        total = mid.coef_a_full.sel(layer=name) + mid.coef_b_full.sel(layer=name)
                        magnitude[index + (j, ell - 1)] = float(total)
        total_depth[index] = float(res.attrs.get("total_depth", np.nan))
        acc_ends[index] = for_alignment(res).acc.sel(split="test", lam=[0.0, 1.0]).values
    coords = {a: spec.grid[a] for a in axes} | {"pair": list(range(spec.pairs)), "align": methods}
    used = np.isfinite(magnitude).any(axis=tuple(range(magnitude.ndim - 1)))
    last = int(np.nonzero(used)[0].max()) + 1 if used.any() else 1
    magnitude = magnitude[..., :last]
    max_ell = last
    ds = xr.Dataset(
        {
            "barrier": ([*axes, "pair", "align", "barrier_name"], barrier),
            "beta_mid": ([*axes, "pair", "align"], beta),
            "endpoint_acc": ([*axes, "pair", "endpoint"], acc_ends),
            "error": ([*axes, "pair"], errors.astype(str)),
            "total_depth": ([*axes, "pair"], total_depth),
            "magnitude_mid": ([*axes, "pair", "align", "ell"], magnitude),
        },
        coords=coords | {"barrier_name": barrier_names, "endpoint": ["a", "b"], "ell": list(range(1, max_ell + 1))},
        attrs={"schema": STUDY_SCHEMA, "spec": json.dumps(spec.__dict__, default=str), "model": spec.model},
    )
    verdicts = {index: evaluate_verdicts(results) for index, results in per_cell.items()}
    return ds, verdicts


def write_outputs(spec: StudySpec, folder: Path, outcomes: list[Outcome], command: str) -> Path:
    from lewc.core.io import write_atomic, write_json_atomic
    from lewc.reporting.results import write_netcdf
    from lewc.reporting.study_plots import study_figures

    ds, verdicts = combine(spec, outcomes)
    ds.attrs["command"] = command
    write_netcdf(ds, folder / "study.nc")
    figures = study_figures(ds, folder, "study")
    axes = list(spec.grid)
    lines = [
        f"# Study {spec.name}",
        "",
        f"Command: `{command}`",
        "",
        f"Model {spec.model}, {spec.pairs} pair(s) per cell.",
        "",
    ]
    claim_ids: list[str] = []
    for claims in verdicts.values():
        claim_ids += [c.id for c in claims if c.id not in claim_ids]
    lines += [
        "| " + " | ".join(axes + ["pairs ok"] + claim_ids) + " |",
        "|" + "---|" * (len(axes) + 1 + len(claim_ids)),
    ]
    for cell in spec.cells():
        index = tuple(spec.grid[a].index(cell[a]) for a in axes)
        claims = {c.id: c for c in verdicts.get(index, [])}
        ok = sum(1 for o in outcomes if o.cell == cell and not o.error)
        row = [str(cell[a]) for a in axes] + [f"{ok}/{spec.pairs}"]
        row += [f"{claims[c].verdict} {claims[c].value:.3g}" if c in claims else "—" for c in claim_ids]
        lines.append("| " + " | ".join(row) + " |")
    failed = [o for o in outcomes if o.error]
    lines += ["", f"## Failed jobs ({len(failed)})", ""]
    lines += [f"- {o.cell}, pair {o.pair}: {o.error}" for o in failed] or ["none"]
    lines += ["", "## Figures", ""]
    lines += [f"![{stem}]({stem}.png)\n\n*{caption}*\n" for stem, caption in figures]
    write_atomic(folder / "study.md", lambda p: p.write_text("\n".join(lines) + "\n"))
    write_json_atomic(
        folder / "outcomes.json",
        [{"cell": o.cell, "pair": o.pair, "folder": o.folder, "error": o.error} for o in outcomes],
    )
    return folder / "study.md"


# --- command line -----------------------------------------------------------------------------------------


def estimate_seconds(spec: StudySpec, target: str) -> tuple[float, int]:
    """FLOP-based training time of the missing endpoints on ``target`` (cpu or cuda), and their count.

    The rates are lewc.pipeline.endpoints' assumptions (5e10 FLOP/s sustained on a CPU, 2e14 on one GPU in bf16);
    the estimate is for one device running the jobs one after another.
    """
    import torch

    from lewc.pipeline.endpoints import checkpoint_folder, training_cost_seconds
    from lewc.training import checkpoints
    from lewc.training.recipe import config_from_args
    from lewc.verify import build_parser

    device = torch.device(target)
    parser, total, missing = build_parser(), 0.0, 0
    seen = set()
    for cell in spec.cells():
        for pair in range(spec.pairs):
            args = parser.parse_args(spec.argv(cell, pair))
            for seed in (2 * pair, 2 * pair + 1):
                cfg = config_from_args(args, args.width, seed)
                path = cfg.checkpoint_path(checkpoint_folder(args.ckpt_dir))
                if path in seen or checkpoints.sidecar_path(path).exists():
                    continue
                seen.add(path)
                missing += 1
                total += training_cost_seconds(cfg, device)
    return total, missing


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m experiments.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("spec", type=Path, help="study spec (TOML; see the format above)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and a cost estimate, run nothing")
    p.add_argument(
        "--executor", choices=["local", "slurm", "inprocess"], default="local", help="where jobs run (default local)"
    )
    p.add_argument("--parallel", type=int, help="local executor: jobs at once (default: the spec's, else 1)")
    p.add_argument("--timeout-min", type=int, help="per-job time limit in minutes (slurm default 120)")
    p.add_argument("--partition", help="slurm partition (overrides the spec)")
    p.add_argument("--gpus-per-job", type=int, help="slurm GPUs per job (overrides the spec)")
    p.add_argument("--array-parallelism", type=int, help="slurm: array tasks at once (overrides the spec)")
    p.add_argument("--out", type=Path, help="study folder (default data/studies/<name>)")
    p.add_argument(
        "--estimate-for",
        choices=["cpu", "cuda"],
        help="device the cost estimate assumes (default: cuda for slurm or when a GPU is here, else cpu)",
    )
    return p


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    spec = load_spec(args.spec)
    from lewc.training.data import data_home

    folder = args.out or data_home() / "studies" / spec.name
    jobs = [(cell, pair, spec.argv(cell, pair)) for cell in spec.cells() for pair in range(spec.pairs)]
    import torch

    target = args.estimate_for or ("cuda" if args.executor == "slurm" or torch.cuda.is_available() else "cpu")
    seconds, missing = estimate_seconds(spec, target)
    print(
        f"{len(spec.cells())} cell(s) × {spec.pairs} pair(s) = {len(jobs)} job(s); {missing} endpoint(s) to train, "
        f"≈ {seconds / 3600:.1f} {'GPU' if target == 'cuda' else 'CPU'}-hours of training by a FLOP estimate "
        "(verify adds roughly one forward pass over the test set per λ and alignment)",
        file=sys.stderr,
    )
    if args.dry_run:
        for cell, pair, job_argv in jobs:
            print(f"{json.dumps(cell)} pair {pair}: python -m lewc.verify {' '.join(job_argv)}")
        return
    if args.parallel is not None and args.parallel < 1:
        raise LewcError(f"--parallel must be positive, got {args.parallel}")
    folder.mkdir(parents=True, exist_ok=True)
    done = [0]

    def progress(o: Outcome) -> None:
        done[0] += 1
        status = "ok" if not o.error else f"FAILED: {o.error}"
        print(f"[{done[0]}/{len(jobs)}] {json.dumps(o.cell)} pair {o.pair}: {status}", file=sys.stderr, flush=True)

    import signal

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)  # a killed study cancels its jobs instead of orphaning them
    if args.executor == "inprocess":
        outcomes = run_inprocess(jobs, progress)
    else:
        executor = make_executor(args.executor, folder / "jobs", spec, args)
        parallel = args.parallel or spec.parallel
        outcomes = run_submitit(jobs, executor, parallel, progress, as_array=args.executor == "slurm")
    command = "python -m experiments.study " + " ".join(sys.argv[1:] if argv is None else argv)
    md = write_outputs(spec, folder, outcomes, command)
    failed = sum(1 for o in outcomes if o.error)
    print(f"{len(outcomes) - failed}/{len(outcomes)} job(s) ok; {md}", file=sys.stderr)
    print(folder / "study.nc")


if __name__ == "__main__":
    main()
