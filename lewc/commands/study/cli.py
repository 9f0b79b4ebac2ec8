"""The study's command line (its help is the package's docstring): the cost estimate, then the jobs
run, submitted, listed (``--status``) or collected, and study.nc/study.md written."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

import torch

from lewc.commands.study.executors import (
    make_executor,
    run_inprocess,
    run_submitit,
    slurm_available,
    slurm_submission,
    submit_array,
)
from lewc.commands.study.report import write_outputs
from lewc.commands.study.spec import Outcome, StudySpec, job_command, job_file, load_spec, write_jobs
from lewc.commands.study.state import SUBMITTED, outcomes_from_disk, print_status, split_finished
from lewc.core import logs
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.io import data_home
from lewc.pipeline.endpoints import checkpoint_folder, training_cost_seconds
from lewc.pipeline.folders import check_writable
from lewc.training import checkpoints

log = logging.getLogger("lewc.commands.study")  # one logger for the whole study, whichever module logs


def estimate_seconds(spec: StudySpec, target: str) -> tuple[float, int]:
    """FLOP-based training time of the missing endpoints on ``target`` (cpu or cuda), and their count.

    The rates are lewc.pipeline.endpoints' assumptions (5e10 FLOP/s sustained on a CPU, 2e14 on one GPU in bf16);
    the estimate is for one device running the jobs one after another.
    """

    device = torch.device(target)
    total, missing = 0.0, 0
    seen = set()
    for cell in spec.cells():
        for pair in range(spec.pairs):
            for cfg in spec.job(cell, pair).endpoints.configs:
                path = cfg.checkpoint_path(checkpoint_folder())
                if path in seen or checkpoints.sidecar_path(path).exists():
                    continue
                seen.add(path)
                missing += 1
                total += training_cost_seconds(cfg, device)
    return total, missing


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m lewc.commands.study",
        description=sys.modules[__package__].__doc__,  # the package's docstring: the spec format
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    add_state_arguments(p)
    logs.add_common_arguments(p)
    return p


def add_state_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("state on disk (a driver need not outlive its jobs)")
    g.add_argument(
        "--status", action="store_true", help="print every job's state from disk (done/failed/…), run nothing"
    )
    g.add_argument("--detach", action="store_true", help="slurm: exit once the job array is submitted")
    g.add_argument("--collect", action="store_true", help="combine study.nc from what is on disk, submit nothing")


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.start(args)
    spec = load_spec(args.spec)
    if args.parallel is not None and args.parallel < 1:
        raise LewcError(f"--parallel must be positive, got {args.parallel}")
    if args.executor == "slurm" and not args.dry_run and not slurm_available():
        raise LewcError(
            "--executor slurm, but SLURM is not available here (no sbatch/srun on PATH); "
            "use --executor local, or run on a SLURM login node"
        )

    folder = args.out or data_home() / "studies" / spec.name
    jobs = []
    for i, cell in enumerate(spec.cells()):
        for pair in range(spec.pairs):
            path = job_file(folder, i, pair)
            jobs.append((cell, pair, spec.job(cell, pair, job_command(path)), path))
    command = "python -m lewc.commands.study " + " ".join(sys.argv[1:] if argv is None else argv)
    if sum((args.status, args.collect, args.detach, args.dry_run)) > 1:
        raise LewcError("--status, --collect, --detach and --dry-run exclude each other")
    if args.detach and args.executor != "slurm":
        raise LewcError("--detach needs --executor slurm (local jobs need their driver to start the next ones)")
    if args.status:
        print_status(spec, folder)
        return
    if args.collect:
        finish(spec, folder, outcomes_from_disk(spec, folder), command)
        return

    target = args.estimate_for or ("cuda" if args.executor == "slurm" or torch.cuda.is_available() else "cpu")
    seconds, missing = estimate_seconds(spec, target)
    log.info(
        "%d cell(s) × %d pair(s) = %d job(s); %d endpoint(s) to train, ≈ %.1f %s-hours of training by a FLOP "
        "estimate (verify adds roughly one forward pass over the test set per λ and alignment)",
        len(spec.cells()),
        spec.pairs,
        len(jobs),
        missing,
        seconds / 3600,
        "GPU" if target == "cuda" else "CPU",
    )
    if args.executor == "slurm":
        log.info(
            "slurm: update_parameters(%s)", ", ".join(f"{k}={v!r}" for k, v in slurm_submission(spec, args).items())
        )
    if args.dry_run:
        for cell, pair, job, _ in jobs:
            print(f"{json.dumps(cell)} pair {pair}: {job.context.command}")
        return
    finished, todo = split_finished(spec, jobs)
    log.info("%d of %d job(s) finished on disk (skipped); %d to run", len(finished), len(jobs), len(todo))
    check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = write_jobs(todo)
    done = [len(finished)]

    def progress(o: Outcome) -> None:
        done[0] += 1
        status = "ok" if not o.error else f"FAILED: {o.error}"
        log.info("[%d/%d] %s pair %d: %s", done[0], len(jobs), json.dumps(o.cell), o.pair, status)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)  # a killed study cancels its jobs instead of orphaning them
    verbosity = logs.verbosity(args)
    if args.executor == "inprocess":
        ran = run_inprocess(todo, progress)
    elif args.detach:
        submitted = submit_array(todo, make_executor("slurm", folder / "jobs", spec, args), args.threads, verbosity)
        log.info("submitted %d job(s); follow with --status, combine with --collect", len(submitted))
        print(folder / SUBMITTED)
        return
    else:
        executor = make_executor(args.executor, folder / "jobs", spec, args)
        parallel = args.parallel or spec.parallel
        as_array = args.executor == "slurm"
        ran = run_submitit(todo, executor, parallel, progress, as_array, args.threads, verbosity)
    order = {(json.dumps(cell), pair): i for i, (cell, pair, _, _) in enumerate(jobs)}
    outcomes = sorted(finished + ran, key=lambda o: order[(json.dumps(o.cell), o.pair)])
    finish(spec, folder, outcomes, command)


def finish(spec: StudySpec, folder: Path, outcomes: list[Outcome], command: str) -> None:
    """Write study.nc/study.md from the outcomes; the last line printed is study.nc's path."""
    folder.mkdir(parents=True, exist_ok=True)
    md = write_outputs(spec, folder, outcomes, command)
    failed = sum(1 for o in outcomes if o.error)
    log.info("%d/%d job(s) ok; %s", len(outcomes) - failed, len(outcomes), md)
    print(folder / "study.nc")
