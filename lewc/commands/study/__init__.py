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

The package, one job a module: ``spec`` (the TOML parsed and checked, each job a verify request),
``executors`` (in-process, local subprocesses, a SLURM array; stopping a job's process tree),
``state`` (finished/submitted/failed jobs from disk: ``--status``, ``--collect``), ``assemble``
(study.nc), ``report`` (study.md, figures, outcomes.json) and ``cli`` (the cost estimate, the command line).
"""

from __future__ import annotations

from lewc.commands.study.assemble import combine
from lewc.commands.study.cli import build_parser, estimate_seconds, finish, main
from lewc.commands.study.executors import (
    SLURM_DEFAULTS,
    SLURM_FLAGS,
    _terminate_tree,
    make_executor,
    run_inprocess,
    run_job,
    run_submitit,
    slurm_submission,
)
from lewc.commands.study.report import write_outputs
from lewc.commands.study.spec import (
    AXES,
    MAX_PAIRS,
    SLURM_ALIASES,
    STUDY_KEYS,
    Outcome,
    StudySpec,
    job_command,
    job_file,
    load_spec,
    slurm_parameters,
    write_jobs,
)
from lewc.commands.study.state import SUBMITTED, finished_folder, job_states, outcomes_from_disk, print_status

__all__ = [
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
