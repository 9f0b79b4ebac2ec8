"""Intervals over pairs (lewc.stats.pairs) and the paper's per-layer statistics (lewc.reporting.results)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lewc.reporting.results import PAPER_LAMS, lewc_position, paper_statistics
from lewc.stats import claims
from lewc.stats.pairs import COVERS, over_pairs_dataset, t_intervals

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(finite, min_size=2, max_size=12), scale=st.floats(0.1, 10.0), shift=finite)
def test_the_intervals_are_centred_nested_and_move_with_the_data(values, scale, shift):
    """Identities: both intervals are centred on the mean, the new pair's is √(n + 1) times the mean's,
    and an affine change of the values changes the intervals the same way."""
    v = np.array(values)
    over = t_intervals(v)
    n = len(v)
    assert over.n == n and over.mean == pytest.approx(v.mean(), abs=1e-9)
    for lo, hi in (over.ci, over.prediction):
        assert (lo + hi) / 2 == pytest.approx(v.mean(), abs=1e-6)
    half_ci, half_new = (over.ci[1] - over.ci[0]) / 2, (over.prediction[1] - over.prediction[0]) / 2
    assert half_ci == pytest.approx(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n), rel=1e-9, abs=1e-9)
    assert half_new == pytest.approx(half_ci * np.sqrt(n + 1), rel=1e-9, abs=1e-9)
    moved = t_intervals(scale * v + shift)
    assert moved.ci[0] == pytest.approx(scale * over.ci[0] + shift, rel=1e-6, abs=1e-6)
    assert moved.prediction[1] == pytest.approx(scale * over.prediction[1] + shift, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_the_t_interval_covers_the_mean_and_the_prediction_interval_a_new_pair_at_95_percent(n):
    """Simulated pairs from one normal law: the mean's t-interval covers the population mean, the
    prediction interval covers a further independent pair, each at its nominal 95% (±4 s.e.)."""
    rng = np.random.default_rng(n)
    trials = 4000
    hits_mean = hits_new = 0
    for _ in range(trials):
        pairs, new = rng.normal(0.08, 0.02, n), rng.normal(0.08, 0.02)
        over = t_intervals(pairs)
        hits_mean += over.ci[0] <= 0.08 <= over.ci[1]
        hits_new += over.prediction[0] <= new <= over.prediction[1]
    tolerance = 4 * np.sqrt(0.95 * 0.05 / trials)  # ±1.4 pp
    assert abs(hits_mean / trials - 0.95) < tolerance
    assert abs(hits_new / trials - 0.95) < tolerance


def test_fewer_than_two_pairs_or_an_undefined_pair_give_no_interval():
    assert np.isnan(t_intervals([0.1]).ci).all() and t_intervals([0.1]).mean == 0.1
    assert np.isnan(t_intervals([0.1, np.nan, 0.2]).prediction).all()


def test_a_verdict_over_two_pairs_uses_the_t_interval_not_the_range_of_the_pairs_drawn():
    """The issue's case: pairs 0.095 and 0.072 with tight image intervals. Resampling the two pairs gave
    about their range; the t-interval over pairs (1 d.f.) is ±0.15 around 0.084 and says n = 2."""
    rng = np.random.default_rng(0)
    points = [0.095, 0.072]
    reps = [rng.normal(p, 0.005, 1000) for p in points]
    value, ci, _ = claims._interval(points, reps, seed=0)
    assert value == pytest.approx(0.0835)
    assert (ci[1] - ci[0]) / 2 == pytest.approx(12.706 * np.std(points, ddof=1) / np.sqrt(2), rel=1e-3)
    assert ci[0] < 0 and ci[1] > 0.2  # not the pairs' range [0.072, 0.095]
    spec = claims.get_claim("lmc_loss_calibrated").spec
    claim = claims._claim(spec, claims.decide(value, ci, spec.threshold, spec.direction), value, ci, "", points)
    assert claim.verdict == claims.INCONCLUSIVE and claim.n_pairs == 2 and claim.covers == COVERS["pairs"]
    assert claim.prediction[0] < ci[0] and claim.prediction[1] > ci[1]
    assert "2 pairs" in claims.over_pairs_note(points) and "one new pair" in claims.over_pairs_note(points)
    # one pair: the image bootstrap, and the claim says it is conditional on the pair
    value, ci, _ = claims._interval(points[:1], reps[:1], seed=0)
    assert ci[0] == pytest.approx(np.percentile(reps[0], 2.5)) and ci[1] - ci[0] < 0.03
    one = claims._claim(spec, "PASS", value, ci, "", points[:1])
    assert one.covers == COVERS["images"] and "conditional on this pair" in one.covers
    assert np.isnan(one.prediction).all()


def test_over_pairs_dataset_reduces_each_cell_and_counts_the_pairs_it_used():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 4, 3))  # width, pair, claim
    values[1, 2, 0] = np.nan  # a failed job
    ds = xr.Dataset({"claim_value": (("width", "pair", "claim"), values)}, coords={"claim": ["a", "b", "c"]})
    out = over_pairs_dataset(ds)
    assert set(out.data_vars) == {"claim_mean", "claim_ci_pairs", "claim_prediction", "claim_n_pairs"}
    assert out.claim_n_pairs.values.tolist() == [[4, 4, 4], [3, 4, 4]]
    for w in range(2):
        for c in range(3):
            v = values[w, :, c]
            over = t_intervals(v[np.isfinite(v)])
            np.testing.assert_allclose(out.claim_ci_pairs.values[w, c], over.ci)
            np.testing.assert_allclose(out.claim_prediction.values[w, c], over.prediction)
    assert out.claim_ci_pairs.attrs["covers"] == COVERS["pairs"]


def _results(lams, depths, k):
    """A results-shaped Dataset with the paper's statistics over (lam, layer)."""
    n_lam, n_layer = len(lams), len(depths)
    cos = np.linspace(0.9, 1.0, n_lam)[:, None] * np.ones((1, n_layer))
    return xr.Dataset(
        {
            "cos_lewc": (("lam", "layer"), cos),
            "cos_llfc": (("lam", "layer"), cos - 0.1),
            "weak_additivity": (("lam", "layer"), np.full((n_lam, n_layer), 0.95)),
            "r2_full": (("lam", "layer"), np.full((n_lam, n_layer), 0.8)),
            "ro_b_on_a": (("layer",), np.full(n_layer, 0.1)),
            "k_gram": (("layer",), np.asarray(k, dtype=float)),
        },
        coords={"lam": lams, "layer": [f"l{i}" for i in range(n_layer)], "depth": ("layer", depths)},
    )


@settings(max_examples=40, deadline=None)
@given(ell=st.integers(2, 40), t=st.floats(-2.0, 3.0))
def test_the_position_is_zero_at_llfc_one_at_lewc_and_linear_in_k(ell, t):
    assert lewc_position(1.0, ell) == 0.0 and lewc_position(float(ell), ell) == pytest.approx(1.0)
    assert lewc_position(1 + t * (ell - 1), ell) == pytest.approx(t, abs=1e-9)
    assert np.isnan(lewc_position(3.0, 1))  # ℓ = 1: both predictions agree, no position


def test_paper_statistics_pick_the_three_lams_and_leave_a_missing_one_undefined():
    ps = paper_statistics(_results([0.0, 0.3, 0.5, 0.7, 1.0], [1, 2, 3], [1.0, 2.0, 2.0]))
    assert list(ps.lam.values) == list(PAPER_LAMS) and ps.cos_lewc.dims == ("lam", "layer")
    np.testing.assert_allclose(ps.cos_lewc.sel(layer="l1").values, np.linspace(0.9, 1.0, 5)[1:4])
    np.testing.assert_allclose(ps.lewc_position.values, [np.nan, 1.0, 0.5])
    assert ps.ro_b_on_a.dims == ("layer",) and "ro_a_on_b" not in ps  # only what the results hold
    coarse = paper_statistics(_results([0.0, 0.25, 0.5, 0.75, 1.0], [1, 2], [1.0, 2.0]))
    assert np.isnan(coarse.cos_lewc.sel(lam=0.3)).all() and np.isfinite(coarse.cos_lewc.sel(lam=0.5)).all()
    assert len(paper_statistics(xr.Dataset({"beta": (("lam",), [1.0, 2.0])})).data_vars) == 0
