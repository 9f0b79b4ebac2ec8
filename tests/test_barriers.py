"""Barriers and the conditions' baseline on hand-computed values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lewc import barriers, conditions

LAMS = [0.0, 0.5, 1.0]


def test_barriers_on_hand_computed_values():
    acc = np.array([90.0, 70.0, 80.0])
    loss = np.array([0.3, 1.0, 0.5])
    np.testing.assert_allclose(barriers.barrier_curve(LAMS, acc, higher_is_better=True), [0, 15, 0])
    np.testing.assert_allclose(barriers.barrier_curve(LAMS, loss, higher_is_better=False), [0, 0.6, 0])


@settings(max_examples=30, deadline=None)
@given(a=st.floats(0, 5), b=st.floats(0, 5), slope=st.floats(-3, 3))
def test_a_metric_linear_in_lambda_has_no_barrier(a, b, slope):
    lams = np.linspace(0, 1, 11)
    values = a + (b - a) * lams
    for higher in (True, False):
        np.testing.assert_allclose(barriers.barrier_curve(lams, values, higher), 0, atol=1e-12)


def test_summarize_reports_signed_barriers_with_cis_that_contain_them():
    rng = np.random.default_rng(0)
    n = 2000
    correct = np.stack([rng.random(n) < p for p in (0.9, 0.8, 0.92)])
    loss = np.stack([rng.exponential(m, n) for m in (0.3, 0.2, 0.3)])  # merged *better*: negative barrier
    out = barriers.summarize(LAMS, correct, loss, loss, n_boot=300)
    assert out["loss_mid_raw"]["value"] < 0
    for key in ("acc_mid", "loss_mid_raw", "loss_mid_cal"):
        lo, hi = out[key]["ci"]
        assert lo <= out[key]["value"] <= hi
    assert out["acc_mid"]["value"] == pytest.approx(100 * (correct[[0, 2]].mean() - correct[1].mean()), abs=1e-9)


def test_bootstrap_counts_resample_every_image_n_times_in_total():
    counts = barriers.bootstrap_counts(500, 40, seed=1)
    assert counts.shape == (40, 500) and (counts.sum(1) == 500).all()
    assert not np.array_equal(counts[0], counts[1])


def test_weak_additivity_gaussian_baseline_is_about_0_93_at_half():
    base = conditions.gaussian_baseline([0.5], [3], np.array([1.0]), np.array([1.0]))
    assert base[0, 0] == pytest.approx(0.9307, abs=3e-3)
    edge = conditions.gaussian_baseline([0.0, 1.0], [3], np.array([1.0]), np.array([2.0]))
    np.testing.assert_allclose(edge, 1.0)


def test_weak_additivity_baseline_uses_the_lewc_weights_of_the_layer_depth():
    rng = np.random.default_rng(0)
    za, zb = rng.standard_normal(400_000), rng.standard_normal(400_000)
    for ell in (1, 3):
        ca, cb = 0.7**ell, 0.3**ell
        u = np.maximum(ca * za + cb * zb, 0)
        v = ca * np.maximum(za, 0) + cb * np.maximum(zb, 0)
        direct = u @ v / np.sqrt((u @ u) * (v @ v))
        base = conditions.gaussian_baseline([0.3], [ell], np.array([1.0]), np.array([1.0]))[0, 0]
        assert base == pytest.approx(direct, abs=2e-3)
    deep, shallow = (conditions.gaussian_baseline([0.3], [d], np.ones(1), np.ones(1))[0, 0] for d in (3, 1))
    assert deep > shallow + 0.01  # a more lopsided mixture is closer to additive
