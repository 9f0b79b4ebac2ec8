"""A study's state on disk, so that a driver need not outlive its jobs: which jobs are finished (their
results folder, found without running anything), submitted (``submitted.json``), failed or damaged;
``--status`` prints it and ``--collect`` turns it into outcomes."""

from __future__ import annotations

import json
from pathlib import Path

from submitit.core.utils import JobPaths, pickle_load

from lewc.commands.study_spec import StudySpec
from lewc.core.errors import LewcError
from lewc.core.io import read_json, reading, write_json_atomic
from lewc.pipeline.endpoints import checkpoint_folder
from lewc.pipeline.folders import results_folder
from lewc.pipeline.grid_product import Outcome
from lewc.reporting.results import RESULTS_SCHEMA, open_results
from lewc.training import checkpoints
from lewc.training.data import dataset_identity

SUBMITTED = "submitted.json"
STATES = ("done", "failed", "submitted", "missing", "damaged")


def finished_folder(spec: StudySpec, cell: dict, pair: int) -> Path | None:
    """The results folder of a (cell, pair) whose verify finished (report.json on disk), else None.

    The folder is the one verify itself would reuse: named by the endpoints' sidecars and the
    analysis options, so nothing is loaded or run to find it.
    """

    job = spec.job(cell, pair)
    paths = [cfg.checkpoint_path(checkpoint_folder()) for cfg in job.endpoints.configs]
    try:
        metas = [checkpoints.read_checkpoint_meta(p) for p in paths]
    except LewcError:  # missing or unreadable sidecar: not finished
        return None
    try:
        data_id = dataset_identity(metas[0].dataset, None, metas[0].trained_with("n_calib"))
    except LewcError:  # the dataset is not here: nothing of it can be finished
        return None
    folder = results_folder(metas[0], metas[1], job.options, data_id)
    return folder if (folder / "report.json").is_file() else None


def record_submitted(folder: Path, submitted: list[tuple[dict, int, str]]) -> None:
    rows = [{"cell": cell, "pair": pair, "job_id": str(job_id)} for cell, pair, job_id in submitted]
    write_json_atomic(folder / SUBMITTED, rows)


def submitted_result(jobs_folder: Path, job_id: str) -> tuple[str, object] | None:
    """submitit's result file of a job: ("success", folder) or ("error", traceback); None while it runs."""

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
