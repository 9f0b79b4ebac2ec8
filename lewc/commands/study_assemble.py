"""``study.nc``: every finished job's results.nc combined over the grid, per pair and per cell over pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from lewc.commands.study_spec import Outcome, StudySpec
from lewc.pipeline.pair import evaluate_verdicts
from lewc.reporting.results import (
    BARRIER_NAMES,
    PAPER_LAMS,
    STUDY_SCHEMA,
    alignments,
    for_alignment,
    open_results,
    paper_statistics,
)
from lewc.reporting.results import barrier as results_barrier
from lewc.reporting.results import barrier_ci as results_barrier_ci
from lewc.stats.claims import claim_ids, evaluate_claims
from lewc.stats.pairs import COVERS, over_pairs_dataset


def combine(spec: StudySpec, outcomes: list[Outcome]):
    """``study.nc``: one dimension per axis, plus pair, align and the barrier/claim names.

    Every registered claim (``lewc.stats.claims.claim_ids``) and every paper statistic
    (``lewc.reporting.results.PAPER_STATISTICS``) the results hold is kept, per pair; the per-pair
    intervals are over test images (conditional on the pair), and each cell gets the mean over its
    pairs with the t-interval (n − 1 d.f.) and one new pair's prediction interval
    (``lewc.stats.pairs``).
    """

    axes = list(spec.grid)
    shape = [len(spec.grid[a]) for a in axes]
    methods = ["none"] + [m for m in spec.align.split(",") if m and m != "none"]
    barrier_names = [n for n in BARRIER_NAMES if "_mid" in n]
    barrier = np.full([*shape, spec.pairs, len(methods), len(barrier_names)], np.nan)
    barrier_ci = np.full([*shape, spec.pairs, len(methods), len(barrier_names), 2], np.nan)
    beta = np.full([*shape, spec.pairs, len(methods)], np.nan)
    claim_names = claim_ids(per_alignment=True)  # the registry: a claim registered anywhere reaches study.nc
    claim_value = np.full([*shape, spec.pairs, len(methods), len(claim_names)], np.nan)
    claim_ci = np.full([*shape, spec.pairs, len(methods), len(claim_names), 2], np.nan)
    acc_ends = np.full([*shape, spec.pairs, 2], np.nan)
    errors = np.full([*shape, spec.pairs], "", dtype=object)
    total_depth = np.full([*shape, spec.pairs], np.nan)
    max_ell = 64
    magnitude = np.full([*shape, spec.pairs, len(methods), max_ell], np.nan)  # a + b at λ = ½ per depth ℓ
    paper: dict[str, np.ndarray] = {}  # paper statistic → [*shape, pair, align, (lam,) ell]
    paper_dims: dict[str, list[str]] = {}
    per_cell: dict[tuple, list] = {}
    for o in outcomes:
        index = tuple(spec.grid[a].index(o.cell[a]) for a in axes) + (o.pair,)
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
                    paper[var] = np.full([*shape, spec.pairs, len(methods), *lam_shape, max_ell], np.nan)
                    paper_dims[var] = [*axes, "pair", "align", *lam_dims, "ell"]
                for name, ell in zip(ps.layer.values, ps.depth.values, strict=True):
                    if 1 <= int(ell) <= max_ell:
                        paper[var][index + (j, ..., int(ell) - 1)] = da.sel(layer=name).values
        total_depth[index] = float(res.attrs.get("total_depth", np.nan))
        acc_ends[index] = for_alignment(res).acc.sel(split="test", lam=[0.0, 1.0]).values
    coords = {a: spec.grid[a] for a in axes} | {"pair": list(range(spec.pairs)), "align": methods}
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
        attrs={"schema": STUDY_SCHEMA, "spec": json.dumps(spec.__dict__, default=str), "model": spec.model},
    )
    for name in ("barrier_ci", "claim_ci"):
        ds[name].attrs["covers"] = COVERS["images"]
    for name in paper:
        ds[name].attrs["conditional_on"] = "each pair (per-pair values; the trend gives intervals over pairs)"
    ds = ds.merge(over_pairs_dataset(ds[["barrier", "claim_value", "beta_mid"]]))
    verdicts = {index: evaluate_verdicts(results) for index, results in per_cell.items()}
    return ds, verdicts
