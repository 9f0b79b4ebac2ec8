"""One pair through the whole analysis: B aligned by each method, the controls, the claims, the folder.

``analyse_pair`` takes loaded models and a dataset and returns a ``PairResult`` (nothing on disk);
``write_folder`` publishes a result as the folder the command line and ``PairReport.save`` write.

The command line publishes in two steps, so that optional work cannot lose the main result:
``analyse_main`` (every alignment's sweep and the claims) → ``write_folder`` (the folder, its report's
``controls_status`` "pending") → ``complete_controls`` (the controls, then the folder republished with
them). A control that fails republishes the folder with the reason in ``controls_status`` and raises; a
rerun with the same options finds the main results and only runs the controls (``lewc.pipeline.runs``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import xarray as xr

from lewc.align import ACTIVATION_IMAGES, aligned_path, load_or_align
from lewc.align.controls import disjoint_block_pair, self_pair
from lewc.core.errors import LewcError
from lewc.pipeline.admission import admission_attr, admit_pair
from lewc.pipeline.analysis import analyze
from lewc.pipeline.endpoints import chance_threshold
from lewc.pipeline.folders import AnalysisOptions, check_out, check_writable, private_folder, publish
from lewc.pipeline.memplan import compute_batches_for
from lewc.reporting import plots, report
from lewc.reporting.report import (
    CONTROLS_COMPLETE,
    CONTROLS_NOT_REQUESTED,
    CONTROLS_PENDING,
    controls_block,
    controls_failed,
    endpoint_accuracies,
)
from lewc.reporting.results import (
    for_alignment,
    open_results,
    split_samples,
    stack_alignments,
    to_frame,
    write_netcdf,
)
from lewc.stats.claims import Claim, compared_alignment, evaluate_claims
from lewc.sweep.merge import Pair
from lewc.sweep.path import SweepOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """How to run (not what to compute: that is ``AnalysisOptions``, which names the folder)."""

    batch_size_eval: int = 500
    progress: bool = True
    align_cache: Path | None = None  # folder caching aligned B's as checkpoints (None: no cache)
    keep_samples: bool = False  # also write samples.nc (per-coordinate and per-image arrays); no effect on numbers
    allow_chance: bool = False  # analyse chance-level endpoints anyway (recorded in the results' ``admission``)


@dataclass
class PairResult:
    """Everything one pair's analysis produced: results stacked over alignments, claims, controls."""

    results: xr.Dataset
    claims: list[Claim]
    controls: dict[str, xr.Dataset] = field(default_factory=dict)
    control_claims: dict[str, list[Claim]] = field(default_factory=dict)
    align_claims: dict[str, list[Claim]] = field(default_factory=dict)
    absent_controls: dict[str, str] = field(default_factory=dict)  # control name → why it could not be built
    controls_status: str = CONTROLS_COMPLETE  # report.json's: not requested, pending, complete or failed: why


class MainAnalysis(NamedTuple):
    """``analyse_main``'s result (controls pending or not requested) and how its controls are to be swept."""

    result: PairResult
    sweep_options: SweepOptions
    control_batches: dict[str, int]  # control name → its compute batch (lewc.pipeline.memplan)


def evaluate_verdicts(results: Sequence[xr.Dataset]) -> list[Claim]:
    """The claims of one pair or several (results with an ``align`` dimension or without): every claim
    on the unaligned pairs, plus each registered claim comparing two alignments every pair holds
    (``permutation_gap`` when every pair was also weight-matched)."""
    return evaluate_claims(results)


CONTROL_NAMES = ("positive", "negative")


def run_control(
    name: str, pair: Pair, ds, options: AnalysisOptions, sweep_options: SweepOptions, absent: dict[str, str]
) -> xr.Dataset | None:
    """One control through the same pipeline (see lewc.align.controls); None, with the reason in ``absent``,
    when it cannot be built."""
    t0 = time.perf_counter()
    try:
        if name == "positive":
            probe = ds.normalize(ds.test.x[:64])
            a, b, meta_a, meta_b, note = disjoint_block_pair(
                pair.model_a, pair.model_b, pair.meta_a, pair.meta_b, probe, reestimate_bn=sweep_options.reestimate_bn
            )
        else:
            a, b, meta_a, meta_b, note = self_pair(pair.model_a, pair.meta_a)
    except LewcError as err:
        log.warning("no %s control: %s", name, err)
        absent[name] = str(err)
        return None
    res = analyze(Pair(a, b, meta_a, meta_b), ds, list(options.lams), sweep_options, {"control": name})
    res.attrs["control"] = name
    res.attrs["control_note"] = note
    log.info(
        "controls: %s control done (compute batch %d), %.1f s", name, sweep_options.batch_size, time.perf_counter() - t0
    )
    return res


def run_controls(
    pair: Pair,
    ds,
    options: AnalysisOptions,
    sweep_options: SweepOptions,
    absent: dict[str, str] | None = None,
    batches: dict[str, int] | None = None,
) -> dict[str, xr.Dataset]:
    """The positive and negative controls (``run_control``), each at its compute batch (``batches``, from
    ``lewc.pipeline.memplan.compute_batches_for``; default ``sweep_options``'); a control that cannot be
    built is left out with its reason in ``absent``."""
    out = {}
    absent = {} if absent is None else absent
    for name in CONTROL_NAMES:
        opts = dataclasses.replace(sweep_options, batch_size=(batches or {}).get(name, sweep_options.batch_size))
        res = run_control(name, pair, ds, options, opts, absent)
        if res is not None:
            out[name] = res
    return out


def aligned_endpoint(method: str, pair: Pair, ds, settings: RunSettings, device: torch.device):
    """B permuted towards A by ``method`` (cached as a checkpoint under ``settings.align_cache``)."""

    def batches():
        n = min(ACTIVATION_IMAGES, len(ds.train))
        return [x for x, _ in ds.batches("train", settings.batch_size_eval, n)]

    folder = settings.align_cache
    cached = folder is not None and aligned_path(folder, pair.meta_a, pair.meta_b, method).is_file()
    model, meta = load_or_align(folder, method, pair.model_a, pair.model_b, pair.meta_a, pair.meta_b, batches, device)
    info = meta.alignment  # the Alignment's own record (lewc.align.methods): what was done, and its cost
    log.info(
        "align: %s B to A by %s, objective %.4g → %.4g (%s pass(es), %.1f s)",
        "reusing" if cached else "aligned",
        method,
        info["objective_before"],
        info["objective_after"],
        info["passes"],
        info["seconds"],
    )
    return model, meta


def warn_degenerate(claims: list[Claim]) -> None:
    for reason in sorted({c.degenerate for c in claims if c.degenerate}):
        log.warning("degenerate pair: %s; the claims that need A and B apart are INCONCLUSIVE", reason)


def warn_at_chance(res: xr.Dataset, ds, n_test: int | None) -> None:
    """A WARNING per endpoint at chance level: reached only with the ``allow_chance`` opt-in (the admission
    gate refuses such endpoints otherwise, on every path); their barriers say nothing about the claim."""
    n = min(n_test or len(ds.test), len(ds.test))
    limit = chance_threshold(ds.info.num_classes, n)
    ends = endpoint_accuracies(res)
    for end in ("a", "b"):
        if ends[end] / 100.0 <= limit:
            log.warning(
                "endpoint %s reaches %.2f %% on %d test images: at chance (≤ %.2f %% for %d classes); "
                "its barriers and verdicts say nothing about connectivity",
                end.upper(),
                ends[end],
                n,
                100 * limit,
                ds.info.num_classes,
            )


def analyse_main(
    pair: Pair, ds, options: AnalysisOptions, settings: RunSettings, device: torch.device, provenance: dict
) -> MainAnalysis:
    """Admit the pair (``lewc.pipeline.admission``), sweep it once per alignment method, evaluate every
    claim: everything but the controls (``complete_controls`` or ``add_controls`` run them)."""
    sources = {end: str(provenance.get(f"checkpoint_{end}") or f"model_{end}") for end in ("a", "b")}
    settings, sweep_options, batches = sweep_settings(pair, ds, options, settings, device)
    admitted = admit_pair(pair, ds, options.n_test, settings.batch_size_eval, sources, settings.allow_chance)
    provenance = provenance | {"admission": admission_attr(admitted)}
    by_align = {"none": analyze(pair, ds, list(options.lams), sweep_options, provenance)}
    warn_at_chance(by_align["none"], ds, options.n_test)
    for method in options.align:
        if method == "none":
            continue
        model_b_aligned, meta_b_aligned = aligned_endpoint(method, pair, ds, settings, device)
        aligned = Pair(pair.model_a, model_b_aligned, pair.meta_a, meta_b_aligned)
        by_align[method] = analyze(aligned, ds, list(options.lams), sweep_options, provenance | {"alignment": method})
    stacked = stack_alignments(by_align)
    claims = evaluate_verdicts([stacked])
    stacked = with_comparisons(stacked, claims)
    warn_degenerate(claims)
    result = PairResult(
        results=stacked,
        claims=claims,
        align_claims={m: evaluate_claims(r) for m, r in by_align.items() if m != "none"},
        controls_status=CONTROLS_PENDING if options.controls else CONTROLS_NOT_REQUESTED,
    )
    return MainAnalysis(result, sweep_options, batches)


def sweep_settings(
    pair: Pair, ds, options: AnalysisOptions, settings: RunSettings, device: torch.device
) -> tuple[RunSettings, SweepOptions, dict[str, int]]:
    """(run settings, the main sweeps' options, each control's compute batch): fit, or fail early in one line
    (``lewc.pipeline.memplan``; a smaller compute batch changes no number)."""
    batches = compute_batches_for(pair, ds, options, settings.batch_size_eval, device)
    settings = dataclasses.replace(settings, batch_size_eval=batches["main"])
    sweep_options = SweepOptions(
        n_test=options.n_test,
        bn_images=options.bn_images,
        progress=settings.progress,
        batch_size=settings.batch_size_eval,
    )
    return settings, sweep_options, {name: batches[name] for name in CONTROL_NAMES}


def add_controls(
    result: PairResult, pair: Pair, ds, options: AnalysisOptions, sweep_options: SweepOptions, batches: dict[str, int]
) -> PairResult:
    """``result`` with the controls run and evaluated (their status complete)."""
    absent: dict[str, str] = {}
    controls = run_controls(pair, ds, options, sweep_options, absent, batches)
    return dataclasses.replace(
        result,
        controls=controls,
        control_claims={name: evaluate_claims(c) for name, c in controls.items()},
        absent_controls=absent,
        controls_status=CONTROLS_COMPLETE,
    )


def analyse_pair(
    pair: Pair, ds, options: AnalysisOptions, settings: RunSettings, device: torch.device, provenance: dict
) -> PairResult:
    """Admit the pair (``lewc.pipeline.admission``), sweep it once per alignment method, run the controls,
    evaluate every claim (in memory: nothing is published)."""
    main = analyse_main(pair, ds, options, settings, device, provenance)
    if not options.controls:
        return main.result
    return add_controls(main.result, pair, ds, options, main.sweep_options, main.control_batches)


def with_comparisons(stacked: xr.Dataset, claims: list[Claim]) -> xr.Dataset:
    """The verdicts of claims that compare two alignments (``ClaimType.compares``: ``permutation_gap``) as
    variables of the stacked results: ``<id>``, ``<id>_ci``, ``<id>_verdict``."""
    out = stacked
    for c in claims:
        if compared_alignment(c.id):
            verdict = {c.id: ((), c.value), f"{c.id}_ci": (("bound",), c.ci), f"{c.id}_verdict": ((), c.verdict)}
            out = out.assign(verdict)
    return out


def write_results(ds: xr.Dataset, folder: Path, stem: str, keep_samples: bool) -> dict[str, str]:
    """``stem.nc`` with the summary; ``stem_samples.nc`` (``samples.nc`` for results) only when asked."""
    summary, samples = split_samples(ds)
    write_netcdf(summary, folder / f"{stem}.nc")
    files = {"summary": f"{stem}.nc"}
    if keep_samples and samples.data_vars:
        name = "samples.nc" if stem == "results" else f"{stem}_samples.nc"
        write_netcdf(samples, folder / name)
        files["samples"] = name
    return files


def report_dict(result: PairResult, command: str, figures: list[str], files: dict | None = None) -> dict:
    """report.json's content for ``result`` (``figures``: the stems of the figure files beside it)."""
    files = files or {
        "results": "results.nc",
        "controls": {name: f"control_{name}.nc" for name in result.controls},
        "summary_csv": "summary.csv",
        "markdown": "report.md",
        "figures": [f"{stem}.png" for stem in figures],
    }
    rep = report.build_report(
        result.results,
        result.claims,
        files,
        command,
        result.controls,
        result.control_claims,
        result.align_claims,
        result.absent_controls,
        result.controls_status,
    )
    if "admission" in result.results.attrs:  # the gate's record: measured accuracies, the chance opt-in
        rep["admission"] = json.loads(result.results.attrs["admission"])
    return rep


def write_folder(out_dir: Path, result: PairResult, command: str, keep_samples: bool = False) -> dict:
    """Build the whole folder privately, then publish it with one rename; returns report.json's content."""
    return publish_folder(out_dir, result, command, keep_samples)[0]


def publish_folder(
    out_dir: Path, result: PairResult, command: str, keep_samples: bool = False
) -> tuple[dict, list[tuple[str, str]]]:
    """``write_folder``, also returning the figures' (stem, caption) pairs."""
    t0 = time.perf_counter()
    out_dir = check_out(out_dir)  # printable; through a symbolic link, its target
    check_writable(out_dir)
    tmp = private_folder(out_dir)
    try:
        written = write_results(result.results, tmp, "results", keep_samples)
        controls = {name: write_results(c, tmp, f"control_{name}", keep_samples) for name, c in result.controls.items()}
        figures = plots.pair_figures(for_alignment(result.results), tmp, result.results)
        files = {
            "results": "results.nc",
            "controls": {name: f["summary"] for name, f in controls.items()},
            "samples": [f["samples"] for f in [written, *controls.values()] if "samples" in f],
            "summary_csv": "summary.csv",
            "markdown": "report.md",
            "figures": [f"{stem}.png" for stem, _ in figures],
        }
        rep = report_dict(result, command, [stem for stem, _ in figures], files)
        (tmp / "report.md").write_text(report.markdown(rep, figures))
        (tmp / "report.json").write_text(report.dumps(rep))
        to_frame(result.results).to_csv(tmp / "summary.csv", index=False)
        size = sum(f.stat().st_size for f in tmp.iterdir() if f.is_file())
        publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "write: %s (%d files, %.1f MB, controls %s), %.1f s",
        out_dir,
        len(figures) + 3 + len(result.controls),
        size / 1e6,
        result.controls_status.split(":")[0],
        time.perf_counter() - t0,
    )
    return rep, figures


# --- the main results first, then the controls ------------------------------------------------------------


def analyse_and_publish(
    out_dir: Path,
    pair: Pair,
    ds,
    options: AnalysisOptions,
    settings: RunSettings,
    device: torch.device,
    provenance: dict,
    command: str,
) -> tuple[dict, xr.Dataset]:
    """(report, stacked results): the main analysis published first (controls pending), then the controls
    and the folder republished with them (``complete_controls``, which raises when a control fails)."""
    main = analyse_main(pair, ds, options, settings, device, provenance)
    rep, figures = publish_folder(out_dir, main.result, command, settings.keep_samples)
    if options.controls:
        rep = complete_controls(
            out_dir, rep, pair, ds, options, main.sweep_options, main.control_batches, settings.keep_samples, figures
        )
    return rep, main.result.results


def resume_controls(
    out_dir: Path, rep: dict, pair: Pair, ds, options: AnalysisOptions, settings: RunSettings, device: torch.device
) -> dict:
    """A published folder whose controls are pending or failed, completed: only the controls run."""
    log.info(
        "completing %s: its main results are published, its controls are not (%s)", out_dir, rep.get("controls_status")
    )
    _, sweep_options, batches = sweep_settings(pair, ds, options, settings, device)
    return complete_controls(out_dir, rep, pair, ds, options, sweep_options, batches, settings.keep_samples)


def complete_controls(
    out_dir: Path,
    rep: dict,
    pair: Pair,
    ds,
    options: AnalysisOptions,
    sweep_options: SweepOptions,
    batches: dict[str, int],
    keep_samples: bool,
    figures: list[tuple[str, str]] | None = None,
) -> dict:
    """Run the controls and republish ``out_dir`` (whose report is ``rep``) with them; returns the new report.

    A control that fails republishes the folder with ``controls_status`` "failed: the <name> control: …"
    (the main results unchanged) and fails the run: out of memory, or a ``LewcError``, as one line naming
    the published folder (exit 2); any other error as itself (a bug: exit 1)."""
    absent: dict[str, str] = {}
    controls: dict[str, xr.Dataset] = {}
    for name in CONTROL_NAMES:
        opts = dataclasses.replace(sweep_options, batch_size=batches.get(name, sweep_options.batch_size))
        try:
            res = run_control(name, pair, ds, options, opts, absent)
        except Exception as err:
            first = (str(err).strip().splitlines() or [""])[0]
            status = controls_failed(name, f"{type(err).__name__}: {first}" if first else type(err).__name__)
            log.warning("controls: %s", status)
            try:
                republish_controls(out_dir, rep, status, absent=absent, keep_samples=keep_samples, figures=figures)
            except Exception as again:  # noqa: BLE001 - the control's error is the one to report
                log.warning("could not record the failed control in %s: %s", out_dir, again)
            where = f"the main results are published in {out_dir}, without controls"
            if type(err).__name__ == "OutOfMemoryError":  # torch's, on a GPU: the user's to fix
                raise LewcError(
                    f"the device ran out of memory in the {name} control ({where}); rerun with a smaller "
                    "--batch-size-eval (the default is 500), or --no-controls, or on a device with more memory"
                ) from None
            if isinstance(err, LewcError):
                raise LewcError(f"the {name} control failed ({where}): {first}") from None
            raise
        if res is not None:
            controls[name] = res
    claims = {name: evaluate_claims(c) for name, c in controls.items()}
    return republish_controls(out_dir, rep, CONTROLS_COMPLETE, controls, claims, absent, keep_samples, figures)


def republish_controls(
    out_dir: Path,
    rep: dict,
    status: str,
    controls: dict[str, xr.Dataset] | None = None,
    control_claims: dict[str, list[Claim]] | None = None,
    absent: dict[str, str] | None = None,
    keep_samples: bool = False,
    figures: list[tuple[str, str]] | None = None,
) -> dict:
    """Republish the published folder ``out_dir`` (report ``rep``) with ``controls`` and ``status``: its main
    files carried over unchanged (the figures redrawn from results.nc when their captions, ``figures``,
    are not given), its report rewritten. Returns the new report."""
    t0 = time.perf_counter()
    out_dir = check_out(out_dir)
    check_writable(out_dir)
    controls = controls or {}
    tmp = private_folder(out_dir)
    try:
        main_samples = [f for f in rep["files"].get("samples", []) if not f.startswith("control_")]
        carried = ["results.nc", rep["files"]["summary_csv"], *main_samples]
        if figures is not None:
            carried += [f"{stem}.png" for stem, _ in figures]
        for name in carried:
            _carry(out_dir / name, tmp / name)
        if figures is None:
            stacked = open_results(tmp / "results.nc").load()
            figures = plots.pair_figures(for_alignment(stacked), tmp, stacked)
        written = {name: write_results(c, tmp, f"control_{name}", keep_samples) for name, c in controls.items()}
        files = dict(rep["files"])
        files["controls"] = {name: f["summary"] for name, f in written.items()}
        files["samples"] = main_samples + [f["samples"] for f in written.values() if "samples" in f]
        files["figures"] = [f"{stem}.png" for stem, _ in figures]
        new = dict(rep, files=files, controls=controls_block(controls, control_claims, absent), controls_status=status)
        (tmp / "report.md").write_text(report.markdown(new, figures))
        (tmp / "report.json").write_text(report.dumps(new))
        publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("write controls: %s (%s), %.1f s", out_dir, status.split(":")[0], time.perf_counter() - t0)
    return new


def _carry(src: Path, dst: Path) -> None:
    """``src`` into the private folder: a hard link where the filesystem allows it, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
