"""A study's outputs: ``study.nc`` (from ``study_assemble``), its figures, ``study.md`` (the verdicts per cell,
the paper's statistics, every failed job) and ``outcomes.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lewc.commands.study_assemble import combine
from lewc.commands.study_spec import Outcome, StudySpec
from lewc.core.io import write_atomic, write_json_atomic
from lewc.reporting.results import PAPER_STATISTICS, WEAK_ADDITIVITY_REFERENCES, write_netcdf
from lewc.reporting.study_plots import study_figures
from lewc.stats.pairs import COVERS, t_intervals


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


def write_outputs(spec: StudySpec, folder: Path, outcomes: list[Outcome], command: str) -> Path:

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
