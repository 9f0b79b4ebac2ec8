"""One pair through the whole analysis: B aligned by each method, the controls, the claims, the folder.

``analyse_pair`` takes loaded models and a dataset and returns a ``PairResult`` (nothing on disk);
``write_folder`` publishes a result as the folder the command line and ``PairReport.save`` write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import xarray as xr

from lewc.align import ACTIVATION_IMAGES, aligned_path, load_or_align
from lewc.align.controls import disjoint_block_pair, self_pair
from lewc.core.errors import LewcError
from lewc.pipeline.admission import admission_attr, admit_pair
from lewc.pipeline.analysis import analyze
from lewc.pipeline.endpoints import chance_threshold
from lewc.pipeline.folders import AnalysisOptions, check_out, check_writable, private_folder, publish
from lewc.pipeline.memplan import compute_batch_for
from lewc.reporting import report
from lewc.reporting.report import endpoint_accuracies
from lewc.reporting.results import (
    for_alignment,
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


def evaluate_verdicts(results: Sequence[xr.Dataset]) -> list[Claim]:
    """The claims of one pair or several (results with an ``align`` dimension or without): every claim
    on the unaligned pairs, plus each registered claim comparing two alignments every pair holds
    (``permutation_gap`` when every pair was also weight-matched)."""
    return evaluate_claims(results)


def run_controls(
    pair: Pair, ds, options: AnalysisOptions, sweep_options: SweepOptions, absent: dict[str, str] | None = None
) -> dict[str, xr.Dataset]:
    """The positive and negative controls through the same pipeline (see lewc.align.controls); a control
    that cannot be built is left out with its reason in ``absent``."""
    out = {}
    absent = {} if absent is None else absent
    probe = ds.normalize(ds.test.x[:64])
    builders = {
        "positive": lambda: disjoint_block_pair(pair.model_a, pair.model_b, pair.meta_a, pair.meta_b, probe),
        "negative": lambda: self_pair(pair.model_a, pair.meta_a),
    }
    for name, build in builders.items():
        t0 = time.perf_counter()
        try:
            a, b, meta_a, meta_b, note = build()
        except LewcError as err:
            log.warning("no %s control: %s", name, err)
            absent[name] = str(err)
            continue
        res = analyze(Pair(a, b, meta_a, meta_b), ds, list(options.lams), sweep_options, {"control": name})
        res.attrs["control"] = name
        res.attrs["control_note"] = note
        out[name] = res
        log.info("controls: %s control done, %.1f s", name, time.perf_counter() - t0)
    return out


def aligned_endpoint(method: str, pair: Pair, ds, settings: RunSettings, device: torch.device):
    """B permuted towards A by ``method`` (cached as a checkpoint under ``settings.align_cache``)."""

    def batches():
        n = min(ACTIVATION_IMAGES, len(ds.train))
        return [x for x, _ in ds.batches("train", settings.batch_size_eval, n)]

    folder = settings.align_cache
    cached = folder is not None and aligned_path(folder, pair.meta_a, pair.meta_b, method).is_file()
    model, meta = load_or_align(folder, method, pair.model_a, pair.model_b, pair.meta_a, pair.meta_b, batches, device)
    info = meta["alignment"]
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


def analyse_pair(
    pair: Pair, ds, options: AnalysisOptions, settings: RunSettings, device: torch.device, provenance: dict
) -> PairResult:
    """Admit the pair (``lewc.pipeline.admission``), sweep it once per alignment method, run the controls,
    evaluate every claim."""
    sources = {end: str(provenance.get(f"checkpoint_{end}") or f"model_{end}") for end in ("a", "b")}
    # fit, or fail early in one line: a smaller compute batch changes no number (lewc.pipeline.memplan)
    batch = compute_batch_for(pair, ds, options, settings.batch_size_eval, device)
    settings = dataclasses.replace(settings, batch_size_eval=batch)
    admitted = admit_pair(pair, ds, options.n_test, settings.batch_size_eval, sources, settings.allow_chance)
    provenance = provenance | {"admission": admission_attr(admitted)}
    sweep_options = SweepOptions(
        n_test=options.n_test,
        bn_images=options.bn_images,
        progress=settings.progress,
        batch_size=settings.batch_size_eval,
    )
    by_align = {"none": analyze(pair, ds, list(options.lams), sweep_options, provenance)}
    warn_at_chance(by_align["none"], ds, options.n_test)
    for method in options.align:
        if method == "none":
            continue
        model_b_aligned, meta_b_aligned = aligned_endpoint(method, pair, ds, settings, device)
        aligned = Pair(pair.model_a, model_b_aligned, pair.meta_a, meta_b_aligned)
        by_align[method] = analyze(aligned, ds, list(options.lams), sweep_options, provenance | {"alignment": method})
    absent: dict[str, str] = {}
    controls = run_controls(pair, ds, options, sweep_options, absent) if options.controls else {}
    stacked = stack_alignments(by_align)
    claims = evaluate_verdicts([stacked])
    stacked = with_comparisons(stacked, claims)
    warn_degenerate(claims)
    return PairResult(
        results=stacked,
        claims=claims,
        controls=controls,
        control_claims={name: evaluate_claims(c) for name, c in controls.items()},
        align_claims={m: evaluate_claims(r) for m, r in by_align.items() if m != "none"},
        absent_controls=absent,
    )


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
    )
    for name, why in result.absent_controls.items():
        rep["controls"][name] = {"note": f"absent: {why}", "claims": []}
    if "admission" in result.results.attrs:  # the gate's record: measured accuracies, the chance opt-in
        rep["admission"] = json.loads(result.results.attrs["admission"])
    return rep


def write_folder(out_dir: Path, result: PairResult, command: str, keep_samples: bool = False) -> dict:
    """Build the whole folder privately, then publish it with one rename; returns report.json's content."""
    from lewc.reporting import plots

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
        "write: %s (%d files, %.1f MB), %.1f s",
        out_dir,
        len(figures) + 3 + len(result.controls),
        size / 1e6,
        time.perf_counter() - t0,
    )
    return rep
