"""Intervals over independently trained pairs: what a number measured on n pairs says about pairs.

One pair's interval resamples its test images: it is conditional on that pair (its seeds, its
training run) and says nothing about another pair. With n ≥ 2 pairs, each pair's value is one draw
from the population of pairs a recipe produces (its image noise included), so

* the **mean's t-interval**, mean ± t(n − 1)·s/√n, covers the population mean at the nominal rate
  (the interval a verdict over pairs uses), and
* the **prediction interval of one new pair**, mean ± t(n − 1)·s·√(1 + 1/n), covers an independent
  pair trained with the same recipe and new seeds at the nominal rate.

Resampling the n pairs drawn (then images) gives roughly the range of those pairs, which at n = 2
or 3 is far narrower than either: it describes the pairs drawn, not pairs. Each interval carries a
label that says what it covers (``COVERS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lewc.core.conventions import LEVEL

# what an interval covers: one label per kind, used in report.json/md, study.nc/md and the trend
COVERS = {
    "images": "over test images (conditional on this pair)",
    "pairs_drawn": "over the n pairs drawn (their range, not a population interval)",
    "pairs": "over pairs (mean's t-interval, n − 1 d.f.)",
    "new_pair": "one new pair (prediction interval, t with n − 1 d.f.)",
}


@dataclass(frozen=True)
class OverPairs:
    """Mean over n pairs, its t-interval and the prediction interval of one new pair (NaN when n < 2)."""

    n: int
    mean: float
    sd: float
    ci: tuple[float, float]
    prediction: tuple[float, float]


def t_intervals(values, level: float = LEVEL) -> OverPairs:
    """The mean's t-interval and one new pair's prediction interval from per-pair values (n − 1 d.f.).

    Non-finite values are not dropped: a pair whose statistic is undefined makes both intervals NaN
    (a verdict never rests on the pairs that happened to be defined). Fewer than two values: NaN
    intervals (no spread to scale by), the mean still given.
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    nan2 = (float("nan"), float("nan"))
    if n < 2 or not np.isfinite(v).all():
        return OverPairs(n, mean, float("nan"), nan2, nan2)
    sd = float(v.std(ddof=1))
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    half_mean, half_new = t * sd / np.sqrt(n), t * sd * np.sqrt(1 + 1 / n)
    return OverPairs(n, mean, sd, (mean - half_mean, mean + half_mean), (mean - half_new, mean + half_new))


def over_pairs_dataset(ds, dim: str = "pair", level: float = LEVEL):
    """Per variable of ``ds`` (an xarray Dataset with a ``dim`` dimension), reduced over the pairs:

    ``<base>_mean``, ``<base>_ci_pairs`` (the mean's t-interval, over ``bound``), ``<base>_prediction``
    (one new pair) and ``<base>_n_pairs`` (the finite pairs used), ``<base>`` being the variable's name
    without a ``_value`` suffix. Pairs without a value (a failed job) are left out and ``n_pairs`` says
    how many remain; each variable's ``covers`` attribute says what its interval covers.
    """
    import xarray as xr

    def reduce(values: np.ndarray) -> np.ndarray:
        v = values[np.isfinite(values)]
        over = t_intervals(v, level)
        return np.array([over.mean, *over.ci, *over.prediction, float(over.n)])

    out = {}
    for name, da in ds.data_vars.items():
        if dim not in da.dims:
            continue
        base = name.removesuffix("_value")
        red = xr.apply_ufunc(
            reduce,
            da.astype(np.float64),
            input_core_dims=[[dim]],
            output_core_dims=[["_stat"]],
            vectorize=True,
            dask_gufunc_kwargs={"output_sizes": {"_stat": 6}},
        )
        out[f"{base}_mean"] = red.isel(_stat=0, drop=True).assign_attrs(covers="mean over the finite pairs")
        ci = red.isel(_stat=[1, 2]).rename(_stat="bound").assign_coords(bound=["lo", "hi"])
        out[f"{base}_ci_pairs"] = ci.assign_attrs(covers=COVERS["pairs"])
        pred = red.isel(_stat=[3, 4]).rename(_stat="bound").assign_coords(bound=["lo", "hi"])
        out[f"{base}_prediction"] = pred.assign_attrs(covers=COVERS["new_pair"])
        out[f"{base}_n_pairs"] = red.isel(_stat=5, drop=True).astype(np.int64)
    return xr.Dataset(out)
