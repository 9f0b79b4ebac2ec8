"""Where a study's jobs run: in this process, as local subprocesses (at most ``--parallel`` at a time) or
as a SLURM job array, all through submitit; a cancelled study stops its jobs' whole process trees."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import psutil
import submitit
import torch

from lewc.commands.study_spec import StudySpec
from lewc.commands.study_state import record_submitted
from lewc.core import logs
from lewc.core.errors import LewcError
from lewc.pipeline.grid_product import Outcome
from lewc.pipeline.request import Request
from lewc.pipeline.runs import run

SLURM_DEFAULTS = {"timeout_min": 120, "gpus_per_node": 1, "slurm_array_parallelism": 32}
SLURM_FLAGS = {  # study flags that override the spec → submitit's name
    "partition": "slurm_partition",
    "gpus_per_job": "gpus_per_node",
    "array_parallelism": "slurm_array_parallelism",
    "timeout_min": "timeout_min",
}


def run_job(job: str, threads: int | None = None, verbosity: int | None = None) -> str:
    """One (cell, pair) from its request file: train if needed, verify, return the results folder. Runs in
    the worker.

    A submitit worker is a fresh process: logging is set up here, so its log (a SLURM ``.out``)
    keeps a line per epoch and per stage.
    """

    if verbosity is not None:  # None: in this process, whose logging the driver already set up
        logs.setup_logging(verbosity)
    if threads:
        torch.set_num_threads(threads)
    done = run(Request.from_json(Path(job).read_text()))
    return str(done.report_path.parent)


def run_inprocess(jobs: list[tuple[dict, int, str]], progress) -> list[Outcome]:
    outcomes = []
    for cell, pair, job in jobs:
        try:
            outcomes.append(Outcome(cell, pair, folder=run_job(job)))
        except Exception as err:  # noqa: BLE001 - a failed cell is recorded, never fatal to the others
            outcomes.append(Outcome(cell, pair, error=f"{type(err).__name__}: {str(err).splitlines()[0]}"))
        progress(outcomes[-1])
    return outcomes


def run_submitit(
    jobs, executor, max_parallel: int, progress, as_array: bool = False, threads: int | None = None, verbosity: int = 0
) -> list[Outcome]:
    """Submit through a submitit executor, at most ``max_parallel`` running at once; collect results.

    With ``as_array`` (SLURM) everything is submitted at once as one job array and the scheduler
    enforces the parallelism.
    """
    pending = list(jobs)
    running: list = []
    outcomes: list[Outcome] = []
    if as_array:
        running, pending = submit_array(pending, executor, threads, verbosity), []
    try:
        _collect(pending, running, outcomes, executor, max_parallel, progress, threads, verbosity)
    except BaseException:  # Ctrl-C or SIGTERM: cancel the jobs in flight (their training resumes next run)
        for _, _, job in running:
            process = getattr(job, "_process", None)  # submitit's local job: a process tree on this machine
            if process is not None:
                _terminate_tree(process.pid)
            else:
                job.cancel(check=False)
        raise
    return outcomes


def submit_array(jobs, executor, threads: int | None, verbosity: int) -> list:
    """Everything as one job array; the job ids go to ``submitted.json`` (for ``--status`` and ``--collect``)."""
    with executor.batch():
        submitted = [(cell, pair, executor.submit(run_job, job, threads, verbosity)) for cell, pair, job in jobs]
    record_submitted(Path(executor.folder).parent, [(cell, pair, job.job_id) for cell, pair, job in submitted])
    return submitted


def _terminate_tree(pid: int, grace_s: float = 3.0) -> None:
    """Stop a local job and everything it started (submitit's cancel only interrupts the parent).

    SIGTERM first; submitit's worker ignores it (on SLURM it means "requeue"), so whatever is still
    alive after ``grace_s`` gets SIGKILL — safe, since training snapshots and results are atomic.
    """

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for sig in ("terminate", "kill"):
        for proc in procs:
            try:
                getattr(proc, sig)()
            except psutil.NoSuchProcess:
                pass
        _, procs = psutil.wait_procs(procs, timeout=grace_s)
        if not procs:
            return


def _collect(
    pending, running, outcomes, executor, max_parallel: int, progress, threads: int | None = None, verbosity: int = 0
) -> None:
    """Keep up to ``max_parallel`` jobs running; record each as it finishes (``running`` is updated in place)."""
    while pending or running:
        while pending and len(running) < max_parallel:
            cell, pair, pair_job = pending.pop(0)
            job_threads = threads or executor_threads(max_parallel)
            running.append((cell, pair, executor.submit(run_job, pair_job, job_threads, verbosity)))
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


def slurm_available() -> bool:
    """SLURM's commands are on PATH (submitit's own check fails later, after folders exist)."""

    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def make_executor(kind: str, folder: Path, spec: StudySpec, args: argparse.Namespace):

    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=args.timeout_min or 24 * 60)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = slurm_submission(spec, args)
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError, ValueError, TypeError) as err:  # submitit's own checks of names and types
        raise LewcError(f"submitit refused the [slurm] parameters {params}: {str(err).splitlines()[0]}") from None
    return executor


def slurm_submission(spec: StudySpec, args: argparse.Namespace) -> dict:
    """What ``update_parameters`` gets: lewc's defaults, then the spec's ``[slurm]``, then the study's flags."""
    flags = {SLURM_FLAGS[k]: v for k, v in vars(args).items() if k in SLURM_FLAGS and v is not None}
    return SLURM_DEFAULTS | spec.slurm | flags
