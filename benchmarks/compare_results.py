"""Are two verify folders the same numbers? Every variable of every .nc and every claim, to a tolerance.

Used to check that a speed-up changed nothing: run ``python -m lewc.verify --out BEFORE --force`` on
the old code and ``--out AFTER`` on the new, then

    python benchmarks/compare_results.py BEFORE AFTER [--tol 1e-6]

Exit 0 when every floating variable agrees within ``tol`` (NaNs in the same places), every other
variable is equal and every claim has the same verdict, value and interval within ``tol``. "Within
``tol``" is |x − y| ≤ tol · max(1, |x|): absolute for the statistics (barriers, β, fits, CIs, all
of order 1), relative for raw per-image sums such as Gram or additivity terms of order 10³–10⁵,
whose float32 accumulation order a speed-up may change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr


def compare(before: Path, after: Path, tol: float) -> list[str]:
    problems = []
    for folder in (before, after):
        if not (folder / "report.json").is_file():
            raise SystemExit(f"error: {folder} is not a verify output folder (no report.json)")
    for nc in sorted(before.glob("*.nc")):
        if not (after / nc.name).is_file():
            problems.append(f"{nc.name} missing in {after}")
            continue
        a, b = xr.open_dataset(nc), xr.open_dataset(after / nc.name)
        for name in a.data_vars:
            x, y = a[name].values, b[name].values
            if x.shape != y.shape:
                problems.append(f"{nc.name}:{name} shape {x.shape} vs {y.shape}")
            elif x.dtype.kind in "fc":
                if not np.array_equal(np.isnan(x), np.isnan(y)):
                    problems.append(f"{nc.name}:{name} NaNs differ")
                elif x.size and np.nanmax(np.abs(x - y) / np.maximum(1.0, np.abs(x))) > tol:
                    problems.append(f"{nc.name}:{name} differs by {np.nanmax(np.abs(x - y)):.3g}")
            elif not np.array_equal(x, y):
                problems.append(f"{nc.name}:{name} differs")
    ra, rb = (json.loads((p / "report.json").read_text()) for p in (before, after))
    for c1, c2 in zip(ra["claims"], rb["claims"], strict=True):
        values = [c1["value"], *c1["ci"]], [c2["value"], *c2["ci"]]
        if c1["verdict"] != c2["verdict"] or not np.allclose(*values, atol=tol, rtol=0, equal_nan=True):
            problems.append(f"claim {c1['id']}: {c1['verdict']} {values[0]} vs {c2['verdict']} {values[1]}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    problems = compare(args.before, args.after, args.tol)
    print("\n".join(problems) or f"identical within {args.tol:g}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
