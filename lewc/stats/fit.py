"""Exponential-weight regressions (statsmodels) and the LEWC-vs-LLFC comparison.

For each layer ℓ and λ, the merged output is regressed on the endpoint outputs without intercept,
f_ℓ(θ(λ)) ≈ a·f_ℓ(A) + b·f_ℓ(B):

* on the stored coordinate subsample with statsmodels OLS, standard errors clustered by image
  (coordinates of one image are not independent), fitted from each image's sufficient statistics;
* on the full evaluation set from the streaming Gram sums (same estimator, exact).

LEWC predicts a = (1-λ)^ℓ, b = λ^ℓ; LLFC (layerwise linear feature connectivity) predicts
a = 1-λ, b = λ. Both coincide at λ = ½ up to scale, so the discriminating evidence is λ ≠ ½ and,
scale-free, the effective exponent k_ℓ: the WLS slope of log(a/b) on log((1-λ)/λ) across λ, which
is ℓ under LEWC and 1 under LLFC.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from lewc.core.conventions import AA, AB, BB, LEVEL, MA, MB, MM, lewc_weights, llfc_weights  # the one Gram-term index

# Per-(layer, λ) outputs of ``fit_layers``.
LAYER_LAM_KEYS = (
    "coef_a",
    "coef_b",
    "r2",
    "coef_a_full",
    "coef_b_full",
    "r2_full",
    "cos_lewc",
    "cos_llfc",
    "rel_err_lewc",
    "rel_err_llfc",
    "pred_a_lewc",
    "pred_b_lewc",
)
# Index of each Gram term in the last axis of the per-image Gram array: lewc.core.conventions (AA, MM, …).

COLLINEAR_COS = 1 - 1e-6  # endpoint outputs whose cosine exceeds this cannot be split into a and b


def _statsmodels():
    """``statsmodels.api``, imported on first use: it costs ~1 s, which ``--help``, argument errors and
    commands that never fit (training, study submission) should not pay."""
    import statsmodels.api as sm

    return sm


def image_moments(m: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image sufficient statistics of the no-intercept regression of m on (a, b).

    ``m``, ``a``, ``b`` are (…, image, coordinate); entries where any of them is not finite are dropped
    (unfilled coordinates of a narrow layer). Returns ``xtx`` (…, image, 2, 2), ``xty`` (…, image, 2),
    ``yty`` and ``count`` (…, image): everything an image-clustered OLS needs, since both the estimate
    and the cluster "meat" Σ_g (X_gᵀe_g)(X_gᵀe_g)ᵀ depend on an image's rows only through them.
    """
    ok = np.isfinite(m) & np.isfinite(a) & np.isfinite(b)
    y, xa, xb = (np.where(ok, v, 0.0).astype(np.float64) for v in (m, a, b))
    aa, ab, bb = (np.einsum("...u,...u->...", p, q) for p, q in ((xa, xa), (xa, xb), (xb, xb)))
    xtx = np.stack([np.stack([aa, ab], -1), np.stack([ab, bb], -1)], -2)
    xty = np.stack([np.einsum("...u,...u->...", xa, y), np.einsum("...u,...u->...", xb, y)], -1)
    return {"xtx": xtx, "xty": xty, "yty": np.einsum("...u,...u->...", y, y), "count": ok.sum(-1)}


def compressed_rows(xtx: np.ndarray, xty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two rows (R_g, r_g) per image with R_gᵀR_g = X_gᵀX_g and R_gᵀr_g = X_gᵀy_g.

    R_g = √w Vᵀ from the eigendecomposition X_gᵀX_g = V diag(w) Vᵀ (a Cholesky factor would fail on
    an image whose sampled outputs are all zero); r_g = w^{-½} Vᵀ X_gᵀy_g, 0 on the null space (where
    Vᵀ X_gᵀy_g is 0 too). OLS on these rows has the same X'X and X'y — hence the same estimate — and
    each image's score R_gᵀ(r_g − R_g β) = X_gᵀ(y_g − X_g β), hence the same clustered covariance.
    """
    w, v = np.linalg.eigh(xtx)
    w = np.maximum(w, 0.0)
    root = np.sqrt(w)
    rows = root[..., :, None] * np.swapaxes(v, -1, -2)
    proj = np.einsum("...ji,...j->...i", v, xty)
    with np.errstate(invalid="ignore", divide="ignore"):
        targets = np.where(root > 0, proj / root, 0.0)
    return rows, targets


def ols_clustered(moments: dict[str, np.ndarray]) -> dict[str, np.ndarray | float]:
    """No-intercept OLS of m on (a, b) with image-clustered covariance, from ``image_moments``.

    statsmodels fits the two compressed rows per image (``compressed_rows``): the same estimate and
    cluster-robust covariance as on every coordinate, at 2 rows per image instead of one per sampled
    coordinate (0.4 s of each verify was statsmodels sorting 131,072 group labels per fit). Its
    small-sample factor G/(G−1)·(N−1)/(N−K) is applied here with N the real number of coordinates,
    so coefficients, covariance and intervals are those of the coordinate-level fit (to rounding; a
    test compares them). Images without a usable coordinate are not clusters.
    """
    nan2 = np.full(2, np.nan)
    empty = {"coef": nan2, "cov": np.full((2, 2), np.nan), "ci": np.full((2, 2), np.nan), "r2": np.nan}
    used = moments["count"] > 0
    n_obs, n_groups = int(moments["count"].sum()), int(used.sum())
    ss_tot = float(moments["yty"].sum())
    if n_obs < 3 or ss_tot == 0 or n_groups < 2:
        return empty
    xtx, xty = moments["xtx"][used], moments["xty"][used]
    rows, targets = compressed_rows(xtx, xty)
    groups = np.repeat(np.arange(n_groups), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # hasconst=False: the design has no intercept by construction (the constant search costs ~20 ms)
        model = _statsmodels().OLS(targets.reshape(-1), rows.reshape(-1, 2), hasconst=False)
        res = model.fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False})
        coef = np.asarray(res.params)
        ci = np.asarray(res.conf_int(alpha=1 - LEVEL))
    factor = n_groups / (n_groups - 1.0) * (n_obs - 1.0) / (n_obs - 2.0)
    ci = coef[:, None] + np.sqrt(factor) * (ci - coef[:, None])  # half-widths scale with the standard error
    xtx_all, xty_all = xtx.sum(0), xty.sum(0)
    ssr = ss_tot - 2 * coef @ xty_all + coef @ xtx_all @ coef
    r2 = 1.0 - ssr / ss_tot  # uncentered, as no intercept
    return {"coef": coef, "cov": np.asarray(res.cov_params()) * factor, "ci": ci, "r2": float(r2)}


def ols_from_gram(g: np.ndarray) -> tuple[np.ndarray, float]:
    """(coef a, b) and uncentered R² from summed Gram terms (…, 6); pseudo-inverse for collinear a, b."""
    xtx = np.array([[g[AA], g[AB]], [g[AB], g[BB]]])
    xty = np.array([g[MA], g[MB]])
    coef = np.linalg.pinv(xtx) @ xty
    rss = g[MM] - 2 * coef @ xty + coef @ xtx @ coef
    return coef, float(1 - rss / g[MM]) if g[MM] > 0 else np.nan


def prediction_errors(g: np.ndarray, ca: float, cb: float) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and relative error ‖m − p‖/‖m‖ of the prediction p = ca·a + cb·b from Gram terms.

    ``g`` may be per image (n, 6) or summed (6,); the result has the matching leading shape.
    """
    mp = ca * g[..., MA] + cb * g[..., MB]
    pp = ca**2 * g[..., AA] + 2 * ca * cb * g[..., AB] + cb**2 * g[..., BB]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = mp / np.sqrt(g[..., MM] * pp)
        rel = np.sqrt(np.maximum(g[..., MM] - 2 * mp + pp, 0.0) / g[..., MM])
    return cos, rel


def predictions(lam: float, depth: int) -> dict[str, tuple[float, float]]:
    """The (c_a, c_b) of the LEWC and LLFC predictions at λ for a layer at depth ℓ."""
    return {"lewc": lewc_weights(lam, depth), "llfc": llfc_weights(lam)}


def effective_exponent(lams: Sequence[float], coef: np.ndarray, cov: np.ndarray) -> dict[str, float]:
    """k from WLS of log(a/b) on log((1-λ)/λ) (with intercept) over interior λ with a, b > 0.

    ``coef`` is (λ, 2), ``cov`` (λ, 2, 2). Weights are the inverse delta-method variances of
    log(a/b); exact fits (zero variance) fall back to equal weights.
    """
    lam = np.asarray(lams, dtype=np.float64)
    a, b = coef[:, 0], coef[:, 1]
    use = (lam > 0) & (lam < 1) & (a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b)
    if use.sum() < 3:
        return {"k": np.nan, "k_lo": np.nan, "k_hi": np.nan, "k_se": np.nan, "n_lam": int(use.sum())}
    x = np.log((1 - lam[use]) / lam[use])
    y = np.log(a[use] / b[use])
    var = cov[use, 0, 0] / a[use] ** 2 + cov[use, 1, 1] / b[use] ** 2 - 2 * cov[use, 0, 1] / (a[use] * b[use])
    var = np.where(np.isfinite(var), var, np.nan)
    weights = 1.0 / np.maximum(var, 1e-12) if np.all(np.isfinite(var)) and np.all(var > 1e-12) else np.ones_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sm = _statsmodels()
        res = sm.WLS(y, sm.add_constant(x), weights=weights).fit()
        lo, hi = np.asarray(res.conf_int(alpha=1 - LEVEL))[1]
    return {
        "k": float(res.params[1]),
        "k_lo": float(lo),
        "k_hi": float(hi),
        "k_se": float(res.bse[1]),
        "n_lam": int(use.sum()),
    }


def fit_layers(
    lams: Sequence[float], depths: Sequence[float], act: np.ndarray, gram: np.ndarray
) -> dict[str, np.ndarray]:
    """All per-(layer, λ) fits and per-layer exponents.

    ``depths`` are LEWC's exponents per layer (ℓ, or ℓ_eff after normalisation; NaN where LEWC predicts
    none, which makes that layer's LEWC prediction and its cosine NaN).

    ``act`` is the coordinate subsample (λ, layer, sample, unit); ``gram`` the per-image Gram terms
    (λ, layer, image, 6). Returns arrays keyed by name, shaped (layer, λ[, …]) or (layer,).
    """
    lams = list(lams)
    i0, i1 = lams.index(0.0), lams.index(1.0)
    n_lam, n_layer = len(lams), len(depths)
    out = {key: np.full((n_layer, n_lam), np.nan) for key in LAYER_LAM_KEYS}
    out["coef_ci"] = np.full((n_layer, n_lam, 2, 2), np.nan)
    out["coef_cov"] = np.full((n_layer, n_lam, 2, 2), np.nan)
    gram_sum = gram.sum(axis=2)
    for li, depth in enumerate(depths):
        moments = image_moments(act[:, li], act[i0, li], act[i1, li])  # all λ at once
        for j, lam in enumerate(lams):
            fit = ols_clustered({key: value[j] for key, value in moments.items()})
            out["coef_a"][li, j], out["coef_b"][li, j] = fit["coef"]
            out["coef_ci"][li, j], out["coef_cov"][li, j], out["r2"][li, j] = fit["ci"], fit["cov"], fit["r2"]
            coef_full, r2_full = ols_from_gram(gram_sum[j, li])
            out["coef_a_full"][li, j], out["coef_b_full"][li, j] = coef_full
            out["r2_full"][li, j] = r2_full
            pred = predictions(lam, depth)
            out["pred_a_lewc"][li, j], out["pred_b_lewc"][li, j] = pred["lewc"]
            for name, (ca, cb) in pred.items():
                cos_img, _ = prediction_errors(gram[j, li], ca, cb)
                _, rel_all = prediction_errors(gram_sum[j, li], ca, cb)
                out[f"cos_{name}"][li, j] = np.nanmean(cos_img) if np.isfinite(cos_img).any() else np.nan
                out[f"rel_err_{name}"][li, j] = rel_all
    exps = [
        effective_exponent(lams, np.stack([out["coef_a"][li], out["coef_b"][li]], 1), out["coef_cov"][li])
        for li in range(n_layer)
    ]
    for key in ("k", "k_lo", "k_hi", "k_se"):
        out[key] = np.array([e[key] for e in exps])
    return out


def coefficients_from_gram(g: np.ndarray) -> np.ndarray:
    """(a, b) of the no-intercept regression m ≈ a·f_A + b·f_B from summed Gram terms (…, 6) → (…, 2).

    Vectorised closed form of the 2×2 normal equations. Where the endpoints' outputs are collinear
    (cosine above ``COLLINEAR_COS``) only a + b is identified: it is returned split equally, and
    ``collinear_endpoints`` says where that happened (for f_A = f_B, a + b = ⟨m, f⟩/⟨f, f⟩).
    """
    aa, bb, ab, ma, mb = g[..., AA], g[..., BB], g[..., AB], g[..., MA], g[..., MB]
    det = aa * bb - ab * ab
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (bb * ma - ab * mb) / det
        b = (aa * mb - ab * ma) / det
        shared = (ma + mb) / (aa + bb + 2 * ab)  # m ≈ c·(f_A + f_B): a = b = c when f_A ∥ f_B
    collinear = collinear_endpoints(g)
    a = np.where(collinear, shared, a)
    b = np.where(collinear, shared, b)
    return np.stack([a, b], axis=-1)


def collinear_endpoints(g: np.ndarray) -> np.ndarray:
    """True where the endpoints' outputs (summed Gram terms, …, 6) are collinear or one is zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = g[..., AB] / np.sqrt(g[..., AA] * g[..., BB])
    return ~(np.abs(cos) < COLLINEAR_COS)  # NaN (a zero output) counts as degenerate


def weight_depths(exponents: Sequence[float], depths: Sequence[float]) -> np.ndarray:
    """The exponents that set ``weighting_exponent``'s λ-weights: LEWC's (ℓ_eff) where it predicts one,
    the layer's ℓ where it does not (the weights are only a model of the fit's precision there)."""
    exponents = np.asarray(exponents, dtype=np.float64)
    return np.where(np.isfinite(exponents), exponents, np.asarray(depths, dtype=np.float64))


def weighting_exponent(lams: Sequence[float], coef: np.ndarray, depths: Sequence[float] | None = None) -> np.ndarray:
    """k: slope of log(a/b) on log((1-λ)/λ) (with intercept) over interior λ with a, b > 0.

    ``coef`` is (…, λ, 2); returns (…). LEWC predicts k = ℓ, LLFC k = 1; the intercept absorbs a
    constant A/B scale difference, so k is the scale-free *weighting* of the two endpoints. Needs
    at least three usable λ (NaN otherwise).

    With ``depths`` (ℓ of each layer, the axis just before λ) the slope is weighted least squares
    with w(λ) = 1/Var[log(a/b)] predicted for coefficients (1-λ)^ℓ, λ^ℓ that carry an error of a
    fixed fraction of the merged output, (c_a + c_b)·δ (what cross terms between the endpoints add):
    w ∝ 1/[(c_a + c_b)²(1/c_a² + 1/c_b²)]. At λ = 0.1 for ℓ = 4 the LEWC coefficient of B is 10⁻⁴
    and w is 10⁻⁷ of its value at ½, so k no longer hinges on coefficients of that size (an
    unweighted fit over the grid did). Exact constructions give the same k either way.
    """
    lam = np.asarray(lams, dtype=np.float64)
    interior = (lam > 0) & (lam < 1)
    a, b = coef[..., interior, 0], coef[..., interior, 1]
    x = np.broadcast_to(np.log((1 - lam[interior]) / lam[interior]), a.shape)
    if depths is None:
        w = np.ones(a.shape)
    else:
        ca, cb = lewc_weights(lam[interior][None], np.asarray(depths, dtype=np.float64)[:, None])  # (layer, λ)
        w = np.broadcast_to(1.0 / ((ca + cb) ** 2 * (1 / ca**2 + 1 / cb**2)), a.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(a / b)
    ok = (a > 0) & (b > 0) & np.isfinite(y)
    n = ok.sum(-1)
    w = np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * np.where(ok, x, 0)).sum(-1) / w.sum(-1)
        ym = (w * np.where(ok, y, 0)).sum(-1) / w.sum(-1)
        dx = np.where(ok, x - xm[..., None], 0)
        dy = np.where(ok, y - ym[..., None], 0)
        k = (w * dx * dy).sum(-1) / (w * dx * dx).sum(-1)
    return np.where(n >= 3, k, np.nan)
