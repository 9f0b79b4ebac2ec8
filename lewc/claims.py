"""The verdicts: each claim of the paper, its statistic, its threshold and the reason for it.

Every threshold lives in ``THRESHOLDS`` with its reason. A verdict is decided by the confidence
interval, not the point estimate: PASS when the whole interval is on the claim's side of the
threshold, FAIL when the whole interval is on the other side, INCONCLUSIVE otherwise. A FAIL is a
scientific outcome (narrow models, weak weight decay), not an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from lewc import barriers, fit

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"

THRESHOLDS: dict[str, dict] = {
    "lmc_accuracy": {
        "threshold": 3.0,
        "direction": "below",
        "units": "pp",
        "reason": "largest accuracy barrier the paper reports as permutation-free LMC "
        "(ResNet-20 ×32 / CIFAR-10: 2.69 pp, Table 1), rounded up",
    },
    "lmc_loss_calibrated": {
        "threshold": 0.1,
        "direction": "below",
        "units": "nats",
        "reason": "largest calibrated loss barrier the paper reports as LMC (ResNet-20 ×32: 0.087), rounded up",
    },
    "lewc_layerwise": {
        "threshold": 0.5,
        "direction": "above",
        "units": "slope of k_ℓ vs ℓ",
        "reason": "LEWC predicts k_ℓ = ℓ (slope 1), LLFC predicts k_ℓ = 1 (slope 0); 0.5 is the midpoint",
    },
    "lewc_beats_llfc": {
        "threshold": 0.5,
        "direction": "above",
        "units": "fraction of (layer, λ≠½) won",
        "reason": "LEWC must predict the merged layer outputs better (lower relative error) than LLFC "
        "in a majority of layers with ℓ > 1 and interior λ ≠ ½",
    },
    "ensemble_equivalence": {
        "threshold": 0.95,
        "direction": "above",
        "units": "top-1 agreement at λ = ½",
        "reason": "the merged model should act as the logit ensemble: at least 95% of test images "
        "get the same top-1 class as the LEWC ensemble",
    },
    "weak_additivity": {
        "threshold": 0.0,
        "direction": "above",
        "units": "mean cosine excess over Gaussian baseline at λ = ½",
        "reason": "weak additivity only supports LEWC where it exceeds the independent-Gaussian baseline",
    },
    "reciprocal_orthogonality": {
        "threshold": 0.5,
        "direction": "below",
        "units": "median ‖W_B z_A‖/‖W_A z_A‖ over layers",
        "reason": "cross terms at most half the size of the own-model terms",
    },
}

STATEMENTS = {
    "lmc_accuracy": "Without permutation, the accuracy barrier at λ = ½ is small",
    "lmc_loss_calibrated": "After temperature calibration, the loss barrier at λ = ½ is small",
    "lewc_layerwise": "The effective exponent k_ℓ of log(a/b) vs log((1-λ)/λ) grows with depth ℓ",
    "lewc_beats_llfc": "LEWC predicts merged layer outputs better than LLFC at λ ≠ ½",
    "ensemble_equivalence": "The merged model agrees with the LEWC logit ensemble",
    "weak_additivity": "Weak additivity holds beyond the independent-Gaussian baseline",
    "reciprocal_orthogonality": "Reciprocal orthogonality: W_B z_A ≈ 0 and W_A z_B ≈ 0",
}


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


def decide(value: float, ci: list[float], threshold: float, direction: str) -> str:
    """PASS / FAIL / INCONCLUSIVE from a confidence interval relative to a threshold."""
    lo, hi = ci
    if not np.isfinite(value):
        return INCONCLUSIVE
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo = hi = value  # no interval available: the point decides, and the note says so
    if direction == "below":
        return PASS if hi <= threshold else FAIL if lo > threshold else INCONCLUSIVE
    return PASS if lo > threshold else FAIL if hi <= threshold else INCONCLUSIVE


def _claim(cid: str, value: float, ci, note: str = "") -> Claim:
    spec = THRESHOLDS[cid]
    ci = [float(c) for c in ci]
    return Claim(
        cid,
        STATEMENTS[cid],
        decide(float(value), ci, spec["threshold"], spec["direction"]),
        float(value),
        ci,
        spec["threshold"],
        spec["direction"],
        spec["units"],
        spec["reason"],
        note,
    )


def _bootstrap_ci(reps: np.ndarray) -> list[float]:
    reps = reps[np.isfinite(reps)]
    return [float(v) for v in np.percentile(reps, [2.5, 97.5])] if reps.size else [float("nan")] * 2


def evaluate_claims(res: xr.Dataset, n_boot: int = 400) -> list[Claim]:
    """All claims for one pair's results Dataset."""
    lams = [float(v) for v in res.lam.values]
    mid = barriers.mid_index(lams)
    out = []
    b = res["barrier"].sel(barrier_name="acc_mid")
    out.append(_claim("lmc_accuracy", b, res["barrier_ci"].sel(barrier_name="acc_mid").values))
    raw = float(res["barrier"].sel(barrier_name="loss_mid_raw"))
    b = res["barrier"].sel(barrier_name="loss_mid_cal")
    out.append(
        _claim(
            "lmc_loss_calibrated",
            b,
            res["barrier_ci"].sel(barrier_name="loss_mid_cal").values,
            f"raw (β = 1) loss barrier {raw:.4f}; calibration changed it by {float(b) - raw:+.4f}",
        )
    )
    if "exponent" in res:
        trend = json.loads(res.attrs["exponent_trend"])
        ks = ", ".join(f"{n}: {k:.2f}" for n, k in zip(res.layer.values, res.exponent.values, strict=True))
        out.append(
            _claim(
                "lewc_layerwise",
                trend["slope"],
                [trend["lo"], trend["hi"]],
                f"k_ℓ per layer ({ks}); CI from WLS over {trend['n_layers']} layers",
            )
        )
        depths = [int(d) for d in res.depth.values]
        gram = res["gram"].values  # (lam, layer, image, 6)
        value = fit.lewc_win_fraction(lams, depths, gram.sum(axis=2))
        counts = barriers.bootstrap_counts(gram.shape[2], n_boot, seed=0)
        resampled = np.einsum("ri,lkit->rlkt", counts, gram, optimize=True)
        reps = fit.lewc_win_fraction(lams, depths, resampled)
        out.append(
            _claim(
                "lewc_beats_llfc",
                value,
                _bootstrap_ci(np.asarray(reps)),
                "relative error ‖m − p‖/‖m‖ over all evaluated images; CI: bootstrap over images",
            )
        )
        wa = res["weak_additivity"].isel(lam=mid) - res["weak_additivity_baseline"].isel(lam=mid)
        wa = wa.values[np.isfinite(wa.values)]
        if wa.size:
            ci = [float(wa.min()), float(wa.max())]
            out.append(
                _claim(
                    "weak_additivity",
                    float(wa.mean()),
                    ci,
                    "interval: min to max over ReLU layers (not a confidence interval)",
                )
            )
        ro = np.concatenate([res["ro_b_on_a"].values, res["ro_a_on_b"].values])
        ro = ro[np.isfinite(ro)]
        out.append(
            _claim(
                "reciprocal_orthogonality",
                float(np.median(ro)),
                [float(np.percentile(ro, 25)), float(np.percentile(ro, 75))],
                "interval: inter-quartile range over layers and both directions",
            )
        )
    agree = res["ens_agree_per_image"].sel(kind="lewc").isel(lam=mid).values.astype(np.float64)
    reps = barriers.bootstrap_means(agree[None, :], n_boot, seed=1)[:, 0]
    out.append(
        _claim(
            "ensemble_equivalence",
            agree.mean(),
            _bootstrap_ci(reps),
            f"plain-ensemble agreement {float(res['ens_agreement'].sel(kind='plain').isel(lam=mid)):.4f}; "
            "CI: bootstrap over images",
        )
    )
    return out


def claims_as_dicts(claims: list[Claim]) -> list[dict]:
    return [asdict(c) for c in claims]
