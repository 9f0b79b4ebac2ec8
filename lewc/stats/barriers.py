"""Signed loss and accuracy barriers along λ, with paired bootstrap confidence intervals.

docs/conventions.md: B_L(λ) = L(θ(λ)) − [(1-λ)L(θ_A) + λL(θ_B)] and
B_A(λ) = [(1-λ)Acc_A + λAcc_B] − Acc(θ(λ)) in percentage points; negative values are allowed.
The bootstrap resamples test images (the same resample for every λ, so the endpoints and the
merged model are paired) and reports percentile intervals.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from lewc.core.conventions import BOOT_SEED, LEVEL, N_BOOT


def barrier_curve(lams: Sequence[float], values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Barrier at every λ of ``values[..., lam]`` (last axis λ; endpoints at the first and last index)."""
    lam = np.asarray(lams, dtype=np.float64)
    baseline = (1 - lam) * values[..., :1] + lam * values[..., -1:]
    return baseline - values if higher_is_better else values - baseline


def mid_index(lams: Sequence[float]) -> int:
    """Index of λ = ½ (the grid must contain it for ``*_mid`` barriers)."""
    lam = np.asarray(lams)
    hits = np.flatnonzero(np.isclose(lam, 0.5))
    if hits.size == 0:
        raise ValueError("the λ grid has no 0.5; mid barriers need it")
    return int(hits[0])


@functools.lru_cache(maxsize=8)
def bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) resampling counts: how often each image is drawn in each bootstrap replicate.

    Cached (read-only): every claim of a run, its alignments and its controls resample the same
    test images with the same seed, and drawing 1,000 × 10,000 counts costs about a second.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


def image_counts(n: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """The resamples of ``n`` test images that the barriers *and* the claims use (seed offset by n).

    One definition, so ``lmc_accuracy``'s interval and the ``acc_mid`` barrier's interval are the
    same interval, not two bootstraps of one statistic that differ in the third digit.
    """
    return bootstrap_counts(n, n_boot, seed + n)


def bootstrap_means(
    per_sample: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    chunk: int = 250,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap replicates of the mean over the last axis (samples): shape (n_boot, *leading).

    Pass ``counts`` (from ``bootstrap_counts``) to reuse one set of resamples for several metrics.
    """
    n = per_sample.shape[-1]
    flat = per_sample.reshape(-1, n).astype(np.float64)
    counts = bootstrap_counts(n, n_boot, seed) if counts is None else counts
    out = [counts[i : i + chunk] @ flat.T / n for i in range(0, n_boot, chunk)]
    return np.concatenate(out).reshape(n_boot, *per_sample.shape[:-1])


def summarize(
    lams: Sequence[float],
    correct: np.ndarray,
    loss_raw: np.ndarray,
    loss_cal: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    level: float = LEVEL,
) -> dict[str, dict]:
    """Barriers at λ = ½ and max over the grid, raw and calibrated, each ``{value, ci}``.

    Inputs are per-sample arrays of shape (λ, image): correctness (bool), raw and calibrated
    cross-entropy on the test split.
    """
    mid = mid_index(lams)
    metrics = {
        "acc": (100.0 * correct.astype(np.float64), True),
        "loss_raw": (loss_raw, False),
        "loss_cal": (loss_cal, False),
    }
    out: dict[str, dict] = {}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    counts = image_counts(correct.shape[-1], n_boot, seed)  # one paired resample for every metric
    for key, (per_sample, higher) in metrics.items():
        point = barrier_curve(lams, per_sample.mean(axis=-1), higher)
        boot = barrier_curve(lams, bootstrap_means(per_sample, n_boot, counts=counts), higher)
        prefix = "acc" if key == "acc" else "loss"
        suffix = "" if key == "acc" else key[len("loss") :]
        for label, value, reps in (("mid", point[mid], boot[:, mid]), ("max", point.max(), boot.max(axis=1))):
            out[f"{prefix}_{label}{suffix}"] = {"value": float(value), "ci": [float(v) for v in np.percentile(reps, q)]}
    out["curve_acc"] = {"value": barrier_curve(lams, metrics["acc"][0].mean(-1), True).tolist()}
    out["curve_loss_raw"] = {"value": barrier_curve(lams, loss_raw.mean(-1), False).tolist()}
    out["curve_loss_cal"] = {"value": barrier_curve(lams, loss_cal.mean(-1), False).tolist()}
    return out
