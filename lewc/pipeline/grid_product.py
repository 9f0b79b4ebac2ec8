"""A grid of seed pairs combined into one product: ``study.nc`` (one dimension per grid axis, plus pair,
align and the barrier/claim names), its figures, ``study.md`` (the verdicts per cell, the paper's statistics,
every failed job) and ``outcomes.json``.

The study writes it for a TOML spec and ``verify --widths`` for a width sweep: one schema, one set of
figures, one reader (``lewc figs``, ``lewc trend``)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from lewc.core.io import write_atomic, write_json_atomic
from lewc.pipeline.pair import evaluate_verdicts
from lewc.reporting.results import (
    BARRIER_NAMES,
    PAPER_LAMS,
    PAPER_STATISTICS,
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
from lewc.reporting.study_plots import study_figures
from lewc.stats.claims import claim_ids, evaluate_claims
from lewc.stats.pairs import COVERS, over_pairs_dataset, t_intervals


@dataclass
class Outcome:
    """What became of one (cell, pair) job: its results folder, or its error (one line)."""

    cell: dict
    pair: int
    folder: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Grid:
    """What a product is over: the cells (every combination of the grid axes, in order), ``pairs`` seed pairs
    per cell, the alignments, and the settings kept as study.nc's ``spec`` attribute (the trend reads the
    dataset and recipe from it)."""

    name: str
    model: str
    pairs: int
    grid: dict[str, list]
    align: str = "none"
    settings: dict = field(default_factory=dict)
    title: str = ""

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", f"Study {self.name}")

    def cells(self) -> list[dict]:
        names = list(self.grid)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.grid.values())]


def combine(grid: Grid, outcomes: list[Outcome]) -> tuple[xr.Dataset, dict]:
    """``study.nc``: one dimension per axis, plus pair, align and the barrier/claim names.

    Every registered claim (``lewc.stats.claims.claim_ids``) and every paper statistic
    (``lewc.reporting.results.PAPER_STATISTICS``) the results hold is kept, per pair; the per-pair
    intervals are over test images (conditional on the pair), and each cell gets the mean over its
    pairs with the t-interval (n − 1 d.f.) and one new pair's prediction interval
    (``lewc.stats.pairs``).
    """

    axes = list(grid.grid)
    shape = [len(grid.grid[a]) for a in axes]
    methods = ["none"] + [m for m in grid.align.split(",") if m and m != "none"]
    barrier_names = [n for n in BARRIER_NAMES if "_mid" in n]
    barrier = np.full([*shape, grid.pairs, len(methods), len(barrier_names)], np.nan)
    barrier_ci = np.full([*shape, grid.pairs, len(methods), len(barrier_names), 2], np.nan)
    beta = np.full([*shape, grid.pairs, len(methods)], np.nan)
    claim_names = claim_ids(per_alignment=True)  # the registry: a claim registered anywhere reaches study.nc
    claim_value = np.full([*shape, grid.pairs, len(methods), len(claim_names)], np.nan)
    claim_ci = np.full([*shape, grid.pairs, len(methods), len(claim_names), 2], np.nan)
    acc_ends = np.full([*shape, grid.pairs, 2], np.nan)
    errors = np.full([*shape, grid.pairs], "", dtype=object)
    total_depth = np.full([*shape, grid.pairs], np.nan)
    max_ell = 64
    magnitude = np.full([*shape, grid.pairs, len(methods), max_ell], np.nan)  # a + b at λ = ½ per depth ℓ
    paper: dict[str, np.ndarray] = {}  # paper statistic → [*shape, pair, align, (lam,) ell]
    paper_dims: dict[str, list[str]] = {}
    per_cell: dict[tuple, list] = {}
    for o in outcomes:
        index = tuple(grid.grid[a].index(o.cell[a]) for a in axes) + (o.pair,)
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
                    paper[var] = np.full([*shape, grid.pairs, len(methods), *lam_shape, max_ell], np.nan)
                    paper_dims[var] = [*axes, "pair", "align", *lam_dims, "ell"]
                for name, ell in zip(ps.layer.values, ps.depth.values, strict=True):
                    if 1 <= int(ell) <= max_ell:
                        paper[var][index + (j, ..., int(ell) - 1)] = da.sel(layer=name).values
        total_depth[index] = float(res.attrs.get("total_depth", np.nan))
        acc_ends[index] = for_alignment(res).acc.sel(split="test", lam=[0.0, 1.0]).values
    coords = {a: grid.grid[a] for a in axes} | {"pair": list(range(grid.pairs)), "align": methods}
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
        attrs={"schema": STUDY_SCHEMA, "spec": json.dumps(grid.settings, default=str), "model": grid.model},
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


def write_outputs(grid: Grid, folder: Path, outcomes: list[Outcome], command: str) -> tuple[Path, dict]:
    """study.nc, its figures, study.md and outcomes.json into ``folder``; returns study.md's path and the
    verdicts over pairs per cell (``{cell index: claims}``, the index of each axis's value in the grid)."""
    ds, verdicts = combine(grid, outcomes)
    ds.attrs["command"] = command
    write_netcdf(ds, folder / "study.nc")
    figures = study_figures(ds, folder, "study")
    axes = list(grid.grid)
    lines = [
        f"# {grid.title}",
        "",
        f"Command: `{command}`",
        "",
        f"Model {grid.model}, {grid.pairs} pair(s) per cell.",
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
    for cell in grid.cells():
        index = tuple(grid.grid[a].index(cell[a]) for a in axes)
        claims = {c.id: c for c in verdicts.get(index, [])}
        ok = sum(1 for o in outcomes if o.cell == cell and not o.error)
        row = [str(cell[a]) for a in axes] + [f"{ok}/{grid.pairs}"]
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
    return folder / "study.md", verdicts
