"""The paper's two sufficient conditions for LEWC, with the pairing nulls reported beside them.

The verdicts (``lewc.stats.claims``) judge the raw cosine and the raw cross-term ratios against
fixed references (exact disjoint features: 1 and 0; A with itself: cross ratio 1); the nulls below
and their spread over 20 shuffles are context: pairs trained from independent seeds are
exchangeable under unit permutations, so a null that shuffles the pair's own units has the pair's
own distribution and its ratio to the real value is 1 in expectation whatever the mechanism.

* Weak additivity: σ(c_a z̃_A + c_b z̃_B) ≈ c_a σ(z̃_A) + c_b σ(z̃_B) with c_a = (1-λ)^ℓ, c_b = λ^ℓ and z̃
  the endpoints' pre-activations; measured as the cosine between the two sides. Mostly-positive
  pre-activations make that cosine high for *any* two networks, so the reference is a null that
  keeps each model's activation distribution and breaks only the A–B pairing of units (B's units
  shuffled). The statistic is the normalised excess (cos − cos_null) / (1 − cos_null): 1 when weak
  additivity is exact, 0 when the real pairing is no more additive than a shuffled one.
* Reciprocal orthogonality: W_B z_A ≈ 0 and W_A z_B ≈ 0, measured as ‖W_B z_A‖ / ‖W_A z_A‖ (and
  its mirror), divided by the same ratio with z_A's features shuffled (the null: W_B reads an input
  unrelated to it). 0 is exact orthogonality, 1 is chance.

Inputs are per-image sums (``lewc.sweep.capture``), so any bootstrap resample of images is a weighted sum.
"""

from __future__ import annotations

import numpy as np

from lewc.sweep.capture import RO_TERMS, WA_TERMS

_WA = {name: i for i, name in enumerate(WA_TERMS)}
_RO = {name: i for i, name in enumerate(RO_TERMS)}


def _weighted(per_image: np.ndarray, weights: np.ndarray | None, axis: int) -> np.ndarray:
    """Sum over the image ``axis``; with ``weights`` (R, n) a leading replicate axis is added."""
    if weights is None:
        return per_image.sum(axis=axis)
    return np.tensordot(weights, np.moveaxis(per_image, axis, 0), axes=(1, 0))


def weak_additivity(wa: np.ndarray, weights: np.ndarray | None = None, image_axis: int = -2) -> dict[str, np.ndarray]:
    """Cosine, null cosine and normalised excess from per-image sums (…, image, 6)."""
    s = _weighted(wa, weights, image_axis % wa.ndim)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = s[..., _WA["uv"]] / np.sqrt(s[..., _WA["uu"]] * s[..., _WA["vv"]])
        null = s[..., _WA["uv_null"]] / np.sqrt(s[..., _WA["uu_null"]] * s[..., _WA["vv_null"]])
        excess = (cos - null) / (1 - null)
    excess = np.where(np.isclose(null, 1.0, atol=1e-9), np.nan, excess)  # null already exact: no evidence
    return {"cos": cos, "null": null, "excess": excess}


def reciprocal_orthogonality(ro: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Ratios ‖W_B z_A‖/‖W_A z_A‖, ‖W_A z_B‖/‖W_B z_B‖, their nulls and real/null, from (…, image, 6)."""
    s = _weighted(ro, weights, ro.ndim - 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        b_on_a = np.sqrt(s[..., _RO["b_on_a"]] / s[..., _RO["a_on_a"]])
        a_on_b = np.sqrt(s[..., _RO["a_on_b"]] / s[..., _RO["b_on_b"]])
        null_b_on_a = np.sqrt(s[..., _RO["b_on_a_null"]] / s[..., _RO["a_on_a"]])
        null_a_on_b = np.sqrt(s[..., _RO["a_on_b_null"]] / s[..., _RO["b_on_b"]])
        rel = np.stack([b_on_a / null_b_on_a, a_on_b / null_a_on_b], axis=-1)
    return {"b_on_a": b_on_a, "a_on_b": a_on_b, "null_b_on_a": null_b_on_a, "null_a_on_b": null_a_on_b, "relative": rel}


def null_spread(wa_null: np.ndarray, ro_null: np.ndarray, ro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nulls over many shuffles: additivity cosine (layer, shuffle) from summed (⟨u,v⟩, ⟨u,u⟩, ⟨v,v⟩)
    (layer, shuffle, 3), and cross-term ratios (layer, shuffle, 2) ‖W_B P z_A‖/‖W_A z_A‖, ‖W_A P z_B‖/‖W_B z_B‖
    from summed (layer, shuffle, 2) and the per-image self terms ``ro`` (layer, image, 6) of the same images."""
    s = ro.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = wa_null[..., 0] / np.sqrt(wa_null[..., 1] * wa_null[..., 2])
        self_terms = np.stack([s[:, _RO["a_on_a"]], s[:, _RO["b_on_b"]]], axis=-1)[:, None]
        ratio = np.sqrt(ro_null / self_terms)
    return cos, ratio
