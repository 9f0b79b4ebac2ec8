"""Barriers and bootstrap counts on hand-computed values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lewc.stats import barriers

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
