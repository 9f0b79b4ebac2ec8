"""The verdicts: each claim, the statistic that separates it from its rival, threshold and interval.

Every claim is decided by a 95% bootstrap interval, never a point estimate: PASS when the whole
interval is on the claim's side of the threshold, FAIL when it is wholly on the other side,
INCONCLUSIVE otherwise. Each statistic is built so that the rival hypothesis it names would fail
it (docs/claims.md gives statement, statistic, rival, interval, threshold and power of each):

* ``lmc_accuracy`` / ``lmc_loss_calibrated`` — the barriers at λ = ½ (rival: a barrier);
* ``lewc_weighting`` — how the merged output splits between A and B, scale-free: per layer ℓ ≥ 2
  t_ℓ = (k_ℓ − 1)/(ℓ − 1) with k_ℓ the fitted exponent of a/b against (1-λ)/λ (weighted by the
  predicted precision of log(a/b), so coefficients of 10⁻⁴ at extreme λ carry no weight), so LEWC
  gives t = 1 and LLFC t = 0; the statistic is the worst layer's |t_ℓ − 1|;
* ``lewc_magnitude`` — how much the merged output shrinks at λ = ½: u_ℓ = −log₂(a + b)/(ℓ − 1),
  1 under LEWC ((½)^(ℓ−1)) and 0 under LLFC (no shrinkage); the worst layer's |u_ℓ − 1|;
* ``weak_additivity`` — the raw additivity cosine (worst ReLU layer, λ = ½), exact 1;
* ``reciprocal_orthogonality`` — the raw cross-term ratio ‖W_B z_A‖/‖W_A z_A‖ (worst layer ℓ ≥ 2,
  both directions), exact 0, LLFC 1. Both conditions are judged on raw quantities against fixed
  references, never divided by a shuffled null: independently trained pairs are exchangeable under
  unit permutations, so (A, B) and (A, perm(B)) have the same expected statistic whatever the
  mechanism. The shuffled nulls are reported as context (mean ± sd over 20 shuffles);
* ``ensemble_equivalence`` — at the interior λ ≠ ½, where the LEWC ensemble (1-λ)^L z_A + λ^L z_B and
  the plain one (1-λ) z_A + λ z_B really differ: top-1 agreement of the merged model with the LEWC
  ensemble minus that with the plain one;
* ``lewc_temperature`` — s = log₂(β_merged(½)/β_plain(½))/(L_eff − 1): 1 under LEWC (ratio 2^(L_eff−1)),
  0 under LLFC (ratio 1); |s − 1|.

The LEWC claims compare with the exponent LEWC predicts for the network's normalisation
(``predicted_exponent``: ℓ for normalisation-free chains, weight layers since the last re-estimated
BatchNorm plus its γ otherwise; docs/conventions.md). Where the theory predicts nothing (LayerNorm, a
residual sum of unequal exponents, BatchNorm without re-estimation, or only layers where LEWC and LLFC
coincide) a claim is NOT APPLICABLE with the reason — never a FAIL.

Intervals: on one pair, a bootstrap over its test images (conditional on that pair: it says nothing
about another pair); over n ≥ 2 pairs, the t-interval of the mean over pairs (n − 1 d.f.), with the
prediction interval of one new pair beside it (lewc.stats.pairs; each claim says which). Claims that
need the A/B split (LMC, weighting, ensemble) are INCONCLUSIVE on degenerate pairs (identical or
collinear endpoints), with a note; a FAIL is a scientific outcome, not an error.

The machinery (specs, registry, decisions, evaluation) is ``lewc.stats.claim_registry``; the built-in
claims' statistics are ``lewc.stats.claim_statistics`` (registered on import). This module imports both
— importing it registers the built-ins — keeps every public name, and stores one pair's claims for
results.nc (``claims_dataset``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from lewc.core.conventions import BOOT_SEED, LEVEL, N_BOOT, percentile_interval
from lewc.stats.claim_registry import (
    CLAIMS,
    FAIL,
    INCONCLUSIVE,
    MIN_FINITE,
    NA_PREFIX,
    NOT_APPLICABLE,
    PASS,
    Claim,
    ClaimSpec,
    ClaimType,
    Resampler,
    Statistic,
    claim_ids,
    claims_as_dicts,
    compared_alignment,
    decide,
    degeneracy,
    evaluate_claim,
    evaluate_claims,
    get_claim,
    holds_alignment,
    over_pairs_note,
    pair_statistic,
    register_claim,
    specs_as_dicts,
    unaligned,
    unregister_claim,
)
from lewc.stats.claim_registry import _claim as _claim
from lewc.stats.claim_registry import _interval as _interval
from lewc.stats.claim_statistics import (
    ADDITIVITY_MIN,
    CROSS_TERM_MAX,
    EQUIVALENCE_MARGIN,
    GAP_NOTE,
    GAP_SPEC,
    GAUSSIAN_ADDITIVITY,
    k_gram,
    logits_exponent,
    predicted_exponent,
    stat_ensemble_equivalence,
    stat_lewc_magnitude,
    stat_lewc_temperature,
    stat_lewc_weighting,
    stat_lmc_accuracy,
    stat_lmc_loss_calibrated,
    stat_permutation_gap,
    stat_reciprocal_orthogonality,
    stat_weak_additivity,
)
from lewc.stats.claim_statistics import _layer_coefficients as _layer_coefficients

__all__ = [
    "ADDITIVITY_MIN",
    "CLAIMS",
    "CROSS_TERM_MAX",
    "EQUIVALENCE_MARGIN",
    "FAIL",
    "GAP_NOTE",
    "GAP_SPEC",
    "GAUSSIAN_ADDITIVITY",
    "INCONCLUSIVE",
    "MIN_FINITE",
    "NA_PREFIX",
    "NOT_APPLICABLE",
    "PASS",
    "Claim",
    "ClaimSpec",
    "ClaimType",
    "Resampler",
    "Statistic",
    "claim_ids",
    "claims_as_dicts",
    "claims_dataset",
    "compared_alignment",
    "decide",
    "degeneracy",
    "evaluate_claim",
    "evaluate_claims",
    "get_claim",
    "holds_alignment",
    "k_gram",
    "logits_exponent",
    "over_pairs_note",
    "pair_statistic",
    "predicted_exponent",
    "register_claim",
    "specs_as_dicts",
    "stat_ensemble_equivalence",
    "stat_lewc_magnitude",
    "stat_lewc_temperature",
    "stat_lewc_weighting",
    "stat_lmc_accuracy",
    "stat_lmc_loss_calibrated",
    "stat_permutation_gap",
    "stat_reciprocal_orthogonality",
    "stat_weak_additivity",
    "unaligned",
    "unregister_claim",
]


def claims_dataset(res: xr.Dataset, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> xr.Dataset:
    """One pair's claims as variables over ``claim``: value, interval, verdict, replicates, and k_gram_ci.

    Stored in results.nc so that the verdicts are there and several pairs can be combined (the
    t-interval over pairs) without the per-image data, which then goes to samples.nc only on request.
    """
    found = {cid: pair_statistic(res, cid, n_boot, seed) for cid in claim_ids(per_alignment=True)}
    ids = [cid for cid, st in found.items() if st is not None]
    reps = np.stack([found[cid][1] for cid in ids]) if ids else np.zeros((0, n_boot))
    stats = xr.Dataset(
        {
            "claim_value": (("claim",), [found[cid][0] for cid in ids]),
            "claim_replicates": (("claim", "replicate"), reps),
            "claim_note": (("claim",), np.array([found[cid][2] for cid in ids], dtype=object).astype(str)),
        },
        coords={"claim": ids},
    )
    with_stats = xr.merge([res, stats], combine_attrs="override")
    with_stats.attrs.update({"claim_n_boot": n_boot, "claim_seed": seed})
    claims = evaluate_claims(with_stats, n_boot, seed)  # the verdicts from the replicates just drawn
    data = {
        "claim_value": stats["claim_value"].variable,
        "claim_ci": (("claim", "bound"), np.array([c.ci for c in claims]).reshape(len(ids), 2)),
        "claim_verdict": (("claim",), np.array([c.verdict for c in claims], dtype=object).astype(str)),
        "claim_threshold": (("claim",), [c.threshold for c in claims]),
        "claim_units": (("claim",), np.array([c.units for c in claims], dtype=object).astype(str)),
        "claim_note": stats["claim_note"].variable,
        "claim_replicates": stats["claim_replicates"].variable,
    }
    if "gram" in res:
        k, _ = k_gram(res, Resampler(n_boot, seed))
        finite = np.isfinite(k).mean(axis=0) > 0.95
        ci = np.where(finite[:, None], percentile_interval(k, LEVEL).T, np.nan)
        data["k_gram_ci"] = (("layer", "bound"), ci)
    out = xr.Dataset(data, coords={"claim": ids, "bound": ["lo", "hi"]})
    out.attrs.update({"claim_n_boot": n_boot, "claim_seed": seed})
    return out
