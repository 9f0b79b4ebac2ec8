"""The exponent LEWC predicts after normalisation (docs/conventions.md), read off the traced graph, and the
claims judged against it: BatchNorm networks' positive controls PASS, their rivals do not."""

from __future__ import annotations

import math
import re

import bn_construction as bc
import numpy as np
import pytest
import torch
from torch import nn

from lewc.models import build
from lewc.models.effective import effective_depths
from lewc.stats import claims
from lewc.stats.claims import FAIL, NOT_APPLICABLE, PASS

X = torch.randn(2, *bc.IN_SHAPE, generator=torch.Generator().manual_seed(0))
LEWC_CLAIMS = ("lewc_weighting", "lewc_magnitude", "ensemble_equivalence", "lewc_temperature")


def depths(name, norm, reestimate=True, **kw):
    model = build(name, 1, bc.N_CLASSES, bc.IN_SHAPE, norm=norm, bias=True, **kw)
    return effective_depths(model, X, reestimate_bn=reestimate)


def test_normalisation_free_chains_keep_their_depth():
    for name, kw in (("mlp", {"base_width": 8, "depth": 3}), ("vgg11", {"base_width": 4})):
        model = build(name, 1, bc.N_CLASSES, bc.IN_SHAPE, norm="none", bias=True, **kw)
        k, why = effective_depths(model, X)
        assert k == [float(s.depth) for s in model.layers()] and not any(why)


def test_batchnorm_restarts_the_exponent_and_residual_sums_of_equal_exponents_keep_it():
    assert depths("mlp", "bn", base_width=8, depth=3)[0] == [1, 1, 1, 2]
    assert depths("vgg11", "bn", base_width=4)[0] == [1] * 8 + [2]
    # ResNet-20: stem, 9 blocks (branch and projection/identity both end in a BN: 1 + 1 = 1), head 2
    assert depths("resnet20", "bn", base_width=2)[0] == [1] * 10 + [2]


@pytest.mark.parametrize(
    "name, norm, reestimate, reason",
    [
        ("resnet20", "none", True, "residual sum"),  # branch (1-λ)^(k+2) + identity (1-λ)^k
        ("resnet20", "ln", True, "LayerNorm"),
        ("vgg11", "bn", False, "not re-estimated"),
    ],
)
def test_no_prediction_where_the_theory_makes_none(name, norm, reestimate, reason):
    k, why = depths(name, norm, reestimate, base_width=2 if name == "resnet20" else 4)
    assert math.isnan(k[-1]) and reason in why[-1]


def test_a_traced_residual_module_is_read_off_its_graph():
    class Block(nn.Module):
        def __init__(self, norm: bool):
            super().__init__()
            self.inp = nn.Linear(6, 8)
            self.f1, self.f2 = nn.Linear(8, 8), nn.Linear(8, 8)
            self.n0, self.n2 = (nn.BatchNorm1d(8), nn.BatchNorm1d(8)) if norm else (nn.Identity(), nn.Identity())
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.n0(self.inp(x)))
            h = torch.relu(self.n2(self.f2(torch.relu(self.f1(h)))) + h)
            return self.head(h)

    from lewc.models.traced import TracedModel

    x = torch.randn(4, 6)
    k, _ = effective_depths(TracedModel(Block(True), x), x)
    assert k == [1, 2, 1, 2]  # inp+BN; f1 after it; the join of two BN outputs; head
    k, why = effective_depths(TracedModel(Block(False), x), x)
    assert k[:2] == [1, 2] and math.isnan(k[2]) and "3, 1" in why[2]


@pytest.fixture(scope="module", params=[("resnet20", 2), ("vgg11", 4)], ids=["resnet20-bn", "vgg11-bn"])
def bn_pair(request):
    return bc.run(*request.param, n_train=800, align=("none", "weights")), bc.LAMS


def test_the_construction_is_exact_lewc_at_the_effective_depth(bn_pair):
    result, _ = bn_pair
    res = result.controls["positive"]
    lam, k = res.lam.values[:, None], res.depth_eff.values[None]
    # the merged layer is (1-λ)^k f(A) + λ^k f(B), k = depth_eff, not k = ℓ (up to BN's ε, which matters
    # only where (1-λ)² × a channel's spread nears √ε: not on this grid)
    assert np.allclose(res.coef_a_full.transpose("lam", "layer").values, (1 - lam) ** k, atol=0.01)
    assert np.allclose(res.coef_b_full.transpose("lam", "layer").values, lam**k, atol=0.01)
    by_ell = (1 - lam) ** res.depth.values[None]
    assert not np.allclose(res.coef_a_full.transpose("lam", "layer").values, by_ell, atol=0.1)


def test_bn_positive_control_passes_every_lewc_claim_and_its_rivals_do_not(bn_pair):
    result, _ = bn_pair
    positive = {c.id: c for c in result.control_claims["positive"]}
    negative = {c.id: c for c in result.control_claims["negative"]}
    matched = {c.id: c for c in result.align_claims["weights"]}
    for cid in LEWC_CLAIMS:
        assert positive[cid].verdict == PASS, (cid, positive[cid].note)
        assert PASS not in (negative[cid].verdict, matched[cid].verdict) or cid == "ensemble_equivalence", cid
    assert negative["lewc_magnitude"].verdict == FAIL and negative["lewc_temperature"].verdict == FAIL
    assert matched["lewc_temperature"].verdict == FAIL
    ratio = re.search(r"ratio (\S+) against", positive["lewc_temperature"].note)
    assert ratio and abs(float(ratio.group(1)) - 2.0) < 0.05  # 2^(L_eff − 1) with L_eff = 2


def temperature_dataset(scale: float, depth_eff: float, n: int = 400, seed: int = 0):
    """Calibration logits where the merged model at ½ is ``scale`` × the plain ensemble ½(z_A + z_B)."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    za, zb = (rng.normal(0, 1, (n, 5)) + 2.0 * np.eye(5)[y] for _ in range(2))
    lams = [0.0, 0.5, 1.0]
    z = np.stack([za, scale * (za + zb) / 2, zb])
    return xr.Dataset(
        {"logits_calib": (("lam", "calib_image", "class"), z), "labels_calib": (("calib_image",), y)},
        coords={"lam": lams},
        attrs={"total_depth_eff": depth_eff, "total_depth_eff_reason": ""},
    )


@pytest.mark.parametrize(
    "scale, depth_eff, expected",
    [
        (2.0**-3, 4.0, PASS),  # exact LEWC of a bias-free 3-hidden-layer chain: ratio 2^(L−1) = 8
        (2.0**-1, 2.0, PASS),  # exact LEWC after BatchNorm: L_eff = 2
        (1.0, 4.0, FAIL),  # LLFC: the merged model is the plain ensemble
        (2.0**-1, 4.0, FAIL),  # an exponent growing slower than L: s = 1/3
    ],
)
def test_temperature_claim_separates_lewc_from_llfc(scale, depth_eff, expected):
    res = temperature_dataset(scale, depth_eff)
    claim = claims.get_claim("lewc_temperature")
    point, _ = claim.statistic(res, None)
    reps, _ = claim.statistic(res, claims.Resampler(200, 0))
    ci = np.percentile(reps, [2.5, 97.5])
    assert claims.decide(point[0], ci, claim.spec.threshold, claim.spec.direction) == expected


@pytest.mark.parametrize("depth_eff", [1.0, float("nan")])
def test_temperature_claim_is_not_applicable_where_lewc_and_llfc_coincide_or_lewc_is_silent(depth_eff):
    res = temperature_dataset(1.0, depth_eff)
    res.attrs["total_depth_eff_reason"] = "a residual sum"
    point, note = claims.get_claim("lewc_temperature").statistic(res, None)
    assert np.isnan(point).all() and note.startswith(claims.NA_PREFIX)
    (claim,) = claims.evaluate_claims(res, n_boot=50, ids=["lewc_temperature"])
    assert claim.verdict == NOT_APPLICABLE and claim.note == note  # a state of its own, with the reason
