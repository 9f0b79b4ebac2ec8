"""``python -m lewc.commands.trend STUDY_DIR [STUDY_DIR …]``: does more width remove the barrier, and where?

Reads ``study.nc`` only (never runs a model). For every (dataset, epochs, weight decay, alignment)
it fits, over the hidden width w in units,

    barrier(w) = c + a · (w / 512)^(−α)        (a ≥ 0, α > 0)

to the accuracy barrier at λ = ½ (pp) and the calibrated loss barrier at λ = ½ (nats), with
``scipy.optimize.curve_fit``. The **floor c** answers "can more width remove the barrier at all?"
(c ≤ the tolerance: yes, in the limit), and the **width w\\*** at which the fit reaches the tolerance
(3 pp, 0.1 nats) is the prediction a wider run then tests (∞ when c is above the tolerance).

Intervals of the fit: a bootstrap over the pairs drawn — each replicate draws, at every width, the
width's pairs with replacement and refits (1,000 replicates, seeded); 95% percentile intervals. With
two or three pairs per width this interval is roughly the range of the pairs drawn: it describes
those pairs, not pairs (labelled so in trend.md); the map's and the tail's intervals are the ones
over pairs (t, with their degrees of freedom). Widths are the
MLP's hidden units per layer (``base_width × width``), so ×1 of the field's MLP is w = 512.

Over the three widest widths, ``tail_trend`` asks the narrower question "does doubling the width
still lower the barrier?" (OLS on log2 w, statsmodels): a change per doubling whose interval holds
0 makes the mean over those widths the floor the data show, however the power law extrapolates.

The map gives, per cell, the mean over pairs with its 95% t-interval and, for the two fitted
barriers, the 95% **prediction interval** of one new independent pair, mean ± t·s·√(1 + 1/n): the
range an independent run of that cell (same recipe, new seeds) should fall in. The mean's interval
is too narrow for that (it covers a new pair 91% of the time at two pairs, 84% at three).

Every claim study.nc holds (its ``claim`` coordinate: the registry's claims) is mapped, and so are
the paper's per-layer statistics (``lewc.reporting.results.PAPER_STATISTICS``: cosines to the LEWC
and LLFC predictions at λ = 0.3, ½, 0.7, the raw additivity cosine, the cross-term ratios, R², the
position t_ℓ between LLFC and LEWC), per layer depth ℓ, in a table of their own.

Writes ``trend.md``, ``trend.csv``, ``trend.json`` and ``trend_<metric>.png`` into ``--out``
(default: the first study folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from lewc.core import logs
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.io import reading, write_atomic, write_json_atomic
from lewc.models import get_family
from lewc.pipeline.folders import check_writable
from lewc.reporting.results import PAPER_STATISTICS, WEAK_ADDITIVITY_REFERENCES
from lewc.stats.pairs import COVERS
from lewc.stats.pairs import t_intervals as over_pairs
from lewc.training.recipe import default_config
from lewc.training.train import integrated_decay as train_decay

METRICS = {  # barrier name in study.nc → (label, unit, LMC tolerance)
    "acc_mid": ("accuracy barrier at λ = ½", "pp", 3.0),
    "loss_mid_cal": ("calibrated loss barrier at λ = ½", "nats", 0.1),
}
# further per-pair values mapped (not fitted): β at λ = ½, every claim of study.nc's ``claim``
# coordinate, and the paper's per-layer statistics (PAPER_STATISTICS, with ``ell`` and ``lam``)
PAPER_MID = 0.5  # the λ at which the λ-dependent paper statistics other than the cosines are tabled
REFERENCE_WIDTH = 512  # the field's MLP ×1: widths are fitted in units of it
N_BOOT = 1000
BOOT_SEED = 0
GROUP_AXES = ("dataset", "epochs", "wd", "bias", "schedule", "inputs", "decay")
TRAIN_IMAGES = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}


def power_law(w: np.ndarray, c: float, a: float, alpha: float) -> np.ndarray:
    return c + a * (w / REFERENCE_WIDTH) ** (-alpha)


def power_law_jacobian(w: np.ndarray, c: float, a: float, alpha: float) -> np.ndarray:
    """∂/∂(c, a, α) of ``power_law``: exact derivatives spare curve_fit its finite differences."""
    scaled = (w / REFERENCE_WIDTH) ** (-alpha)
    return np.stack([np.ones_like(w), scaled, -a * scaled * np.log(w / REFERENCE_WIDTH)], axis=-1)


ALPHA_BOUNDS = (0.1, 5.0)  # slower than w^-0.1 is no decay over any width range one can train; faster than w^-5 a step


def fit_power_law(
    widths: np.ndarray,
    values: np.ndarray,
    tolerance: float | None = None,
    start: tuple[float, float, float] | None = None,
) -> tuple[float, float, float] | None:
    """(c, a, α) by least squares on every (width, pair) point; ``None`` when it cannot be fitted.

    The floor is bounded below by −tolerance (a merged model far *better* than its endpoints' mean is
    not a floor a barrier can approach) and α by ``ALPHA_BOUNDS``: without the bounds a sharp drop
    over few widths is fitted by α → 0, c → −∞, which says nothing about a floor. ``start`` (the full
    data's fit, for bootstrap refits) replaces the data-driven starting point.
    """
    from scipy.optimize import curve_fit

    ok = np.isfinite(values)
    w, v = widths[ok], values[ok]
    if len(np.unique(w)) < 3:
        return None
    low = -abs(tolerance) if tolerance is not None else -np.inf
    p0 = start or (max(float(v.min()), low + 1e-9), float(max(v.max() - v.min(), 1e-6)), 0.5)
    p0 = (max(p0[0], low + 1e-9), max(p0[1], 1e-12), float(np.clip(p0[2], *ALPHA_BOUNDS)))
    try:
        params, _ = curve_fit(
            power_law,
            w,
            v,
            p0=p0,
            jac=power_law_jacobian,
            bounds=([low, 0.0, ALPHA_BOUNDS[0]], [np.inf, np.inf, ALPHA_BOUNDS[1]]),
            maxfev=20000,
        )
    except (RuntimeError, ValueError):
        return None
    return tuple(float(x) for x in params)


def width_reaching(c: float, a: float, alpha: float, tolerance: float) -> float:
    """The hidden width at which c + a (w/512)^(−α) falls to ``tolerance`` (∞ if the floor is above it)."""
    if c >= tolerance:
        return float("inf")
    if a <= 0:
        return 0.0
    log_width = np.log(REFERENCE_WIDTH) + np.log(a / (tolerance - c)) / alpha
    return float(np.exp(log_width)) if log_width < 69 else float("inf")  # beyond 1e30 units: never


def bootstrap(
    widths: np.ndarray,
    values: np.ndarray,
    tolerance: float,
    n_boot: int = N_BOOT,
    start: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Replicates of (c, a, α, w*): at every width its pairs drawn with replacement, then refitted
    (from ``start``, the full data's fit: a replicate's optimum lies near it, so it converges in few steps)."""
    rng = np.random.default_rng(BOOT_SEED)
    groups = [np.nonzero(widths == w)[0] for w in np.unique(widths)]
    out = np.full((n_boot, 4), np.nan)
    for i in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        params = fit_power_law(widths[idx], values[idx], tolerance, start)
        if params is not None:
            out[i] = (*params, width_reaching(*params, tolerance))
    return out


TAIL_WIDTHS = 3  # the widest widths whose trend is tested separately from the power law


PREDICT_WIDTH = 8192  # the paper's MLP ×16: 3×8192 hidden units


def tail_trend(widths: np.ndarray, values: np.ndarray, k: int = TAIL_WIDTHS) -> dict | None:
    """Is the barrier still falling over the ``k`` widest widths? OLS of the per-pair values on log2(w).

    Returns the change per doubling of the width with its 95% t-interval (statsmodels OLS, every
    (width, pair) point one observation), and the mean over those widths with its t-interval: when the
    slope's interval holds 0, that mean is the floor the data show, whatever the power law says.
    A three-parameter fit over a curve shaped like a step puts c anywhere; this asks the narrower
    question "does doubling the width still help, where it was measured widest?".
    """
    import statsmodels.api as sm

    ok = np.isfinite(values)
    w, v = widths[ok], values[ok]
    tail = np.sort(np.unique(w))[-k:]
    keep = np.isin(w, tail)
    w, v = w[keep], v[keep]
    if len(tail) < 2 or len(v) < 3:
        return None
    fit = sm.OLS(v, sm.add_constant(np.log2(w))).fit()
    slope_ci = fit.conf_int(0.05)[1]
    mean = sm.OLS(v, np.ones_like(v)).fit()
    # one new pair at PREDICT_WIDTH, extrapolated along the same line: the observation interval (the
    # line's uncertainty plus one pair's scatter, points − 2 d.f.) — what an independent run there tests
    at = fit.get_prediction(np.array([[1.0, np.log2(PREDICT_WIDTH)]])).summary_frame(alpha=0.05).iloc[0]
    return dict(
        predict_width=PREDICT_WIDTH,
        predicted=float(at["mean"]),
        predicted_pi=[float(at["obs_ci_lower"]), float(at["obs_ci_upper"])],
        widths=[int(x) for x in tail],
        slope_per_doubling=float(fit.params[1]),
        slope_ci=[float(slope_ci[0]), float(slope_ci[1])],
        mean=float(mean.params[0]),
        mean_ci=[float(x) for x in mean.conf_int(0.05)[0]],
        points=int(len(v)),
    )


def interval(replicates: np.ndarray) -> list[float]:
    finite = replicates[~np.isnan(replicates)]
    if not len(finite):
        return [float("nan"), float("nan")]
    return [float(x) for x in np.percentile(finite, [2.5, 97.5])]


def load_points(folders: list[Path]) -> list[dict]:
    """Every (study cell, pair, alignment, metric) value as a flat record with the hidden width in units.

    An empty, random, truncated, incomplete or foreign file is one ``LewcError`` line naming it."""
    records = []
    for folder in folders:
        path = folder / "study.nc" if folder.is_dir() else folder
        if not path.is_file():
            raise LewcError(f"{path} does not exist (run the study first: lewc study SPEC)")
        with reading(path, "study file"):
            records += study_points(path)
    return records


def integrated_decay(spec: dict, model: str, dataset: str, coords: dict) -> float:
    """Σ lr·wd of a cell's training (``lewc.training.train.integrated_decay``); NaN for an unknown dataset."""
    if dataset not in TRAIN_IMAGES:
        return float("nan")
    overrides = {k: v for k, v in coords.items() if k != "width"}
    cfg = default_config(model, int(coords.get("width", 1)), dataset, 0, recipe=spec.get("recipe"), **overrides)
    return round(train_decay(cfg, TRAIN_IMAGES[dataset] - cfg.n_calib), 4)


def check_study(ds: xr.Dataset, path: Path) -> None:
    """The structure the trend reads: ``barrier`` over pair, align and barrier_name with every metric."""
    dims = set(ds["barrier"].dims) if "barrier" in ds else set()
    if not {"pair", "align", "barrier_name"} <= dims:
        raise LewcError(f"study file {path} is not a lewc study.nc (no barrier over pair, align and barrier_name)")
    missing = sorted(set(METRICS) - {str(v) for v in ds.barrier_name.values})
    if missing or not isinstance(ds.attrs.get("model", json.loads(ds.attrs.get("spec", "{}")).get("model")), str):
        raise LewcError(f"study file {path} is incomplete (metrics {missing or 'present'}, model attribute)")


def study_points(path: Path) -> list[dict]:
    """The records of one study.nc (see ``load_points``)."""
    records = []
    with xr.open_dataset(path) as raw:
        ds = raw.load()
    check_study(ds, path)
    spec = json.loads(ds.attrs.get("spec", "{}"))
    model = ds.attrs.get("model", spec.get("model"))
    family = get_family(model)
    if family.name != "mlp":
        raise LewcError(f"lewc trend fits MLP width trends; {path} is a {model} study")
    dataset = spec.get("dataset") or family.default_dataset
    cell_axes = [d for d in ds.barrier.dims if d not in ("pair", "align", "barrier_name")]
    fixed = dict(spec.get("overrides", {}))  # a verify sweep's recipe flags (a study's vary on its axes)
    stacked = ds.barrier.stack(cell=cell_axes) if cell_axes else ds.barrier.expand_dims(cell=[0])
    for k in range(stacked.sizes["cell"]):
        cell = stacked.isel(cell=k)
        coords = fixed | {a: cell.coords[a].item() for a in cell_axes}
        base = int(coords.get("base_width", family.base_width))
        hidden = base * int(coords.get("width", 1))
        group = {"dataset": dataset, "epochs": coords.get("epochs"), "wd": coords.get("wd")}
        group["bias"] = coords.get("bias", True)
        group["schedule"] = coords.get("schedule", "linear")
        group["inputs"] = coords.get("inputs", "standardized")
        group["decay"] = integrated_decay(spec, family.name, dataset, coords)
        where = {a: coords[a] for a in cell_axes}
        for align in cell.align.values:
            for pair in cell.pair.values:
                values = {m: float(cell.sel(align=align, barrier_name=m, pair=pair)) for m in METRICS}
                here = ds.sel(where).sel(align=align, pair=pair)
                if "beta_mid" in ds:
                    values["beta_mid"] = float(here["beta_mid"])
                if "claim_value" in ds:  # every claim study.nc holds: the registry's, not a list here
                    values |= {str(c): float(here["claim_value"].sel(claim=c)) for c in ds.claim.values}
                base = group | {"align": str(align), "width": hidden, "pair": int(pair), "study": str(path)}
                for metric, value in values.items():
                    records.append(base | {"metric": metric, "ell": None, "lam": None, "value": value})
                records += paper_records(here, base)
    return records


def paper_records(here: xr.Dataset, base: dict) -> list[dict]:
    """One record per (paper statistic, layer depth ℓ[, λ]) of one pair; layers the cell lacks are skipped."""
    out = []
    for var in PAPER_STATISTICS:
        if var not in here:
            continue
        da = here[var]
        lams = [float(v) for v in da["lam"].values] if "lam" in da.dims else [None]
        for ell in da["ell"].values:
            for lam in lams:
                value = float(da.sel(ell=ell, lam=lam) if lam is not None else da.sel(ell=ell))
                if np.isfinite(value):
                    out.append(base | {"metric": var, "ell": int(ell), "lam": lam, "value": value})
    return out


def t_intervals(values: np.ndarray, level: float = 0.95) -> tuple[list[float], list[float]]:
    """(the mean's t-interval, the prediction interval of one new pair), both with n − 1 dof.

    The first says where the mean over pairs lies; the second where an *independent* pair — trained
    by anyone with the same recipe and new seeds — should fall: mean ± t·s·√(1 + 1/n). Fewer than two
    values: NaN (no spread to scale by). The one implementation is ``lewc.stats.pairs.t_intervals``.
    """
    over = over_pairs(values, level)
    return list(over.ci), list(over.prediction)


CELL_FIELDS = (*GROUP_AXES, "align", "width", "metric", "ell", "lam")


def cell_table(records: list[dict]) -> list[dict]:
    """Per (group, alignment, width, metric[, ℓ, λ]): pairs, mean, its 95% t-interval and a new pair's
    prediction interval (``covers`` says which is which)."""
    fields = CELL_FIELDS
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in fields), []).append(r["value"])
    rows = []
    for key in sorted(groups, key=str):
        v = np.array(groups[key], dtype=np.float64)
        v = v[np.isfinite(v)]
        row = dict(zip(fields, key, strict=True)) | {"pairs": len(v)}
        row["mean"] = float(v.mean()) if len(v) else float("nan")
        row["ci"], row["prediction"] = t_intervals(v)
        row["covers"] = {"ci": COVERS["pairs"], "prediction": COVERS["new_pair"]}
        row["values"] = [float(x) for x in v]
        rows.append(row)
    return rows


def fit_table(records: list[dict]) -> list[dict]:
    """One row per (group, alignment, metric): the floor c, a, α and w* with bootstrap intervals."""
    records = [r for r in records if r["metric"] in METRICS]
    keys = sorted({tuple(r[k] for k in (*GROUP_AXES, "align", "metric")) for r in records}, key=str)
    rows = []
    for key in keys:
        sel = [r for r in records if tuple(r[k] for k in (*GROUP_AXES, "align", "metric")) == key]
        widths = np.array([r["width"] for r in sel], dtype=float)
        values = np.array([r["value"] for r in sel], dtype=float)
        metric = key[-1]
        tolerance = METRICS[metric][2]
        row = dict(zip((*GROUP_AXES, "align", "metric"), key, strict=True))
        row["tolerance"] = tolerance
        row["widths"] = sorted({int(w) for w, v in zip(widths, values, strict=True) if np.isfinite(v)})
        row["pairs_per_width"] = int(round(np.isfinite(values).sum() / max(1, len(row["widths"]))))
        row["mean_by_width"] = {
            int(w): float(np.nanmean(values[widths == w]))
            for w in np.unique(widths)
            if np.isfinite(values[widths == w]).any()
        }
        row["tail"] = tail_trend(widths, values)
        params = fit_power_law(widths, values, tolerance)
        if params is None:
            row.update(fitted=False, note="fewer than 3 widths with values, or the fit did not converge")
            rows.append(row)
            continue
        reps = bootstrap(widths, values, tolerance, start=params)
        c, a, alpha = params
        row.update(
            fitted=True,
            c=c,
            c_ci=interval(reps[:, 0]),
            a=a,
            alpha=alpha,
            alpha_ci=interval(reps[:, 2]),
            width_at_tolerance=width_reaching(c, a, alpha, tolerance),
            width_at_tolerance_ci=interval(np.where(np.isinf(reps[:, 3]), 1e30, reps[:, 3])),
            replicates_fitted=int(np.isfinite(reps[:, 0]).sum()),
            rms_residual=float(np.sqrt(np.nanmean((values - power_law(widths, c, a, alpha)) ** 2))),
            at_bound=bool(
                np.isclose(c, -tolerance) or np.isclose(alpha, ALPHA_BOUNDS[0]) or np.isclose(alpha, ALPHA_BOUNDS[1])
            ),
        )
        rows.append(row)
    return rows


def _g(x) -> str:
    """A grid value for a table: ``3e-3`` → ``0.003``; the recipe's default (not an axis of the study) → "default"."""
    return "default" if x is None else f"{x:g}"


def _fmt_width(w: float) -> str:
    if not np.isfinite(w) or w >= 1e29:
        return "∞"
    return f"3×{w:,.0f}"


RECIPE_HEAD = "dataset | epochs | wd | Σ lr·wd | arm"


def arm_label(d: dict) -> str:
    """The recipe arm of a group: what differs from the recipe's defaults besides epochs and wd."""
    parts = [] if d.get("bias", True) else ["no bias"]
    parts += [] if d.get("schedule", "linear") == "linear" else [f"{d['schedule']} lr"]
    parts += [] if d.get("inputs", "standardized") == "standardized" else [f"{d['inputs']} inputs"]
    return ", ".join(parts) or "baseline"


def recipe_cells(d: dict) -> str:
    """The recipe columns of a table line (``RECIPE_HEAD``)."""
    decay = d.get("decay")
    decay_text = f"{decay:.3g}" if isinstance(decay, float) and np.isfinite(decay) else "—"
    return f"{d['dataset']} | {d['epochs']} | {_g(d['wd'])} | {decay_text} | {arm_label(d)}"


def cell_rows(cells: list[dict], metrics: list[str], fmt) -> list[str]:
    """A table header and one line per (group, width), ``fmt(cell)`` for each metric × alignment ("—": none)."""
    aligns = sorted({c["align"] for c in cells}, key=lambda a: (a != "none", a))
    head = " | ".join(f"{m} ({a})" for m in metrics for a in aligns)
    lines = [f"| {RECIPE_HEAD} | width | pairs | {head} |", "|" + "---|" * (7 + len(metrics) * len(aligns))]
    index = {tuple(c[k] for k in (*GROUP_AXES, "width", "align", "metric")): c for c in cells if c.get("ell") is None}
    groups = sorted(
        {tuple(c[k] for k in (*GROUP_AXES, "width")) for c in cells if c.get("ell") is None},
        key=lambda g: (str(g[:-1]), g[-1]),
    )
    for g in groups:
        group, width = dict(zip(GROUP_AXES, g[:-1], strict=True)), g[-1]
        found = [index.get((*g, a, m)) for m in metrics for a in aligns]
        parts = [fmt(c) if c is not None and c["pairs"] else "—" for c in found]
        pairs = max((c["pairs"] for c in found if c is not None), default=0)
        lines.append(f"| {recipe_cells(group)} | 3×{width} | {pairs} | " + " | ".join(parts) + " |")
    return lines


def map_markdown(cells: list[dict]) -> list[str]:
    """The map: one line per (group, width), every metric for each alignment, mean [95% t-CI over pairs]."""

    def fmt(c: dict) -> str:
        lo, hi = c["ci"]
        return f"{c['mean']:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) else "")

    header = [
        "",
        "## The map: mean over pairs [95% t-interval over pairs, n − 1 dof]",
        "",
        "(one pair: its value alone, conditional on that pair — no interval over pairs)",
        "",
    ]
    mapped = [m for m in dict.fromkeys(c["metric"] for c in cells if c.get("ell") is None) if m not in METRICS]
    return header + cell_rows(cells, [*METRICS, *mapped], fmt) + paper_markdown(cells)


def paper_markdown(cells: list[dict]) -> list[str]:
    """The paper's per-layer statistics beside lewc's verdicts: per (group, width, alignment, ℓ), each
    statistic's mean over pairs [95% t-interval over pairs]; the cosines at every λ, the rest at ½."""
    paper = [c for c in cells if c.get("ell") is not None]
    if not paper:
        return []
    lams = sorted({c["lam"] for c in paper if c["lam"] is not None})
    columns = []  # (metric, λ or None)
    for var in PAPER_STATISTICS:
        have = {c["lam"] for c in paper if c["metric"] == var}
        if not have:
            continue
        if None in have:
            columns.append((var, None))
        elif var.startswith("cos_"):
            columns += [(var, lam) for lam in lams if lam in have]
        elif PAPER_MID in have:
            columns.append((var, PAPER_MID))
    index = {(*(c[k] for k in (*GROUP_AXES, "width", "align", "ell")), c["metric"], c["lam"]): c for c in paper}

    def fmt(c: dict | None) -> str:
        if c is None or not c["pairs"]:
            return "—"
        lo, hi = c["ci"]
        return f"{c['mean']:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) else "")

    ref = WEAK_ADDITIVITY_REFERENCES
    head = " | ".join(f"{m}" + (f" λ={lam:g}" if lam is not None else "") for m, lam in columns)
    lines = [
        "",
        "## The paper's statistics per layer: mean over pairs [95% t-interval over pairs, n − 1 dof]",
        "",
        "cos_lewc / cos_llfc: cosine of the merged layer output with the LEWC / LLFC prediction; weak_additivity: "
        f"the raw cosine (exact {ref['exact']:g}, independent Gaussians {ref['independent_gaussians_mid']:g} at ½); "
        "ro_b_on_a / ro_a_on_b: raw cross-term ratios (exact LEWC 0); r2_full: the fit's R²; lewc_position: "
        "t_ℓ = (k_gram − 1)/(ℓ − 1), 0 at LLFC, 1 at LEWC.",
        "",
        f"| {RECIPE_HEAD} | width | align | ℓ | pairs | {head} |",
        "|" + "---|" * (9 + len(columns)),
    ]
    keys = sorted({tuple(c[k] for k in (*GROUP_AXES, "width", "align", "ell")) for c in paper}, key=str)
    n = len(GROUP_AXES)
    keys.sort(key=lambda g: (str(g[:n]), g[n], g[n + 1] != "none", g[n + 1], g[n + 2]))
    for g in keys:
        group, (width, align, ell) = dict(zip(GROUP_AXES, g[:n], strict=True)), g[n:]
        found = [index.get((*g, m, lam)) for m, lam in columns]
        pairs = max((c["pairs"] for c in found if c is not None), default=0)
        parts = " | ".join(fmt(c) for c in found)
        lines.append(f"| {recipe_cells(group)} | 3×{width} | {align} | {ell} | {pairs} | {parts} |")
    return lines


def prediction_markdown(cells: list[dict]) -> list[str]:
    """Where an independent pair should fall: the fitted barriers' 95% prediction intervals, and the pairs."""

    def fmt(c: dict) -> str:
        lo, hi = c["prediction"]
        measured = ", ".join(f"{x:.3g}" for x in c["values"])
        return (f"[{lo:.3g}, {hi:.3g}] " if np.isfinite(lo) else "") + f"({measured})"

    header = [
        "",
        "## Where one new, independent pair should fall: 95% prediction interval mean ± t·s·√(1 + 1/n)",
        "",
        "(each cell: the prediction interval, then the measured pairs)",
        "",
    ]
    return header + cell_rows(cells, list(METRICS), fmt)


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Width trend: barrier(w) = c + a·(w/512)^(−α)",
        "",
        f"Command: `{command}`",
        "",
        "w = hidden units per layer of the 3-hidden-layer MLP (×1 = 3×512). Intervals of the fit: 95% bootstrap",
        "over the n pairs drawn (pairs redrawn within each width, refitted) — roughly the range of those pairs,",
        "not an interval over pairs. ∞: the floor c lies above the tolerance.",
        "",
        f"| {RECIPE_HEAD} | align | barrier | widths | mean by width | floor c [95% CI] | α [95% CI] | "
        "width reaching tolerance [95% CI] | rms residual |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label, unit, tol = METRICS[r["metric"]]
        means = ", ".join(f"{m:.3g}" for m in r["mean_by_width"].values())
        widths = "/".join(str(w) for w in r["widths"])
        head = f"| {recipe_cells(r)} | {r['align']} | {r['metric']} ({unit}, tol {tol:g}) "
        head += f"| 3×{{{widths}}} | {means} "
        if not r["fitted"]:
            lines.append(head + f"| — | — | — ({r['note']}) | — |")
            continue
        c_lo, c_hi = r["c_ci"]
        a_lo, a_hi = r["alpha_ci"]
        w_lo, w_hi = r["width_at_tolerance_ci"]
        lines.append(
            head + f"| {r['c']:.3g} [{c_lo:.3g}, {c_hi:.3g}] | {r['alpha']:.2f} [{a_lo:.2f}, {a_hi:.2f}] "
            f"| {_fmt_width(r['width_at_tolerance'])} [{_fmt_width(w_lo)}, {_fmt_width(w_hi)}] "
            f"| {r['rms_residual']:.3g}{' (a parameter at its bound)' if r['at_bound'] else ''} |"
        )
    lines += [
        "",
        f"## Over the {TAIL_WIDTHS} widest widths: is doubling the width still lowering the barrier?",
        "",
        "OLS of every pair's barrier on log2(width) (statsmodels); intervals over pairs (t, points − 2 d.f. for",
        "the change, points − 1 for the mean). When the change per doubling's interval holds 0, the mean over these",
        "widths is the floor the data show.",
        "",
        f"The last column extrapolates the same line to 3×{PREDICT_WIDTH} (the paper's MLP ×16): the 95% prediction",
        "interval of one new pair there (the line's uncertainty and one pair's scatter, points − 2 d.f.). It assumes",
        "the change per doubling stays what the widest widths measured: a forecast to test, not a measurement.",
        "",
        f"| {RECIPE_HEAD} | align | barrier | widths | change per doubling [95% CI] | mean over them [95% CI] "
        f"| at 3×{PREDICT_WIDTH}: one new pair [95% PI] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r.get("tail")
        if not t:
            continue
        unit = METRICS[r["metric"]][1]
        lo, hi = t["slope_ci"]
        m_lo, m_hi = t["mean_ci"]
        lines.append(
            f"| {recipe_cells(r)} | {r['align']} | {r['metric']} ({unit}) "
            f"| 3×{{{'/'.join(str(w) for w in t['widths'])}}} | {t['slope_per_doubling']:.3g} [{lo:.3g}, {hi:.3g}] "
            f"| {t['mean']:.3g} [{m_lo:.3g}, {m_hi:.3g}] "
            f"| {t['predicted']:.3g} [{t['predicted_pi'][0]:.3g}, {t['predicted_pi'][1]:.3g}] |"
        )
    return "\n".join(lines) + "\n"


def figure(records: list[dict], rows: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, unit, tolerance = METRICS[metric]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = [r for r in rows if r["metric"] == metric]
    for k, row in enumerate(groups):
        key = {g: row[g] for g in (*GROUP_AXES, "align")}
        pts = [r for r in records if r["metric"] == metric and all(r[g] == key[g] for g in key)]
        w = np.array([p["width"] for p in pts], float)
        v = np.array([p["value"] for p in pts], float)
        style = "-" if row["align"] == "none" else "--"
        name = f"{row['dataset']}, {row['epochs']} ep, wd {_g(row['wd'])}, {row['align']}"
        color = f"C{k % 10}"
        ax.plot(w, v, "o", color=color, alpha=0.6, ms=4)
        if row["fitted"]:
            grid = np.geomspace(w.min(), max(w.max(), 8192), 100)
            ax.plot(
                grid,
                power_law(grid, row["c"], row["a"], row["alpha"]),
                style,
                color=color,
                label=f"{name}: floor {row['c']:.3g} [{row['c_ci'][0]:.3g}, {row['c_ci'][1]:.3g}]",
            )
        else:
            ax.plot(np.unique(w), [np.nanmean(v[w == u]) for u in np.unique(w)], style, color=color, label=name)
    ax.axhline(tolerance, color="k", lw=0.8, ls=":", label=f"LMC tolerance {tolerance:g} {unit}")
    ax.set_xscale("log", base=2)
    ticks = sorted({r["width"] for r in records if r["metric"] == metric} | {8192})
    ax.set_xticks(ticks, [f"3×{w}" for w in ticks], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("hidden units per layer (3-hidden-layer MLP; ×1 = 512)")
    ax.set_ylabel(f"{label} ({unit})")
    ax.set_title("barrier vs width: points = seed pairs, lines = c + a·(w/512)^(−α)", fontsize=9)
    ax.legend(fontsize=6.5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m lewc.commands.trend", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("studies", nargs="+", type=Path, help="study folders (or study.nc files) to combine")
    p.add_argument("--out", type=Path, help="output folder (default: the first study folder)")
    logs.add_common_arguments(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.start(args)
    records = load_points(args.studies)
    if not records:
        raise LewcError(f"{', '.join(map(str, args.studies))}: no (width, pair) points to fit")
    with reading(", ".join(map(str, args.studies)), "study file(s)"):  # values no study should hold
        rows = fit_table(records)
        cells = cell_table(records)
    out = args.out or (args.studies[0] if args.studies[0].is_dir() else args.studies[0].parent)
    check_writable(out)  # a printable path, a folder, writable
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m lewc.commands.trend " + " ".join(sys.argv[1:] if argv is None else argv)
    md = markdown(rows, command) + "\n".join(map_markdown(cells) + prediction_markdown(cells)) + "\n"
    write_atomic(out / "trend.md", lambda p: p.write_text(md))
    write_json_atomic(out / "trend.json", {"command": command, "fits": rows, "cells": cells})
    import csv
    import io

    buf = io.StringIO()
    fields = [*GROUP_AXES, "align", "metric", "ell", "lam", "width", "pair", "value", "study"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)
    write_atomic(out / "trend_points.csv", lambda p: p.write_text(buf.getvalue()))
    for metric in METRICS:
        figure(records, rows, metric, out / f"trend_{metric}.png")
    print(md)
    print(out / "trend.md")


if __name__ == "__main__":
    main()
