"""The built-in claims: each one's spec (statement, statistic, rival, threshold, reason) and the statistic
that decides it, registered in ``lewc.stats.claim_registry`` at the end of this module (docs/claims.md,
and ``lewc.stats.claims``'s docstring, say what each measures and why).

A statistic maps (results, resampler) to (values, note): one value without a resampler, one per
bootstrap replicate with it — image weights ``rs.counts(n)`` of shape (R, n) → (R,) values.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from lewc.core.conventions import BOOT_SEED, N_BOOT
from lewc.core.errors import LewcError
from lewc.stats import conditions, fit
from lewc.stats.barriers import mid_index
from lewc.stats.calibrate import fit_betas, fit_betas_resampled
from lewc.stats.claim_registry import NA_PREFIX, ClaimSpec, ClaimType, Resampler, pair_statistic, register_claim

EQUIVALENCE_MARGIN = 0.25  # a quarter of the distance between the LLFC (0) and LEWC (1) predictions
# The conditions' thresholds, each stated as the fraction ε of shared units it admits when two narrow
# bias-free nets are placed in a wide one (exact LEWC: ε = 0; docs/claims.md, benchmarks/condition_family.py).
ADDITIVITY_MIN = 0.98  # raw additivity cosine, worst ReLU layer (exact 1; dense Gaussians 0.93): ε ≈ 3/16–½
CROSS_TERM_MAX = 0.5  # raw ‖W_B z_A‖/‖W_A z_A‖, worst layer ℓ ≥ 2 and direction (exact 0; LLFC 1): ε ≈ 3/16–½
GAUSSIAN_ADDITIVITY = 0.93  # the paper's reference: independent zero-mean Gaussians at λ = ½


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
