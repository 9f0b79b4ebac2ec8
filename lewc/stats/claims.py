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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

from lewc.core.conventions import BOOT_SEED, LEVEL, N_BOOT, percentile_interval
from lewc.core.errors import LewcError
from lewc.core.registry import Registry
from lewc.stats import conditions, fit
from lewc.stats.barriers import image_counts, mid_index
from lewc.stats.calibrate import fit_betas, fit_betas_resampled
from lewc.stats.pairs import COVERS, t_intervals

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
# The theory makes no prediction for this network (e.g. LayerNorm, a residual sum of unequal exponents, or a
# depth where LEWC and LLFC coincide): neither a pass nor a failure. A statistic says so with a NaN value and a
# note starting with NA_PREFIX (stored with the replicates, so results.nc keeps the state).
NOT_APPLICABLE = "NOT APPLICABLE"
NA_PREFIX = "not applicable: "
# an interval needs more than this fraction of finite bootstrap replicates (else INCONCLUSIVE)
MIN_FINITE = 0.95
EQUIVALENCE_MARGIN = 0.25  # a quarter of the distance between the LLFC (0) and LEWC (1) predictions
# The conditions' thresholds, each stated as the fraction ε of shared units it admits when two narrow
# bias-free nets are placed in a wide one (exact LEWC: ε = 0; docs/claims.md, benchmarks/condition_family.py).
ADDITIVITY_MIN = 0.98  # raw additivity cosine, worst ReLU layer (exact 1; dense Gaussians 0.93): ε ≈ 3/16–½
CROSS_TERM_MAX = 0.5  # raw ‖W_B z_A‖/‖W_A z_A‖, worst layer ℓ ≥ 2 and direction (exact 0; LLFC 1): ε ≈ 3/16–½
GAUSSIAN_ADDITIVITY = 0.93  # the paper's reference: independent zero-mean Gaussians at λ = ½


@dataclass(frozen=True)
class ClaimSpec:
    """What a claim states, how it is measured, what it is tested against and why."""

    id: str
    statement: str
    statistic: str
    rival: str
    threshold: float
    direction: str  # "below": PASS when the interval is ≤ threshold; "above": PASS when it is > threshold
    units: str
    reason: str
    needs_split: bool  # meaningless when A and B cannot be told apart (degenerate pairs)


# The built-in claims' specs; each is registered with its statistic at the end of this module.
_BUILTIN_SPECS: dict[str, ClaimSpec] = {
    s.id: s
    for s in (
        ClaimSpec(
            "lmc_accuracy",
            "Without permutation, the accuracy barrier at λ = ½ is small",
            "[(Acc_A + Acc_B)/2 − Acc(θ(½))] in percentage points",
            "a barrier: the merged model is worse than the endpoints",
            3.0,
            "below",
            "pp",
            "largest accuracy barrier the paper reports as permutation-free LMC (ResNet-20 ×32 / CIFAR-10: "
            "2.69 pp, Table 1), rounded up",
            True,
        ),
        ClaimSpec(
            "lmc_loss_calibrated",
            "After temperature calibration, the loss barrier at λ = ½ is small",
            "calibrated test loss at λ = ½ minus the mean of the calibrated endpoint losses",
            "a barrier that calibration cannot remove",
            0.1,
            "below",
            "nats",
            "largest calibrated loss barrier the paper reports as LMC (ResNet-20 ×32: 0.087), rounded up",
            True,
        ),
        ClaimSpec(
            "lewc_weighting",
            "The merged layer output splits between A and B as (1-λ)^ℓ : λ^ℓ (LEWC), not (1-λ) : λ (LLFC)",
            "max over layers ℓ ≥ 2 of |t_ℓ − 1|, t_ℓ = (k_ℓ − 1)/(ℓ − 1), k_ℓ the slope of log(a/b) on "
            "log((1-λ)/λ) over interior λ (a, b from all test images), each λ weighted by the predicted "
            "precision of log(a/b), 1/[(c_a + c_b)²(1/c_a² + 1/c_b²)] with c = (1-λ)^ℓ, λ^ℓ",
            "LLFC (t_ℓ = 0, distance 1) or any exponent growing slower than ℓ",
            EQUIVALENCE_MARGIN,
            "below",
            "max |t_ℓ − 1|",
            "PASS needs every layer within a quarter of the LLFC–LEWC distance of LEWC; k_ℓ = 1 + 0.6(ℓ−1) "
            "(distance 0.4) does not pass",
            True,
        ),
        ClaimSpec(
            "lewc_magnitude",
            "The merged layer output at λ = ½ shrinks like (½)^(ℓ−1) (a + b = 2·(½)^ℓ)",
            "max over layers ℓ ≥ 2 of |u_ℓ − 1|, u_ℓ = −log₂(a + b)/(ℓ − 1) at λ = ½",
            "LLFC (a + b = 1, u_ℓ = 0, distance 1)",
            EQUIVALENCE_MARGIN,
            "below",
            "max |u_ℓ − 1|",
            "same equivalence margin as the weighting; judged separately so each can fail alone",
            False,
        ),
        ClaimSpec(
            "weak_additivity",
            "Weak additivity σ(c_a z_A + c_b z_B) ≈ c_a σ(z_A) + c_b σ(z_B) holds in every ReLU layer",
            "min over ReLU layers of the raw cosine between σ(c_a z_A + c_b z_B) and c_a σ(z_A) + c_b σ(z_B) "
            "at λ = ½ (c = LEWC weights), over the condition images; no null in the denominator",
            "dense features: A's and B's pre-activations meet in every unit (independent zero-mean Gaussians: "
            "0.93; two narrow nets on the same units: 0.92–0.97)",
            ADDITIVITY_MIN,
            "above",
            "cosine",
            "exact disjoint features give 1, dense Gaussian features 0.93; 0.98 is a quarter of that gap and admits "
            "two placed narrow nets sharing ε ≈ 3/16 (random) to ½ (trained) of their units (docs/claims.md)",
            False,
        ),
        ClaimSpec(
            "reciprocal_orthogonality",
            "Reciprocal orthogonality: W_B z_A ≈ 0 and W_A z_B ≈ 0 (layers ℓ ≥ 2)",
            "max over layers ℓ ≥ 2 and both directions of the raw cross-term ratio ‖W_B z_A‖/‖W_A z_A‖ "
            "(‖W_A z_B‖/‖W_B z_B‖); no null in the denominator",
            "aligned features (LLFC: A with itself or a weight-matched pair): cross terms as large as the "
            "self terms (ratio 1)",
            CROSS_TERM_MAX,
            "below",
            "cross-term ratio",
            "exact disjoint features give 0, A with itself 1; 0.5 admits two placed narrow nets sharing "
            "ε ≈ 3/16 (random) to ½ (trained) of their units (docs/claims.md); ℓ = 1 is excluded because both "
            "models read the same input",
            False,
        ),
        ClaimSpec(
            "ensemble_equivalence",
            "At λ ≠ ½ the merged model acts as the LEWC ensemble (1-λ)^L z_A + λ^L z_B, not the plain one",
            "mean over interior λ ≠ ½ of [top-1 agreement with the LEWC ensemble − with the plain ensemble]",
            "the plain ensemble (1-λ) z_A + λ z_B (LLFC at the logits): difference ≤ 0",
            0.0,
            "above",
            "agreement difference",
            "at λ = ½ the two ensembles differ by a constant factor and cannot be told apart; elsewhere the "
            "merged model must side with LEWC",
            True,
        ),
        ClaimSpec(
            "lewc_temperature",
            "At λ = ½ the calibrated inverse temperature of the merged model is 2^(L_eff−1) times the plain "
            "ensemble's (LEWC), not equal to it (LLFC)",
            "|s − 1|, s = log₂(β_merged(½)/β_plain(½)) / (L_eff − 1), β fitted on the calibration split, "
            "β_plain of ½(z_A + z_B); L_eff the exponent LEWC predicts at the logits",
            "LLFC: the merged model is the plain ensemble, ratio 1 (s = 0, distance 1)",
            EQUIVALENCE_MARGIN,
            "below",
            "|s − 1|",
            "the ratio within a quarter of the LLFC–LEWC distance in log₂ of LEWC's 2^(L_eff−1)",
            False,
        ),
    )
}

GAP_SPEC = ClaimSpec(
    "permutation_gap",
    "Wide networks need no permutations: weight matching lowers the calibrated loss barrier at λ = ½ by little",
    "calibrated loss barrier without alignment minus the same barrier after weight matching (same test images)",
    "permutations are needed: aligning B to A removes a barrier that the unaligned pair keeps",
    0.1,
    "below",
    "nats",
    "the same tolerance as lmc_loss_calibrated: a gap within it is a barrier the paper would call LMC",
    True,
)


@dataclass
class Claim:
    id: str
    statement: str
    verdict: str
    value: float
    ci: list[float]
    threshold: float
    direction: str
    units: str
    reason: str
    note: str = ""
    n_pairs: int = 1
    per_pair: list[float] = field(default_factory=list)
    covers: str = COVERS["images"]  # what ``ci`` covers (lewc.stats.pairs.COVERS)
    prediction: list[float] = field(default_factory=lambda: [float("nan")] * 2)  # one new pair (n ≥ 2)
    # why A and B cannot be told apart ("" when they can): identical or collinear endpoints; a claim that needs
    # the split is then INCONCLUSIVE. The structured flag, so nobody has to parse ``note``.
    degenerate: str = ""


def decide(value: float, ci: Sequence[float], threshold: float, direction: str) -> str:
    """PASS / FAIL / INCONCLUSIVE from a confidence interval relative to a threshold.

    A missing value or interval (NaN) is INCONCLUSIVE: a verdict never rests on a point alone.
    """
    lo, hi = ci
    if not (np.isfinite(value) and np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if direction == "below":
        return PASS if hi <= threshold else FAIL if lo > threshold else INCONCLUSIVE
    return PASS if lo > threshold else FAIL if hi <= threshold else INCONCLUSIVE


# --- statistics: f(res, weights) with weights (R, n) image resampling counts → (R,) values -------------


class Resampler:
    """Seeded bootstrap counts per sample size, shared by all claims of one pair (paired resamples)."""

    def __init__(self, n_boot: int, seed: int):
        self.n_boot, self.seed = n_boot, seed
        self._cache: dict[int, np.ndarray] = {}

    def counts(self, n: int) -> np.ndarray:
        if n not in self._cache:
            self._cache[n] = image_counts(n, self.n_boot, self.seed)
        return self._cache[n]


def _weighted_mean(per_image: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Mean over the last axis; with weights (R, n) → (R, …)."""
    if w is None:
        return per_image.mean(-1)[None]
    return np.tensordot(w, per_image, axes=(1, -1)) / w.sum(1).reshape(-1, *([1] * (per_image.ndim - 1)))


def _barrier_mid(per_image: np.ndarray, lams: list[float], w, higher_is_better: bool) -> np.ndarray:
    mid = mid_index(lams)
    i0, i1 = lams.index(0.0), lams.index(1.0)
    means = _weighted_mean(per_image, w)  # (R, λ)
    lam = lams[mid]
    base = (1 - lam) * means[:, i0] + lam * means[:, i1]
    return base - means[:, mid] if higher_is_better else means[:, mid] - base


def stat_lmc_accuracy(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    correct = 100.0 * res["correct"].transpose("lam", "image").values.astype(np.float64)
    w = rs.counts(correct.shape[-1]) if rs else None
    return _barrier_mid(correct, _lams(res), w, True), ""


def stat_lmc_loss_calibrated(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    loss = res["loss_cal_per_image"].transpose("lam", "image").values
    w = rs.counts(loss.shape[-1]) if rs else None
    value = _barrier_mid(loss.astype(np.float64), _lams(res), w, False)
    if "barrier_loss_raw" not in res:
        return value, ""
    raw = float(res["barrier_loss_raw"].sel(at="mid"))
    return value, f"raw (β = 1) loss barrier {raw:.4f}"


def _layer_coefficients(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, np.ndarray]:
    """Full-data (a, b) per (R, λ, layer) from the per-image Gram terms, and the degenerate layers."""
    gram = res["gram"].transpose("lam", "layer", "image", "term").values
    g = gram.sum(2)[None] if rs is None else np.einsum("ri,lkit->rlkt", rs.counts(gram.shape[2]), gram, optimize=True)
    collinear = fit.collinear_endpoints(gram.sum(2)).any(axis=0)  # (layer,)
    return fit.coefficients_from_gram(g), collinear


def _depths(res: xr.Dataset) -> np.ndarray:
    return res["depth"].values.astype(np.float64)


def predicted_exponent(res: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """LEWC's exponent per layer for this network's normalisation, and why it has none (NaN) where so.

    ``depth_eff`` (lewc.models.effective, docs/conventions.md): ℓ for normalisation-free chains; weight
    layers since the last re-estimated BatchNorm plus its γ otherwise. Results written before it existed
    fall back to ℓ.
    """
    if "depth_eff" not in res.coords:
        return _depths(res), np.full(res.sizes["layer"], "", dtype=object)
    return res["depth_eff"].values.astype(np.float64), res["depth_eff_reason"].values.astype(str).astype(object)


def logits_exponent(res: xr.Dataset) -> tuple[float, str]:
    """L_eff, LEWC's exponent at the logits, and why it is undefined (NaN) where so; ℓ of the head for
    results written before it existed."""
    if "total_depth_eff" in res.attrs:
        return float(res.attrs["total_depth_eff"]), str(res.attrs.get("total_depth_eff_reason", ""))
    return float(res.attrs.get("total_depth", np.nan)), ""


def _not_applicable(n: int, why: str) -> tuple[np.ndarray, str]:
    return np.full(n, np.nan), NA_PREFIX + why


def _informative(depth: np.ndarray, reasons: np.ndarray, res: xr.Dataset) -> tuple[np.ndarray, str]:
    """Layers where LEWC's and LLFC's predictions differ (exponent defined and ≠ 1), and a note on the rest."""
    defined = np.isfinite(depth)
    use = defined & ~np.isclose(depth, 1.0)
    parts = []
    if (~defined).any():
        parts.append(f"no LEWC prediction for {_layer_names(res, ~defined)} ({sorted(set(reasons[~defined]))[0]})")
    if (defined & ~use).any():
        parts.append(f"exponent 1 (LEWC = LLFC) at {_layer_names(res, defined & ~use)}")
    return use, "; ".join(parts)


def _lams(res: xr.Dataset) -> list[float]:
    return [float(v) for v in res["lam"].values]


def _layer_names(res: xr.Dataset, mask: np.ndarray) -> str:
    return ", ".join(str(n) for n in res["layer"].values[mask])


def k_gram(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, np.ndarray]:
    """k_gram per (R, layer): the weighting exponent from the Gram-sum coefficients; and the collinear layers."""
    coef, collinear = _layer_coefficients(res, rs)  # (R, λ, layer, 2)
    weights = fit.weight_depths(predicted_exponent(res)[0], _depths(res))
    return fit.weighting_exponent(_lams(res), np.moveaxis(coef, 2, 1), weights), collinear


def stat_lewc_weighting(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    k, collinear = k_gram(res, rs)  # (R, layer)
    depth, reasons = predicted_exponent(res)
    informative, skipped = _informative(depth, reasons, res)
    if not informative.any():
        return _not_applicable(len(k), "no layer where LEWC's exponent differs from LLFC's 1" + f" ({skipped})")
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (k - 1) / (depth - 1)
    use = informative & ~collinear
    if not use.any():
        return np.full(len(k), np.nan), "no layer with ℓ_eff ≠ 1 whose endpoint outputs can be told apart"
    values = np.abs(t[:, use] - 1).max(axis=1)
    values = np.where(np.isnan(t[:, use]).any(axis=1), np.nan, values)
    note = "t_ℓ (0 = LLFC, 1 = LEWC): " + ", ".join(
        f"{n} (ℓ_eff={d:g}, k_gram={kk:.2f}) {tt:.2f}"
        for n, d, kk, tt in zip(res["layer"].values[use], depth[use], k[0, use], t[0, use], strict=True)
    )
    if skipped:
        note += f"; {skipped}"
    if collinear.any():
        note += f"; excluded (collinear endpoint outputs): {_layer_names(res, collinear)}"
    return values, note


def stat_lewc_magnitude(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    coef, _ = _layer_coefficients(res, rs)
    mid = mid_index(_lams(res))
    depth, reasons = predicted_exponent(res)
    use, skipped = _informative(depth, reasons, res)
    if not use.any():
        return _not_applicable(len(coef), "no layer where LEWC's exponent differs from LLFC's 1" + f" ({skipped})")
    total = coef[:, mid, :, 0] + coef[:, mid, :, 1]  # (R, layer)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = -np.log2(total) / (depth - 1)
    values = np.abs(u[:, use] - 1).max(axis=1)
    values = np.where(np.isnan(u[:, use]).any(axis=1), np.nan, values)
    note = "u_ℓ (0 = LLFC, 1 = LEWC), a + b at ½: " + ", ".join(
        f"{n} {uu:.2f} ({tt:.3f} vs {2 * 0.5**d:.3f})"
        for n, uu, tt, d in zip(res["layer"].values[use], u[0, use], total[0, use], depth[use], strict=True)
    )
    return values, note + (f"; {skipped}" if skipped else "")


def _null_spread(res: xr.Dataset, name: str, layers: np.ndarray) -> dict[str, str]:
    """Per layer "mean ± sd over n shuffles" of a shuffled null (``name``: layer × shuffle[× direction])."""
    if name not in res:
        return {}
    v = res[name].sel(layer=res["layer"].values[layers]).values
    v = v.reshape(v.shape[0], int(np.prod(v.shape[1:])))  # no layer selected (e.g. no ReLU): (0, n)
    return {
        str(n): f"{np.nanmean(r):.3f} ± {np.nanstd(r, ddof=1):.3f} over {v.shape[1]} shuffles"
        for n, r in zip(res["layer"].values[layers], v, strict=True)
        if np.isfinite(r).sum() > 1
    }


def stat_weak_additivity(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    """The worst ReLU layer's raw additivity cosine at λ = ½ (exact disjoint features: 1).

    Judged against fixed references, not against a shuffle of the pair's own units: pairs trained
    from independent seeds are exchangeable under unit permutations, so a statistic normalised by
    its value on (A, perm(B)) has expectation 1 whether the paper's mechanism holds or not.
    """
    mid = mid_index(_lams(res))
    wa = res["wa_terms"].isel(lam=mid).transpose("layer", "condition_image", "wa_term").values
    relu = res["is_relu"].values.astype(bool)
    w = rs.counts(wa.shape[1]) if rs else None
    out = conditions.weak_additivity(wa[relu], w, image_axis=1)
    cos = out["cos"] if w is not None else out["cos"][None]  # (R, layer)
    values = np.nanmin(cos, axis=1) if np.isfinite(cos).any() else np.full(len(cos), np.nan)
    values = np.where(np.isnan(cos).all(axis=1), np.nan, values)
    cos0 = out["cos"] if w is None else out["cos"][0]
    null = out["null"] if w is None else out["null"][0]
    spread = _null_spread(res, "wa_null_cos", relu)
    note = "raw cos per ReLU layer (shuffled-null context): " + ", ".join(
        f"{n} {c:.4f} ({spread.get(str(n), f'{z:.4f}, one shuffle')})"
        for n, c, z in zip(res["layer"].values[relu], cos0, null, strict=True)
    )
    note += f"; references: exact 1, dense independent zero-mean Gaussians {GAUSSIAN_ADDITIVITY:.2f}"
    other = res["layer"].values[:-1][~relu[:-1]]  # hidden layers with another activation (the head is linear)
    if len(other):
        note += (
            f"; not computed for {', '.join(map(str, other))}: the paper's weak additivity is stated for ReLU, "
            "other activations (GELU, SiLU, LeakyReLU, …) are outside its theory"
        )
    return values, note


def stat_reciprocal_orthogonality(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    """The largest raw cross-term ratio ‖W_B z_A‖/‖W_A z_A‖ (and its mirror) over layers ℓ ≥ 2.

    0 for exact disjoint features, 1 for A with itself (LLFC: the cross term is the self term).
    """
    ro = res["ro_terms"].transpose("layer", "condition_image", "ro_term").values
    use = _depths(res) >= 2
    w = rs.counts(ro.shape[1]) if rs else None
    out = conditions.reciprocal_orthogonality(ro[use], w)
    raw = np.stack([out["b_on_a"], out["a_on_b"]], axis=-1)
    raw = raw if w is not None else raw[None]  # (R, layer, 2)
    values = raw.reshape(len(raw), -1).max(axis=1)
    values = np.where(np.isnan(raw).any(axis=(1, 2)), np.nan, values)
    first = raw[0]
    null = np.stack([out["null_b_on_a"], out["null_a_on_b"]], axis=-1)
    null = null if w is None else null[0]
    spread = _null_spread(res, "ro_null", use)
    note = "‖W_B z_A‖/‖W_A z_A‖, ‖W_A z_B‖/‖W_B z_B‖ per layer (shuffled-input null context): " + ", ".join(
        f"{n} {r[0]:.3f}, {r[1]:.3f} ({spread.get(str(n), f'{z[0]:.3f}, {z[1]:.3f}, one shuffle')})"
        for n, r, z in zip(res["layer"].values[use], first, null, strict=True)
    )
    return values, note


def stat_ensemble_equivalence(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    lams = np.asarray(_lams(res))
    interior = (lams > 0) & (lams < 1) & ~np.isclose(lams, 0.5)
    n_out = rs.n_boot if rs else 1
    depth, why = logits_exponent(res)
    if not np.isfinite(depth):
        return _not_applicable(n_out, f"LEWC predicts no exponent at the logits ({why})")
    if np.isclose(depth, 1.0):
        return _not_applicable(n_out, "L_eff = 1 at the logits: the LEWC and plain ensembles coincide")
    if not interior.any():
        return np.full(n_out, np.nan), "the λ grid has no interior λ ≠ ½"
    agree = res["ens_agree_per_image"].transpose("kind", "lam", "image").values.astype(np.float64)
    kinds = [str(k) for k in res["kind"].values]
    diff = agree[kinds.index("lewc"), interior] - agree[kinds.index("plain"), interior]  # (λ', image)
    w = rs.counts(diff.shape[-1]) if rs else None
    values = _weighted_mean(diff, w).mean(axis=1)
    lewc = agree[kinds.index("lewc"), interior].mean(1)
    plain = agree[kinds.index("plain"), interior].mean(1)
    note = f"L_eff = {depth:g}; agreement LEWC / plain at " + ", ".join(
        f"λ={lam:g}: {a:.3f} / {b:.3f}" for lam, a, b in zip(lams[interior], lewc, plain, strict=True)
    )
    return values, note


def stat_lewc_temperature(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    """s = log₂(β_merged(½)/β_plain(½)) / (L_eff − 1): 1 under LEWC, 0 under LLFC.

    Exact LEWC makes the merged logits at ½ equal (½)^L_eff (z_A + z_B) = 2^(1−L_eff) × the plain ensemble
    ½(z_A + z_B), so the fitted inverse temperatures are in the ratio 2^(L_eff−1); LLFC (merged ≈ plain
    ensemble) gives 1. The interval refits both β on resampled calibration images (paired).
    """
    n_out = rs.n_boot if rs else 1
    depth, why = logits_exponent(res)
    if not np.isfinite(depth):
        return _not_applicable(n_out, f"LEWC predicts no exponent at the logits ({why})")
    if np.isclose(depth, 1.0):
        return _not_applicable(n_out, "L_eff = 1 at the logits: LEWC and LLFC both predict a ratio of 1")
    lams = _lams(res)
    mid, i0, i1 = mid_index(lams), lams.index(0.0), lams.index(1.0)
    z = res["logits_calib"].transpose("lam", "calib_image", "class").values.astype(np.float64)
    y = res["labels_calib"].values
    w_a, w_b = 1 - lams[mid], lams[mid]
    pair = np.stack([z[mid], w_a * z[i0] + w_b * z[i1]])  # merged, plain ensemble at ½
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate calibration sets get the β bounds; the note shows them
        betas = fit_betas(pair, y)
        if rs is None:
            ratio = np.array([betas[0] / betas[1]])
        else:
            b = fit_betas_resampled(pair, y, rs.counts(len(y)), full=betas)  # (R, 2): every resample, none materialised
            ratio = b[:, 0] / b[:, 1]
    values = np.abs(np.log2(ratio) / (depth - 1) - 1)
    note = (
        f"s = {np.log2(betas[0] / betas[1]) / (depth - 1):.3f} (0 = LLFC, 1 = LEWC): "
        f"β_merged(½) {betas[0]:.4g}, β_plain(½) {betas[1]:.4g}, ratio {betas[0] / betas[1]:.4g} "
        f"against LEWC's 2^(L_eff−1) = {2 ** (depth - 1):.4g} (L_eff = {depth:g}) and LLFC's 1"
    )
    return values, note


Statistic = Callable[[xr.Dataset, "Resampler | None"], tuple[np.ndarray, str]]


@dataclass(frozen=True)
class ClaimType:
    """A registered claim: its spec, the statistic that decides it, and whether it reads the per-layer
    captures (``layerwise``: skipped for results swept without them, e.g. ``--no-layers``).

    The statistic maps (results, resampler) to (values, note): one value without a resampler, one per
    bootstrap replicate with it (draw image weights from ``resampler.counts(n)``), and a note for the
    report. ``requires`` names the per-image variable it resamples: results.nc stores the claim's bootstrap
    replicates instead, so the statistic runs only where that variable is present (samples.nc merged
    in, or a fresh analysis). A new claim is one ``ClaimType`` plus one ``register_claim``.

    ``compares`` names an alignment method the claim compares the unaligned pair with (``permutation_gap``:
    ``weights``): its statistic gets the pair's results stacked along ``align`` (``none`` and that method),
    it is evaluated only where every pair was also aligned by that method, and its verdict is stored in
    results.nc as the variables ``<id>``, ``<id>_ci``, ``<id>_verdict`` (``with_comparisons``), not per
    alignment. ``pairs_note`` words the note over several pairs from each pair's note (default: none).
    """

    spec: ClaimSpec
    statistic: Statistic
    layerwise: bool = False
    requires: str = ""  # the per-image variable the statistic resamples (in samples.nc; results.nc keeps replicates)
    compares: str = ""  # the alignment method compared with "none" ("" for a claim on one alignment)
    pairs_note: Callable[[list[str]], str] | None = None

    @property
    def id(self) -> str:
        return self.spec.id


def _check_claim(claim: ClaimType) -> None:
    if claim.spec.direction not in ("below", "above"):
        raise ValueError(f"claim {claim.id!r}: direction must be 'below' or 'above'")


CLAIMS: Registry[ClaimType] = Registry(
    "claim",
    key=lambda claim: claim.id,
    check=_check_claim,
    make=lambda statistic, *, spec, **fields: ClaimType(spec, statistic, **fields),
)


def register_claim(claim: ClaimType | None = None, /, **fields) -> ClaimType | Callable:
    """Add a claim to the registry (an id may be registered once); it is then evaluated and reported.
    ``@register_claim(spec=ClaimSpec(...), requires=...)`` on a statistic registers ``ClaimType(spec, it)``."""
    return CLAIMS.register(claim, **fields)


def unregister_claim(claim_id: str) -> None:
    """Remove a claim (tests that register toy claims clean up with this)."""
    CLAIMS.unregister(claim_id)


def claim_ids(per_alignment: bool = False) -> list[str]:
    """Every registered claim's id; with ``per_alignment``, only those evaluated on one alignment's results
    (not those that compare two alignments)."""
    return [c.id for c in CLAIMS.values() if not (per_alignment and c.compares)]


def get_claim(claim_id: str) -> ClaimType:
    """The registered claim ``claim_id``; an unknown id is a one-line error listing the known ones."""
    return CLAIMS.get(claim_id)


def compared_alignment(claim_id: str) -> str:
    """The alignment a registered claim compares with ``none`` ("" for a per-alignment or unknown claim)."""
    return CLAIMS.get(claim_id).compares if claim_id in CLAIMS else ""


def pair_statistic(res: xr.Dataset, cid: str, n_boot: int, seed: int) -> tuple[float, np.ndarray, str] | None:
    """(point, image-bootstrap replicates, note) of one claim on one pair; None when it cannot be had.

    From the replicates stored in results.nc when they were drawn with the same ``n_boot`` and
    ``seed`` (the same numbers the per-image data would give, without redrawing them), else from the
    per-image data when the Dataset holds it.
    """
    stored = "claim_replicates" in res and cid in res["claim"].values
    key = (int(res.attrs.get("claim_n_boot", -1)), int(res.attrs.get("claim_seed", -1)))
    if stored and key == (n_boot, seed):
        sel = res.sel(claim=cid)
        reps = sel["claim_replicates"].values.astype(np.float64)
        return float(sel["claim_value"]), reps, str(sel["claim_note"].values)
    claim = get_claim(cid)
    if not claim.requires or claim.requires in res:  # no per-image input named: the statistic reads summaries
        point, note = claim.statistic(res, None)
        reps, _ = claim.statistic(res, Resampler(n_boot, seed))
        return float(point[0]), reps, note
    if stored:
        raise LewcError(
            f"these results store bootstrap replicates for n_boot, seed = {key}, not {(n_boot, seed)}; "
            "rerun lewc.verify with --keep-samples to resample them differently"
        )
    return None


def degeneracy(res: xr.Dataset) -> str:
    """Why a pair cannot be split into A and B ("" when it can): identical or collinear endpoints."""
    if res.attrs.get("sha256_a") and res.attrs.get("sha256_a") == res.attrs.get("sha256_b"):
        return "identical endpoints (same weights)"
    if "gram_total" in res or "gram" in res:
        gram = (
            res["gram_total"].transpose("lam", "layer", "term").values
            if "gram_total" in res
            else res["gram"].transpose("lam", "layer", "image", "term").values.sum(2)
        )
        if fit.collinear_endpoints(gram).any(axis=0).all():
            return "the endpoints' outputs are collinear in every layer"
    return ""


def unaligned(res: xr.Dataset) -> xr.Dataset:
    """The unaligned pair's results: the ``none`` slice of results stacked along ``align``, else ``res``."""
    return res.sel(align="none", drop=True) if "align" in res.dims else res


def holds_alignment(res: xr.Dataset, method: str) -> bool:
    """Whether results stacked along ``align`` hold ``method`` (and ``none``) beside each other."""
    return "align" in res.dims and {"none", method} <= {str(v) for v in res["align"].values}


def evaluate_claims(
    results: xr.Dataset | Sequence[xr.Dataset],
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    ids: Sequence[str] | None = None,
) -> list[Claim]:
    """All claims (or those named in ``ids``) for one pair's results Dataset, or combined over several
    independent pairs.

    Results stacked along ``align`` are judged on their unaligned (``none``) slice, plus every claim that
    compares ``none`` with an alignment every pair holds (``ClaimType.compares``: ``permutation_gap``).
    """
    results = [results] if isinstance(results, xr.Dataset) else list(results)
    plain = [unaligned(r) for r in results]
    reasons = sorted({r for r in (degeneracy(p) for p in plain) if r})
    claims = []
    for claim in CLAIMS.values() if ids is None else [get_claim(cid) for cid in ids]:
        if claim.compares:
            if not all(holds_alignment(r, claim.compares) for r in results):
                continue
            inputs = [r.sel(align=["none", claim.compares]) for r in results]
        else:
            inputs = plain
        found = evaluate_claim(claim, inputs, reasons, n_boot, seed)
        if found is not None:
            claims.append(found)
    return claims


def evaluate_claim(
    claim: ClaimType, results: list[xr.Dataset], degenerate: list[str], n_boot: int, seed: int
) -> Claim | None:
    """One registered claim on one pair's results or over several pairs (``None``: a layer-wise claim on
    results without layer statistics); ``degenerate`` lists why the pairs cannot be split, if they cannot."""
    cid, spec = claim.id, claim.spec
    stats = [pair_statistic(res, cid, n_boot, seed) for res in results]
    if any(s is None for s in stats):
        if claim.layerwise:  # no layer statistics captured (e.g. --no-layers)
            return None
        raise LewcError(f"these results hold neither {claim.requires} nor the replicates of {cid}")
    points = [s[0] for s in stats]
    reps = [s[1] for s in stats]
    notes = [s[2] for s in stats]
    value, ci, finite = _interval(points, reps, seed)
    verdict = decide(value, ci, spec.threshold, spec.direction)
    if len(results) == 1:
        note = notes[0]
    elif claim.pairs_note is not None:
        note = claim.pairs_note(notes) + "; " + over_pairs_note(points)
    else:
        note = over_pairs_note(points)
    if finite <= MIN_FINITE and np.isfinite(value):
        note += f"; the statistic is undefined in {100 * (1 - finite):.0f}% of bootstrap replicates"
    flag = "; ".join(degenerate) if spec.needs_split else ""
    if flag:
        verdict = INCONCLUSIVE
        note = f"degenerate pair: {flag} — " + note
    if all(np.isnan(p) and n.startswith(NA_PREFIX) for p, n in zip(points, notes, strict=True)):
        verdict, note = NOT_APPLICABLE, notes[0]  # the theory predicts nothing here: no verdict either way
    return _claim(spec, verdict, value, ci, note, points, flag)


def _interval(points: list[float], reps: list[np.ndarray], seed: int) -> tuple[float, np.ndarray, float]:
    """Point, 95% interval and the fraction of finite replicates of one statistic.

    One pair: the percentile interval of its image bootstrap (conditional on the pair). Several: the
    mean over pairs and its t-interval (n − 1 d.f.; the pairs' image replicates are not used — each
    pair's value already carries its image noise into the spread over pairs).
    """
    if len(points) == 1:
        finite = np.isfinite(reps[0])
        ci = percentile_interval(reps[0][finite], LEVEL) if finite.mean() > MIN_FINITE else np.array([np.nan] * 2)
        return float(points[0]), ci, float(finite.mean())
    over = t_intervals(points, LEVEL)
    return over.mean, np.array(over.ci), float(np.mean([np.isfinite(r).mean() for r in reps]))


def over_pairs_note(points: list[float]) -> str:
    """The wording of a verdict over pairs: n, what the interval covers, one new pair's interval."""
    over = t_intervals(points, LEVEL)
    lo, hi = over.prediction
    per_pair = ", ".join(f"{p:.4g}" for p in points)
    return f"{over.n} pairs; CI {COVERS['pairs']}; {COVERS['new_pair']}: [{lo:.4g}, {hi:.4g}]; per pair: {per_pair}"


def _claim(
    spec: ClaimSpec, verdict: str, value: float, ci, note: str, points: list[float], degenerate: str = ""
) -> Claim:
    over = t_intervals(points, LEVEL)
    return Claim(
        spec.id,
        spec.statement,
        verdict,
        value,
        [float(c) for c in ci],
        spec.threshold,
        spec.direction,
        spec.units,
        spec.reason,
        note,
        len(points),
        points,
        COVERS["images"] if len(points) == 1 else COVERS["pairs"],
        [float(x) for x in over.prediction],
        degenerate,
    )


GAP_NOTE = "calibrated barrier without / with weight matching: "


def stat_permutation_gap(res: xr.Dataset, rs: Resampler | None) -> tuple[np.ndarray, str]:
    """The title's question: barrier without permutation minus barrier with weight matching.

    ``res`` holds the pair unaligned and weight-matched along ``align``. Both barriers are measured on the
    same test images, and one ``Resampler`` seed draws the same image resamples for both, so each replicate
    is a paired difference; several pairs are combined like every other claim (the t-interval of the mean
    over pairs).
    """
    if rs is None:  # the point: from the stored replicates' draw where there is one (the point is the same)
        n_boot, seed = int(res.attrs.get("claim_n_boot", N_BOOT)), int(res.attrs.get("claim_seed", BOOT_SEED))
    else:
        n_boot, seed = rs.n_boot, rs.seed
    plain, matched = (
        pair_statistic(res.sel(align=m, drop=True), "lmc_loss_calibrated", n_boot, seed) for m in ("none", "weights")
    )
    if plain is None or matched is None:
        raise LewcError("these results hold neither loss_cal_per_image nor the replicates of lmc_loss_calibrated")
    note = GAP_NOTE + f"{plain[0]:.4f} / {matched[0]:.4f}"
    if rs is None:
        return np.array([plain[0] - matched[0]]), note
    return plain[1] - matched[1], note  # same resamples: paired differences


def _gap_pairs_note(notes: list[str]) -> str:
    return GAP_NOTE + ", ".join(n.removeprefix(GAP_NOTE) for n in notes)


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


def claims_as_dicts(claims: list[Claim]) -> list[dict]:
    return [asdict(c) for c in claims]


def specs_as_dicts() -> dict[str, dict]:
    return {claim.id: asdict(claim.spec) for claim in CLAIMS.values()}


for _statistic, _layerwise, _requires in (
    (stat_lmc_accuracy, False, "correct"),
    (stat_lmc_loss_calibrated, False, "loss_cal_per_image"),
    (stat_lewc_weighting, True, "gram"),
    (stat_lewc_magnitude, True, "gram"),
    (stat_weak_additivity, True, "wa_terms"),
    (stat_reciprocal_orthogonality, True, "ro_terms"),
    (stat_ensemble_equivalence, False, "ens_agree_per_image"),
    (stat_lewc_temperature, False, "logits_calib"),
):
    _spec = _BUILTIN_SPECS[_statistic.__name__.removeprefix("stat_")]
    register_claim(ClaimType(_spec, _statistic, _layerwise, _requires))
register_claim(ClaimType(GAP_SPEC, stat_permutation_gap, requires="", compares="weights", pairs_note=_gap_pairs_note))
