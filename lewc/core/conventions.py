"""The conventions every lewc module shares, defined once (docs/conventions.md explains them).

* λ: θ(λ) = (1-λ)·θ_A + λ·θ_B, so λ = 0 is model A and λ = 1 is model B (the paper writes it the
  other way round). Every grid contains 0, ½ and 1: endpoint quantities are the λ = 0 and λ = 1
  slices of the same arrays, and the verdicts are taken at λ = ½ (or at the interior λ ≠ ½).
* ℓ: a captured layer's depth, counted in weight layers from the input along the longest path.
* The two rival predictions of a merged layer output f_ℓ(θ(λ)) ≈ c_A·f_ℓ(A) + c_B·f_ℓ(B):
  LEWC c = ((1-λ)^ℓ, λ^ℓ) and LLFC c = (1-λ, λ).
* Uncertainty: 95% percentile intervals from ``N_BOOT`` bootstrap replicates (images; pairs then
  images when several seed pairs exist), seeded.
* Budgets: the calibration split (``N_CALIB`` held-out training images, shared by every seed) and
  the BatchNorm re-estimation budget (``BN_IMAGES`` training images).
"""

from __future__ import annotations

import numpy as np

DEFAULT_LAMS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
LEVEL = 0.95
N_BOOT = 1000
BOOT_SEED = 0
N_CALIB = 5000
N_CALIB_SYNTHETIC = 500
BN_IMAGES = 10_000
# Per-image Gram terms of a layer's merged (m) and endpoint (a, b) outputs, in this order everywhere
# (lewc.sweep.capture stores them, lewc.stats.fit reads them): one index for both.
GRAM_TERMS: tuple[str, ...] = ("mm", "aa", "bb", "ma", "mb", "ab")
MM, AA, BB, MA, MB, AB = range(len(GRAM_TERMS))
LAM_CONVENTION = (
    "theta(lam) = (1-lam)*theta_A + lam*theta_B; lam = 0 is model A (the paper writes it the other way round)"
)


def lewc_weights(lam, depth):
    """LEWC's (c_A, c_B) = ((1-λ)^ℓ, λ^ℓ); broadcasts over arrays of λ and ℓ."""
    return (1 - lam) ** depth, lam**depth


def llfc_weights(lam):
    """LLFC's (c_A, c_B) = (1-λ, λ)."""
    return 1 - lam, lam


def lewc_ensemble_exponent(total_depth: int) -> int:
    """The LEWC ensemble of logits is (1-λ)^L z_A + λ^L z_B with L the head's depth."""
    return int(total_depth)


def interval_percentiles(level: float = LEVEL) -> tuple[float, float]:
    """Percentiles (in %) of a central interval, e.g. (2.5, 97.5) at 95%."""
    return (1 - level) / 2 * 100, (1 + level) / 2 * 100


def percentile_interval(replicates: np.ndarray, level: float = LEVEL, axis: int = 0) -> np.ndarray:
    """Central percentile interval of bootstrap replicates along ``axis`` (NaN replicates ignored)."""
    return np.nanpercentile(replicates, interval_percentiles(level), axis=axis)
