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
import itertools
import json
import logging
import os
import shlex
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lewc.core import logs
from lewc.core.conventions import BN_IMAGES, DEFAULT_LAMS
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.io import data_home, read_json, reading, write_atomic, write_json_atomic
from lewc.core.validate import check_bool, check_int, check_number, check_plain_name, short
from lewc.reporting.results import (
    BARRIER_NAMES,
    PAPER_LAMS,
    PAPER_STATISTICS,
    RESULTS_SCHEMA,
    STUDY_SCHEMA,
    WEAK_ADDITIVITY_REFERENCES,
    alignments,
    for_alignment,
    open_results,
    paper_statistics,
    write_netcdf,
)
from lewc.reporting.results import barrier as results_barrier
from lewc.reporting.results import barrier_ci as results_barrier_ci
from lewc.stats.pairs import COVERS, over_pairs_dataset, t_intervals

log = logging.getLogger("lewc.commands.study")  # not __name__: that is "__main__" under python -m

AXES = {  # grid axis → (verify flag, value type)
    "width": ("--width", int),
    "wd": ("--wd", float),
    "epochs": ("--epochs", int),
    "bias": ("--no-bias", bool),
    "depth": ("--depth", int),
    "norm": ("--norm", str),
    "lr": ("--lr", float),
    "base_width": ("--base-width", int),
    "schedule": ("--schedule", str),
    "inputs": ("--inputs", str),
}
STUDY_KEYS = {"name", "model", "dataset", "recipe", "pairs", "align", "n_test", "controls", "lams", "parallel"}
# lewc's older [slurm] names → submitit's; every other key is one of submitit's own (see slurm_parameters)
SLURM_ALIASES = {"gpus_per_job": "gpus_per_node", "cpus_per_job": "cpus_per_task"}
SLURM_DEFAULTS = {"timeout_min": 120, "gpus_per_node": 1, "slurm_array_parallelism": 32}
SLURM_FLAGS = {  # study flags that override the spec → submitit's name
    "partition": "slurm_partition",
    "gpus_per_job": "gpus_per_node",
    "array_parallelism": "slurm_array_parallelism",
    "timeout_min": "timeout_min",
}


@dataclass
class StudySpec:
    """A validated spec: the fixed settings, the grid axes in file order, and the executor settings."""

    name: str
    model: str
    dataset: str | None
    pairs: int
    grid: dict[str, list]
    recipe: str | None = None
    align: str = "none,weights"
    n_test: int | None = None
    controls: bool = False
    lams: str | None = None
    parallel: int = 1
    slurm: dict = field(default_factory=dict)

    def cells(self) -> list[dict]:
        names = list(self.grid)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def job(self, cell: dict, pair: int, command: str = ""):
        """One (cell, pair) as a ``lewc.pipeline.request.Request``: what the worker runs (from its JSON file)."""
        from lewc.pipeline.request import Configs, Request, RunContext, analysis_options
        from lewc.training.recipe import default_config

        overrides = {axis: value for axis, value in cell.items() if axis != "width"}
        width = cell.get("width", 1)
        configs = tuple(
            default_config(self.model, width, self.dataset, seed, recipe=self.recipe, **overrides)
            for seed in (2 * pair, 2 * pair + 1)
        )
        try:
            lams = DEFAULT_LAMS if not self.lams else [float(v) for v in self.lams.split(",") if v.strip()]
        except ValueError:
            raise LewcError(f"[study] lams {self.lams!r} is not a comma-separated list of numbers") from None
        options = analysis_options(lams, self.n_test, BN_IMAGES, self.controls, self.align)
        # the study printed its own cost estimate before anything ran: no gate per job
        return Request(Configs(configs), options, RunContext(command=command, progress=False, allow_slow=True))


def job_file(folder: Path, cell_index: int, pair: int) -> Path:
    """Where a job's request is written (beside submitit's files): ``jobs/cell<i>_pair<p>.json``."""
    return folder / "jobs" / f"cell{cell_index}_pair{pair}.json"


def job_command(path: Path) -> str:
    """The command that reruns a job (recorded in its results' provenance)."""
    return f"python -m lewc.verify --request {shlex.quote(str(path))}"


def write_jobs(jobs: list[tuple[dict, int, object, Path]]) -> list[tuple[dict, int, str]]:
    """Each job's request as JSON in its file; the workers get the file's path (the job *is* that file)."""
    out = []
    for cell, pair, request, path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp, r=request: tmp.write_text(r.to_json()))
        out.append((cell, pair, str(path)))
    return out


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
    study, grid, raw_slurm = raw.get("study", {}), raw.get("grid", {}), raw.get("slurm", {})
    for table, allowed, label in ((study, STUDY_KEYS, "[study]"),):
        bad = set(table) - allowed
        if bad:
            raise LewcError(f"unknown key(s) {sorted(bad)} in {label}; allowed: {', '.join(sorted(allowed))}")
    slurm = slurm_parameters(raw_slurm)
    bad_axes = set(grid) - set(AXES)
    if bad_axes:
        raise LewcError(f"unknown grid axis {sorted(bad_axes)}; axes: {', '.join(AXES)}")
    if not grid:
        raise LewcError("the [grid] table is empty: name at least one axis, e.g. width = [1, 4, 16]")
    for key in ("name", "model"):
        if not isinstance(study.get(key), str) or not study.get(key):
            raise LewcError(f"[study] needs a {key} (a string)")
    check_study_values(study, raw_slurm)
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
    parallel = study.get("parallel", 1)
    align = study.get("align", "none,weights")
    lams = study.get("lams")
    spec = StudySpec(
        name=study["name"],
        model=study["model"],
        dataset=study.get("dataset"),
        recipe=study.get("recipe"),
        pairs=pairs,
        grid=clean,
        align=",".join(align) if isinstance(align, list) else align,
        n_test=study.get("n_test"),
        controls=study.get("controls", False),
        lams=",".join(repr(float(v)) for v in lams) if isinstance(lams, list) else lams,
        parallel=parallel,
        slurm=slurm,
    )
    check_cells(spec)
    return spec


MAX_PAIRS = 1000


def check_study_values(study: dict, slurm: dict) -> None:
    """[study] and [slurm] values by type and range (booleans are booleans, counts ≥ 1, λ lists, names)."""
    from lewc.align.methods import check_methods
    from lewc.models import get_family
    from lewc.pipeline.request import MIN_TEST_IMAGES
    from lewc.training.data import dataset_info
    from lewc.training.recipe import MAX_COUNT

    check_plain_name(study["name"], "[study] name")
    get_family(check_plain_name(study["model"], "[study] model"))
    if "dataset" in study:
        dataset_info(check_plain_name(study["dataset"], "[study] dataset"))
    check_int(study.get("pairs", 1), "[study] pairs", 1, MAX_PAIRS)
    check_int(study.get("parallel", 1), "[study] parallel", 1, 1024)
    if "n_test" in study:
        check_int(study["n_test"], "[study] n_test", MIN_TEST_IMAGES, MAX_COUNT)
    check_bool(study.get("controls", False), "[study] controls")
    if "recipe" in study:
        from lewc.training.recipe import RECIPES

        if not isinstance(study["recipe"], str) or study["recipe"] not in RECIPES:
            raise LewcError(f"[study] recipe must be one of {', '.join(RECIPES)}, got {short(study['recipe'])}")
    align = study.get("align", "none,weights")
    if isinstance(align, list) and all(isinstance(a, str) for a in align) and align:
        align = ",".join(align)
    if not isinstance(align, str):
        raise LewcError(f"[study] align must be a string like 'none,weights' or a list of names, got {short(align)}")
    check_methods(align)
    lams = study.get("lams")
    if lams is not None and not isinstance(lams, str):  # a string is verify's --lams text, checked per cell
        if not isinstance(lams, list) or not lams:
            raise LewcError(f"[study] lams must be a non-empty list of numbers in [0, 1], got {short(lams)}")
        for v in lams:
            check_number(v, "[study] lams value", 0.0, 1.0)
    for key in ("gpus_per_job", "timeout_min", "array_parallelism", "cpus_per_job"):
        if key in slurm:
            check_int(slurm[key], f"[slurm] {key}", 1, 10**6)
    if "partition" in slurm:
        check_plain_name(slurm["partition"], "[slurm] partition")


def check_cells(spec: StudySpec) -> None:
    """Every cell through the recipe's and the analysis options' own checks (conflicts, bad values)."""
    for cell in spec.cells():
        try:
            spec.job(cell, 0)
        except LewcError as err:
            raise LewcError(f"cell {cell}: {err}") from None


# --- jobs -----------------------------------------------------------------------------------------------


def run_job(job: str, threads: int | None = None, verbosity: int | None = None) -> str:
    """One (cell, pair) from its request file: train if needed, verify, return the results folder. Runs in
    the worker.

    A submitit worker is a fresh process: logging is set up here, so its log (a SLURM ``.out``)
    keeps a line per epoch and per stage.
    """
    import torch

    from lewc.pipeline.request import Request
    from lewc.pipeline.runs import run

    if verbosity is not None:  # None: in this process, whose logging the driver already set up
        logs.setup_logging(verbosity)
    if threads:
        torch.set_num_threads(threads)
    done = run(Request.from_json(Path(job).read_text()))
    return str(done.report_path.parent)


@dataclass
class Outcome:
    cell: dict
    pair: int
    folder: str | None = None
    error: str | None = None


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
    import psutil

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
    import shutil

    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def make_executor(kind: str, folder: Path, spec: StudySpec, args: argparse.Namespace):
    import submitit

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


# --- SLURM parameters: the spec's [slurm] table, checked against submitit's own lists ------------------------


def submitit_parameter_names() -> tuple[set[str], set[str]]:
    """(generic, slurm-specific) parameter names, asked from submitit itself (never a hand copy)."""
    import submitit

    return set(submitit.AutoExecutor._valid_parameters()), set(submitit.SlurmExecutor._valid_parameters())


def slurm_parameters(table: dict) -> dict:
    """``[slurm]`` → ``AutoExecutor.update_parameters`` keywords; an unknown key is one line naming the valid ones.

    A key is one of submitit's generic names (``timeout_min``, ``mem_gb``, ``cpus_per_task``, …), a
    ``SlurmExecutor`` name with or without its ``slurm_`` prefix (``account``, ``qos``, ``mem``,
    ``constraint``, ``additional_parameters``, …), or one of lewc's older aliases (``gpus_per_job``,
    ``cpus_per_job``).
    """
    generic, specific = submitit_parameter_names()
    out, bad = {}, []
    for key, value in table.items():
        name = SLURM_ALIASES.get(key, key)
        bare = name.removeprefix("slurm_")
        if name in generic:
            out[name] = value
        elif bare in specific or bare in generic:
            out[f"slurm_{bare}"] = value
        else:
            bad.append(key)
    if bad:
        raise LewcError(
            f"unknown [slurm] key(s) {sorted(bad)}; submitit accepts {', '.join(sorted(generic))} and "
            f"(optionally prefixed slurm_) {', '.join(sorted(specific - generic))}"
        )
    return out


def slurm_submission(spec: StudySpec, args: argparse.Namespace) -> dict:
    """What ``update_parameters`` gets: lewc's defaults, then the spec's ``[slurm]``, then the study's flags."""
    flags = {SLURM_FLAGS[k]: v for k, v in vars(args).items() if k in SLURM_FLAGS and v is not None}
    return SLURM_DEFAULTS | spec.slurm | flags


# --- combining --------------------------------------------------------------------------------------------


def combine(spec: StudySpec, outcomes: list[Outcome]):
    """``study.nc``: one dimension per axis, plus pair, align and the barrier/claim names.

    Every registered claim (``lewc.stats.claims.claim_ids``) and every paper statistic
    (``lewc.reporting.results.PAPER_STATISTICS``) the results hold is kept, per pair; the per-pair
    intervals are over test images (conditional on the pair), and each cell gets the mean over its
    pairs with the t-interval (n − 1 d.f.) and one new pair's prediction interval
    (``lewc.stats.pairs``).
    """
    import numpy as np
    import xarray as xr

    from lewc.pipeline.pair import evaluate_verdicts
    from lewc.stats.claims import claim_ids, evaluate_claims

    axes = list(spec.grid)
    shape = [len(spec.grid[a]) for a in axes]
    methods = ["none"] + [m for m in spec.align.split(",") if m and m != "none"]
    barrier_names = [n for n in BARRIER_NAMES if "_mid" in n]
    barrier = np.full([*shape, spec.pairs, len(methods), len(barrier_names)], np.nan)
    barrier_ci = np.full([*shape, spec.pairs, len(methods), len(barrier_names), 2], np.nan)
    beta = np.full([*shape, spec.pairs, len(methods)], np.nan)
    claim_names = claim_ids(per_alignment=True)  # the registry: a claim registered anywhere reaches study.nc
    claim_value = np.full([*shape, spec.pairs, len(methods), len(claim_names)], np.nan)
    claim_ci = np.full([*shape, spec.pairs, len(methods), len(claim_names), 2], np.nan)
    acc_ends = np.full([*shape, spec.pairs, 2], np.nan)
    errors = np.full([*shape, spec.pairs], "", dtype=object)
    total_depth = np.full([*shape, spec.pairs], np.nan)
    max_ell = 64
    magnitude = np.full([*shape, spec.pairs, len(methods), max_ell], np.nan)  # a + b at λ = ½ per depth ℓ
    paper: dict[str, np.ndarray] = {}  # paper statistic → [*shape, pair, align, (lam,) ell]
    paper_dims: dict[str, list[str]] = {}
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
            barrier_ci[index + (j,)] = [results_barrier_ci(r, n).values for n in barrier_names]
            beta[index + (j,)] = float(r.beta.sel(lam=0.5, method="nearest"))
            found = {c.id: c for c in evaluate_claims(r)}
            claim_value[index + (j,)] = [found[n].value if n in found else np.nan for n in claim_names]
            claim_ci[index + (j,)] = [found[n].ci if n in found else [np.nan] * 2 for n in claim_names]
            if "coef_a_full" in r:
                mid = r.sel(lam=0.5, method="nearest")
                for name in r.layer.values:
                    ell = int(r.depth.sel(layer=name))
                    if ell <= max_ell:
                        total = mid.coef_a_full.sel(layer=name) + mid.coef_b_full.sel(layer=name)
                        magnitude[index + (j, ell - 1)] = float(total)
            ps = paper_statistics(r)
            for var, da in ps.data_vars.items():
                lam_dims = ["lam"] if "lam" in da.dims else []
                if var not in paper:
                    lam_shape = [len(PAPER_LAMS)] * len(lam_dims)
                    paper[var] = np.full([*shape, spec.pairs, len(methods), *lam_shape, max_ell], np.nan)
                    paper_dims[var] = [*axes, "pair", "align", *lam_dims, "ell"]
                for name, ell in zip(ps.layer.values, ps.depth.values, strict=True):
                    if 1 <= int(ell) <= max_ell:
                        paper[var][index + (j, ..., int(ell) - 1)] = da.sel(layer=name).values
        total_depth[index] = float(res.attrs.get("total_depth", np.nan))
        acc_ends[index] = for_alignment(res).acc.sel(split="test", lam=[0.0, 1.0]).values
    coords = {a: spec.grid[a] for a in axes} | {"pair": list(range(spec.pairs)), "align": methods}
    used = np.isfinite(magnitude).any(axis=tuple(range(magnitude.ndim - 1)))
    for arr in paper.values():
        used |= np.isfinite(arr).any(axis=tuple(range(arr.ndim - 1)))
    last = int(np.nonzero(used)[0].max()) + 1 if used.any() else 1
    magnitude = magnitude[..., :last]
    max_ell = last
    bound = ["lo", "hi"]
    ds = xr.Dataset(
        {
            "barrier": ([*axes, "pair", "align", "barrier_name"], barrier),
            "barrier_ci": ([*axes, "pair", "align", "barrier_name", "bound"], barrier_ci),
            "beta_mid": ([*axes, "pair", "align"], beta),
            "claim_value": ([*axes, "pair", "align", "claim"], claim_value),
            "claim_ci": ([*axes, "pair", "align", "claim", "bound"], claim_ci),
            "endpoint_acc": ([*axes, "pair", "endpoint"], acc_ends),
            "error": ([*axes, "pair"], errors.astype(str)),
            "total_depth": ([*axes, "pair"], total_depth),
            "magnitude_mid": ([*axes, "pair", "align", "ell"], magnitude),
        }
        | {var: (paper_dims[var], arr[..., :last]) for var, arr in paper.items()},
        coords=coords
        | {
            "barrier_name": barrier_names,
            "claim": claim_names,
            "endpoint": ["a", "b"],
            "ell": list(range(1, max_ell + 1)),
            "bound": bound,
        }
        | ({"lam": list(PAPER_LAMS)} if any("lam" in d for d in paper_dims.values()) else {}),
        attrs={"schema": STUDY_SCHEMA, "spec": json.dumps(spec.__dict__, default=str), "model": spec.model},
    )
    for name in ("barrier_ci", "claim_ci"):
        ds[name].attrs["covers"] = COVERS["images"]
    for name in paper:
        ds[name].attrs["conditional_on"] = "each pair (per-pair values; the trend gives intervals over pairs)"
    ds = ds.merge(over_pairs_dataset(ds[["barrier", "claim_value", "beta_mid"]]))
    verdicts = {index: evaluate_verdicts(results) for index, results in per_cell.items()}
    return ds, verdicts


def paper_lines(ds, axes: list[str]) -> list[str]:
    """study.md's table of the paper's per-layer statistics beside the verdicts: per cell and depth ℓ,
    without alignment, the mean over the cell's pairs [t-interval over pairs] (``lewc trend``
    maps them over widths; study.nc keeps every pair's value)."""
    import numpy as np

    names = [v for v in PAPER_STATISTICS if v in ds]
    if not names:
        return []
    columns = []  # (variable, λ or None): the cosines at every λ, the other λ-dependent ones at ½
    for v in names:
        if "lam" not in ds[v].dims:
            columns.append((v, None))
        elif v.startswith("cos_"):
            columns += [(v, float(lam)) for lam in ds.lam.values]
        else:
            columns.append((v, 0.5))
    ref = WEAK_ADDITIVITY_REFERENCES
    lines = [
        "",
        "## The paper's statistics beside the verdicts (no alignment)",
        "",
        "Per cell and layer depth ℓ: mean over the cell's pairs [95% t-interval over pairs, n − 1 d.f.; one pair: "
        "its value, conditional on it]. cos_lewc / cos_llfc: cosine of the merged layer output with the LEWC / "
        f"LLFC prediction; weak_additivity: raw cosine (exact {ref['exact']:g}, independent Gaussians "
        f"{ref['independent_gaussians_mid']:g} at ½); ro_*: raw cross-term ratios (exact LEWC 0); r2_full: the "
        "fit's R²; lewc_position: t_ℓ = (k_gram − 1)/(ℓ − 1), 0 at LLFC, 1 at LEWC (docs/conventions.md).",
        "",
        "| " + " | ".join([*axes, "ℓ"] + [v + (f" λ={lam:g}" if lam is not None else "") for v, lam in columns]) + " |",
        "|" + "---|" * (len(axes) + 1 + len(columns)),
    ]
    none = ds.sel(align="none")
    cells = none[names].stack(cell=axes) if axes else none[names].expand_dims(cell=[0])
    for k in range(cells.sizes["cell"]):
        cell = cells.isel(cell=k)
        for ell in cell.ell.values:
            parts = []
            for v, lam in columns:
                da = cell[v].sel(ell=ell)
                vals = (da.sel(lam=lam) if lam is not None else da).values
                vals = vals[np.isfinite(vals)]
                over = t_intervals(vals)
                parts.append(
                    "—"
                    if not len(vals)
                    else f"{over.mean:.3g}" + (f" [{over.ci[0]:.3g}, {over.ci[1]:.3g}]" if len(vals) > 1 else "")
                )
            if all(p == "—" for p in parts):
                continue
            lines.append("| " + " | ".join([str(cell[a].item()) for a in axes] + [str(int(ell))] + parts) + " |")
    return lines


def _verdict_cell(claim) -> str:
    """``PASS 0.084 [−0.07, 0.24] (n=3)``: a verdict over pairs says its n; one pair's says it is one pair."""
    lo, hi = claim.ci
    n = f"n={claim.n_pairs}" if claim.n_pairs > 1 else "1 pair"
    return f"{claim.verdict} {claim.value:.3g} [{lo:.3g}, {hi:.3g}] ({n})"


def write_outputs(spec: StudySpec, folder: Path, outcomes: list[Outcome], command: str) -> Path:
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
        "Each verdict: value [95% interval]. With n ≥ 2 pairs the value is the mean over the cell's pairs and the "
        f"interval {COVERS['pairs']}; with one pair it is {COVERS['images']}. study.nc keeps each pair's "
        "value and image interval (claim_value, claim_ci), the mean's t-interval over pairs (claim_ci_pairs) "
        "and one new pair's prediction interval (claim_prediction), and the paper's per-layer statistics.",
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
        row += [_verdict_cell(claims[c]) if c in claims else "—" for c in claim_ids]
        lines.append("| " + " | ".join(row) + " |")
    failed = [o for o in outcomes if o.error]
    lines += paper_lines(ds, axes)
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


# --- the grid's state on disk: finished jobs, --status, --detach and --collect ------------------------------

SUBMITTED = "submitted.json"
STATES = ("done", "failed", "submitted", "missing", "damaged")


def finished_folder(spec: StudySpec, cell: dict, pair: int) -> Path | None:
    """The results folder of a (cell, pair) whose verify finished (report.json on disk), else None.

    The folder is the one verify itself would reuse: named by the endpoints' sidecars and the
    analysis options, so nothing is loaded or run to find it.
    """
    from lewc.pipeline.endpoints import checkpoint_folder
    from lewc.pipeline.folders import results_folder
    from lewc.training import checkpoints
    from lewc.training.data import dataset_identity

    job = spec.job(cell, pair)
    paths = [cfg.checkpoint_path(checkpoint_folder()) for cfg in job.endpoints.configs]
    try:
        metas = [checkpoints.read_meta(p) for p in paths]
    except LewcError:  # missing or unreadable sidecar: not finished
        return None
    n_calib = (metas[0].get("train_config") or {}).get("n_calib")
    try:
        data_id = dataset_identity(metas[0]["dataset"], None, n_calib)
    except LewcError:  # the dataset is not here: nothing of it can be finished
        return None
    folder = results_folder(metas[0], metas[1], job.options, data_id)
    return folder if (folder / "report.json").is_file() else None


def record_submitted(folder: Path, submitted: list[tuple[dict, int, str]]) -> None:
    rows = [{"cell": cell, "pair": pair, "job_id": str(job_id)} for cell, pair, job_id in submitted]
    write_json_atomic(folder / SUBMITTED, rows)


def submitted_result(jobs_folder: Path, job_id: str) -> tuple[str, object] | None:
    """submitit's result file of a job: ("success", folder) or ("error", traceback); None while it runs."""
    from submitit.core.utils import JobPaths, pickle_load

    path = JobPaths(jobs_folder, job_id).result_pickle
    if not path.is_file():
        return None
    try:
        return pickle_load(path)  # submitit's own file, the one job.result() reads
    except Exception:  # noqa: BLE001 - a half-written pickle: the job is still finishing
        return None


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "failed")


def job_states(spec: StudySpec, folder: Path) -> list[tuple[dict, int, str, str]]:
    """(cell, pair, state, detail) of every job, from disk only: done, failed, submitted or missing."""
    submitted, errors = {}, {}
    if (folder / SUBMITTED).is_file():
        with reading(folder / SUBMITTED, "study record"):
            submitted = {(json.dumps(r["cell"]), r["pair"]): str(r["job_id"]) for r in _rows(folder / SUBMITTED)}
    if (folder / "outcomes.json").is_file():
        with reading(folder / "outcomes.json", "study record"):
            rows = _rows(folder / "outcomes.json")
            errors = {(json.dumps(r["cell"]), r["pair"]): str(r["error"]) for r in rows if r.get("error")}
    states = []
    for cell in spec.cells():
        for pair in range(spec.pairs):
            key = (json.dumps(cell), pair)
            done = finished_folder(spec, cell, pair)
            if done is not None:
                damage = damaged(done)
                states.append((cell, pair, "damaged", damage) if damage else (cell, pair, "done", str(done)))
                continue
            job_id = submitted.get(key)
            result = submitted_result(folder / "jobs", job_id) if job_id else None
            if result is not None and result[0] == "error":
                states.append((cell, pair, "failed", f"job {job_id}: {_first_error_line(result[1])}"))
            elif job_id and result is None:
                states.append((cell, pair, "submitted", f"job {job_id}, no result yet"))
            elif key in errors:
                states.append((cell, pair, "failed", errors[key]))
            else:
                states.append((cell, pair, "missing", ""))
    return states


def _rows(path: Path) -> list[dict]:
    """A study record (submitted.json, outcomes.json): a list of objects, or one line naming the file."""
    rows = read_json(path, "study record")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise LewcError(f"study record {path} is not a list of job records")
    return rows


def damaged(folder: Path) -> str:
    """Empty for an intact finished job folder, else one line naming its damaged report.json or results.nc."""
    try:
        report = read_json(folder / "report.json", "job report")
        if not isinstance(report, dict) or not isinstance(report.get("barriers"), dict):
            raise LewcError(f"job report {folder / 'report.json'} is not a lewc report")
        with reading(folder / "results.nc", "job results"):
            res = open_results(folder / "results.nc", RESULTS_SCHEMA)
            res.load()
            res.close()
    except LewcError as err:
        return str(err)
    return ""


def print_status(spec: StudySpec, folder: Path) -> None:
    """``--status``: one line per job on stdout, then the counts; a damaged job result is exit 2 naming it."""
    states = job_states(spec, folder)
    for cell, pair, state, detail in states:
        print(f"{state:<9} {json.dumps(cell)} pair {pair}" + (f": {detail}" if detail else ""))
    counts = {s: sum(1 for row in states if row[2] == s) for s in STATES}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "damaged") + f" of {len(states)} job(s)")
    bad = [detail for _, _, state, detail in states if state == "damaged"]
    if bad:
        raise LewcError(f"{len(bad)} damaged job result(s), first: {bad[0]} (rerun the study to redo them)")


def outcomes_from_disk(spec: StudySpec, folder: Path) -> list[Outcome]:
    """``--collect``: every job's outcome from what is on disk (unfinished ones are listed as errors)."""
    out = []
    for cell, pair, state, detail in job_states(spec, folder):
        if state == "damaged":  # refused before anything is written
            raise LewcError(f"{detail} (rerun the study to redo this job, then --collect)")
        if state == "done":
            out.append(Outcome(cell, pair, folder=detail))
        else:
            out.append(Outcome(cell, pair, error=f"{state}: {detail}" if detail else state))
    return out


def split_finished(spec: StudySpec, jobs: list) -> tuple[list[Outcome], list]:
    """(outcomes of the jobs already finished on disk, the jobs still to run): nothing finished is resubmitted."""
    done, todo = [], []
    for cell, pair, *job in jobs:
        folder = finished_folder(spec, cell, pair)
        if folder is None or damaged(folder):  # a damaged result is redone (verify does not reuse it)
            todo.append((cell, pair, *job))
        else:
            done.append(Outcome(cell, pair, folder=str(folder)))
    return done, todo


# --- command line -----------------------------------------------------------------------------------------


def estimate_seconds(spec: StudySpec, target: str) -> tuple[float, int]:
    """FLOP-based training time of the missing endpoints on ``target`` (cpu or cuda), and their count.

    The rates are lewc.pipeline.endpoints' assumptions (5e10 FLOP/s sustained on a CPU, 2e14 on one GPU in bf16);
    the estimate is for one device running the jobs one after another.
    """
    import torch

    from lewc.pipeline.endpoints import checkpoint_folder, training_cost_seconds
    from lewc.training import checkpoints

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
        prog="python -m lewc.commands.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    from lewc.pipeline.folders import check_writable

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
    import torch

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

    import signal

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


if __name__ == "__main__":
    main()
