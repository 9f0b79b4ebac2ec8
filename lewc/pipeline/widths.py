"""Several pairs and widths (``verify --widths/--seeds``): the pairs' folders combined into the grid product
that a study writes (``study.nc`` over ``width`` × ``pair``, its figures, ``study.md``), plus ``report.json``
with the verdicts over pairs at each width. One schema and one set of figures for every width sweep."""

from __future__ import annotations

from pathlib import Path

from lewc.core.io import write_json_atomic
from lewc.pipeline.grid_product import Grid, Outcome, write_outputs
from lewc.pipeline.runs import Verified
from lewc.reporting import report
from lewc.reporting.results import alignments

SWEEP_REPORT_SCHEMA = "lewc.sweep-report/3"


def write_sweep(
    out_dir: Path,
    done: dict[tuple[int, int], Verified],
    widths: list[int],
    pairs: list[tuple[int, int]],
    settings: dict,
    command: str,
) -> Path:
    """The sweep folder from each (width, pair index)'s finished run, with the verdicts over pairs per width
    that the product computes; returns report.json's path.

    ``settings`` (model, dataset, recipe, the recipe flags given, seeds) become study.nc's ``spec``, as a
    study's spec does, so ``lewc trend`` and ``lewc figs`` read a verify sweep like a study.
    """
    first = done[(widths[0], 0)].results
    grid = Grid(
        name=out_dir.name,
        model=settings["model"],
        pairs=len(pairs),
        grid={"width": list(widths)},
        align=",".join(alignments(first)),
        settings={"name": out_dir.name, "pairs": len(pairs), "grid": {"width": list(widths)}} | settings,
        title="Width sweep: "
        + ", ".join(  # each width in units, as the pairs' reports name it
            f"width {w} = {done[(w, 0)].report.get('width_label') or f'×{w}'}" for w in widths
        ),
    )
    outcomes = [
        Outcome({"width": w}, p, folder=str(done[(w, p)].report_path.parent)) for w in widths for p in range(len(pairs))
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    md, per_cell = write_outputs(grid, out_dir, outcomes, command)
    combined = {w: per_cell[(i,)] for i, w in enumerate(widths)}
    verdicts = {int(w): report.clean([c.__dict__ for c in claims]) for w, claims in combined.items()}
    for w, claims in combined.items():
        print(f"width {w}, {len(pairs)} pair(s):\n" + report.verdict_table([c.__dict__ for c in claims]))
    summary = {
        "schema": SWEEP_REPORT_SCHEMA,
        "command": command,
        "widths": list(widths),
        "pairs": pairs,
        "pair_reports": {f"w{w}_p{p}": str(done[(w, p)].report_path) for w in widths for p in range(len(pairs))},
        "claims_over_pairs": verdicts,
        "files": {"study": "study.nc", "report": md.name},
    }
    path = out_dir / "report.json"
    write_json_atomic(path, report.clean(summary))
    print(md)
    print(path)
    return path
