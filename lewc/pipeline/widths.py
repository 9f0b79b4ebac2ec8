"""Several pairs and widths: per-pair results combined into ``sweep.nc`` with ``width`` and ``pair`` dims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from lewc.core.io import write_json_atomic
from lewc.reporting import plots, report
from lewc.reporting.results import (
    BARRIER_NAMES,
    SWEEP_SCHEMA,
    alignments,
    barrier,
    barrier_units,
    for_alignment,
    json_attr,
    write_netcdf,
)


def sweep_dataset(
    results: dict[tuple[int, int], xr.Dataset], widths: list[int], n_pairs: int, command: str
) -> xr.Dataset:
    """Combine per-pair results into one Dataset with ``width`` and ``pair`` dimensions."""
    keep = [
        "acc",
        "loss",
        "loss_cal",
        "beta",
        "barrier_acc",
        "barrier_acc_ci",
        "barrier_loss_raw",
        "barrier_loss_raw_ci",
        "barrier_loss_cal",
        "barrier_loss_cal_ci",
        "barrier_acc_curve",
        "barrier_loss_raw_curve",
        "barrier_loss_cal_curve",
        "ens_agreement",
        "ens_kl",
        "k_coord",
        "k_coord_ci",
        "k_gram",
        "k_gram_ci",
        "claim_value",
        "claim_ci",
        "claim_verdict",
        "weak_additivity",
        "weak_additivity_null",
        "ro_b_on_a",
        "ro_a_on_b",
        "cos_lewc",
        "cos_llfc",
        "rel_err_lewc",
        "rel_err_llfc",
        "r2_full",
        "lewc_position",
    ]
    rows = []
    for w in widths:
        pairs = [
            results[(w, p)][[v for v in keep if v in results[(w, p)]]].drop_vars("depth", errors="ignore")
            for p in range(n_pairs)
        ]
        rows.append(xr.concat(pairs, dim="pair", coords="minimal", compat="override", combine_attrs="drop"))
    out = xr.concat(rows, dim="width", coords="minimal", compat="override", combine_attrs="drop")
    out = out.assign_coords(width=widths, pair=list(range(n_pairs)))
    first = results[(widths[0], 0)]
    if "depth" in first.coords:
        out = out.assign_coords(depth=("layer", first.depth.values))
    out.attrs = {
        "schema": SWEEP_SCHEMA,
        "command": command,
        "dataset": first.attrs.get("dataset"),
        "pairs": json_attr(
            {
                f"w{w}_p{p}": [results[(w, p)].attrs.get("sha256_a"), results[(w, p)].attrs.get("sha256_b")]
                for w in widths
                for p in range(n_pairs)
            }
        ),
    }
    return out


def sweep_table(sweep: xr.Dataset) -> str:
    """Barrier vs width (and alignment), mean over pairs with a t-interval over pairs (n = pairs)."""
    from scipy import stats as sstats

    methods = alignments(sweep)
    lines = ["width  align        pairs  acc_mid (pp) [95% CI over pairs]      loss_mid_cal [95% CI over pairs]"]
    for w in sweep.width.values:
        for method in methods:
            cells = []
            for name in ("acc_mid", "loss_mid_cal"):
                sel = barrier(sweep, name).sel(width=w)
                v = for_alignment(sel, method).values
                v = v[np.isfinite(v)]
                mean = v.mean() if len(v) else np.nan
                half = sstats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
                cells.append(f"{mean:8.3f} [{mean - half:8.3f}, {mean + half:8.3f}]")
            lines.append(f"{int(w):5d}  {method:11s}  {sweep.sizes['pair']:5d}  {cells[0]:34s}  {cells[1]}")
    return "\n".join(lines)


def write_sweep(
    out_dir: Path,
    results: dict[tuple[int, int], xr.Dataset],
    widths: list[int],
    pairs: list[tuple[int, int]],
    report_paths: dict[str, str],
    combined: dict[int, list],
    command: str,
) -> None:
    """The combined sweep folder: sweep.nc, verdicts over pairs per width, figures."""
    sweep = sweep_dataset(results, widths, len(pairs), command)
    write_netcdf(sweep, out_dir / "sweep.nc")
    table = sweep_table(sweep)
    figures = []
    for stem, (fig, caption) in (
        ("barrier_vs_width", plots.barrier_vs_width(sweep)),
        ("beta_vs_width", plots.beta_vs_width(sweep)),
    ):
        plots.save(fig, out_dir / stem)
        figures.append((stem, caption))
    verdicts = {int(w): report.clean([c.__dict__ for c in claims]) for w, claims in combined.items()}
    summary = {
        "schema": "lewc.sweep-report/2",
        "command": command,
        "widths": widths,
        "pairs": pairs,
        "table": table,
        "pair_reports": report_paths,
        "claims_over_pairs": verdicts,
        "barriers": {
            int(w): {n: barrier(sweep, n).sel(width=w).values.tolist() for n in BARRIER_NAMES} for w in widths
        },
        "barrier_dims": list(barrier(sweep, "acc_mid").sel(width=widths[0]).dims),
        "barrier_units": {n: barrier_units(n) for n in BARRIER_NAMES},
        "alignments": alignments(sweep),
    }
    md = ["# lewc width sweep", "", f"Command: `{command}`", "", "```", table, "```", ""]
    for w, claims in combined.items():
        md += [f"## Verdicts at width {w} over {len(pairs)} pair(s)", "", "```"]
        md += [report.verdict_table([c.__dict__ for c in claims]), "```", ""]
        md += report.interval_lines(report.clean([c.__dict__ for c in claims]))
        print(f"width {w}, {len(pairs)} pair(s):\n" + report.verdict_table([c.__dict__ for c in claims]))
    md += [f"![{s}]({s}.png)\n\n*{c}*\n" for s, c in figures]
    (out_dir / "report.md").write_text("\n".join(md))
    write_json_atomic(out_dir / "report.json", report.clean(summary))
    print(table)
    print(out_dir / "report.json")
