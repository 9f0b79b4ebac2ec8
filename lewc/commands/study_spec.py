"""The study's spec: the TOML file parsed and checked, its cells, and each (cell, pair) as a verify request.

Also the ``[slurm]`` table checked against submitit's own parameter names (a spec error is one line
before anything runs); the product it builds is ``lewc.pipeline.grid_product``'s ``Grid``.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from lewc.align.methods import check_methods
from lewc.core.conventions import BN_IMAGES, DEFAULT_LAMS
from lewc.core.errors import LewcError
from lewc.core.io import write_atomic
from lewc.core.validate import check_bool, check_int, check_number, check_plain_name, short
from lewc.models import get_family
from lewc.pipeline.grid_product import Grid
from lewc.pipeline.request import MIN_TEST_IMAGES, Configs, Request, RunContext, analysis_options
from lewc.training.data import dataset_info
from lewc.training.recipe import MAX_COUNT, RECIPES, default_config

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
        return self.product().cells()

    def product(self) -> Grid:
        """The grid this spec's study.nc is over; its settings (the whole spec) become study.nc's ``spec``."""
        return Grid(self.name, self.model, self.pairs, self.grid, self.align, dict(self.__dict__))

    def job(self, cell: dict, pair: int, command: str = "") -> Request:
        """One (cell, pair) as a ``lewc.pipeline.request.Request``: what the worker runs (from its JSON file)."""
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


# --- SLURM parameters: the spec's [slurm] table, checked against submitit's own lists ------------------------


def submitit_parameter_names() -> tuple[set[str], set[str]]:
    """(generic, slurm-specific) parameter names, asked from submitit itself (never a hand copy)."""

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
