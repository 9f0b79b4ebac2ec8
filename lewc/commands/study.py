"""``python -m lewc.commands.study SPEC.toml``: map where permutation-free LMC holds, over a declarative grid.

A spec names a model and dataset, the axes of the grid (any of width, wd, epochs, bias, depth,
norm, lr, base_width, each a list) and the number of independent seed pairs per cell. Each (cell,
pair) is one job: "train the pair (cached by its recipe), verify it (cached by the analysis
options)": a ``lewc.pipeline.request.Request`` written as JSON in the study's ``jobs/`` folder and run by
``lewc.pipeline.runs.run``, the entry point of ``python -m lewc.verify`` too (``--request FILE`` reruns a
job), so a study never computes a number verify would not. Jobs run on an existing engine, submitit:

* ``--executor local`` (default): each job a subprocess on this machine, at most ``--parallel`` at a
  time (default from the spec, else 1), the CPU threads split between them;
* ``--executor slurm``: a job array; every key of the spec's ``[slurm]`` table goes to submitit's
  ``update_parameters`` (its generic names such as ``timeout_min``, ``mem_gb``, ``cpus_per_task``, or
  any ``SlurmExecutor`` name such as ``account``, ``qos``, ``mem``, ``constraint``,
  ``additional_parameters``, with or without the ``slurm_`` prefix; an unknown key is an error that
  lists submitit's names); ``--partition``, ``--gpus-per-job``, ``--timeout-min`` and
  ``--array-parallelism`` override the spec;
* ``--executor inprocess``: jobs one after another in this process (tests, debugging).

When the jobs are done, ``study.nc`` holds every cell's barriers (raw and calibrated, with and
without alignment), β at λ = ½, every registered claim's value and image interval per pair, the
paper's per-layer statistics (cosines to the LEWC and LLFC predictions at λ = 0.3, ½, 0.7, raw
additivity cosine, cross-term ratios, R², position between LLFC and LEWC, over ``lam`` × ``ell``),
and per cell the mean over pairs with its t-interval (n − 1 d.f.) and one new pair's prediction
interval (``*_mean``, ``*_ci_pairs``, ``*_prediction``, ``*_n_pairs``), with one named dimension per
axis plus ``pair`` and ``align``; ``study.md`` lists the verdicts per cell (over pairs) and every
failed job with its error — a failure never hides the other cells. Rerunning the same spec does only
what is missing: jobs whose analysis is on disk are skipped before anything is submitted, and
interrupted training resumes from its snapshot. ``--status`` prints every job's state from disk
(done, failed, submitted, missing); with SLURM, ``--detach`` exits once the array is submitted
(job ids in ``submitted.json``) and a later ``--collect`` writes study.nc from what is on disk.

Spec format (TOML)::

    [study]
    name = "fmnist-mlp-width"      # folder under data/studies/
    model = "mlp"
    dataset = "fashion-mnist"      # optional: the family's default
    recipe = "paper"               # optional: the training preset (quick, the default, or paper)
    pairs = 2                      # seed pairs (0,1), (2,3), ...
    align = "none,weights"         # optional, as lewc.verify --align
    n_test = 10000                 # optional
    controls = false               # optional (default false: controls do not depend on the grid)

    [grid]
    width = [1, 4, 16]
    wd = [1e-4, 3e-3]
    bias = [true, false]

    [slurm]                        # optional, for --executor slurm: submitit's parameter names
    partition = "gpu"
    gpus_per_node = 1              # (gpus_per_job, lewc's older name, is accepted too)
    timeout_min = 120
    array_parallelism = 32
    account = "my-project"
    qos = "normal"
    mem_gb = 32
    additional_parameters = { reservation = "lmc" }
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

import torch

from lewc.commands.study_executors import (
    SLURM_DEFAULTS,
    SLURM_FLAGS,
    _terminate_tree,
    make_executor,
    run_inprocess,
    run_job,
    run_submitit,
    slurm_available,
    slurm_submission,
    submit_array,
)
from lewc.commands.study_spec import (
    AXES,
    MAX_PAIRS,
    SLURM_ALIASES,
    STUDY_KEYS,
    StudySpec,
    job_command,
    job_file,
    load_spec,
    slurm_parameters,
    write_jobs,
)
from lewc.commands.study_state import (
    SUBMITTED,
    finished_folder,
    job_states,
    outcomes_from_disk,
    print_status,
    split_finished,
)
from lewc.core import logs
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.io import data_home
from lewc.pipeline.endpoints import checkpoint_folder, training_cost_seconds
from lewc.pipeline.folders import check_writable
from lewc.pipeline.grid_product import Outcome, combine, write_outputs
from lewc.training import checkpoints

# The study is split by job into sibling modules: ``study_spec`` (the TOML parsed and checked, each job a
# verify request), ``study_executors`` (in-process, local subprocesses, a SLURM array; stopping a job's
# process tree), ``study_state`` (finished/submitted/failed jobs from disk: ``--status``, ``--collect``);
# ``lewc.pipeline.grid_product`` writes study.nc, study.md and the figures (verify --widths writes the same
# product); this module is the command line (the cost estimate, the runs) and keeps their public names.
__all__ = [  # the command line, and the public names of the study's modules
    "AXES",
    "MAX_PAIRS",
    "SLURM_ALIASES",
    "SLURM_DEFAULTS",
    "SLURM_FLAGS",
    "STUDY_KEYS",
    "SUBMITTED",
    "Outcome",
    "StudySpec",
    "_terminate_tree",
    "build_parser",
    "combine",
    "estimate_seconds",
    "finish",
    "finished_folder",
    "job_command",
    "job_file",
    "job_states",
    "load_spec",
    "main",
    "make_executor",
    "outcomes_from_disk",
    "print_status",
    "run_inprocess",
    "run_job",
    "run_submitit",
    "slurm_parameters",
    "slurm_submission",
    "write_jobs",
    "write_outputs",
]

log = logging.getLogger("lewc.commands.study")  # not __name__: that is "__main__" under python -m


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
        description=__doc__,
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
    md, _ = write_outputs(spec.product(), folder, outcomes, command)
    failed = sum(1 for o in outcomes if o.error)
    log.info("%d/%d job(s) ok; %s", len(outcomes) - failed, len(outcomes), md)
    print(folder / "study.nc")


if __name__ == "__main__":
    main()
