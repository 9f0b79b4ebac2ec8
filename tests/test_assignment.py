"""The device's assignment solver (lewc.align.assignment.auction) against scipy's exact one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakecuda import FakeCuda
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from lewc.align import assignment
from lewc.align.methods import spec_for, weight_matching
from lewc.models import build
from lewc.sweep.merge import model_state

SETTINGS = settings(max_examples=40, deadline=None)


def _value(cost: np.ndarray, col: np.ndarray) -> float:
    return float(cost[np.arange(len(col)), col].sum())


def _check_optimal(cost: np.ndarray, col: np.ndarray) -> None:
    assert sorted(col.tolist()) == list(range(len(cost)))  # a permutation
    best = _value(cost, linear_sum_assignment(cost, maximize=True)[1])
    bound = len(cost) * assignment.AUCTION_EPS * max(float(np.abs(cost).max()), 1e-300)
    assert _value(cost, col) >= best - bound - 1e-9 * abs(best)  # within n·ε of the optimum (module doc)


@SETTINGS
@given(st.integers(1, 40), st.integers(0, 2**31 - 1), st.sampled_from(["normal", "planted", "scaled"]))
def test_the_auction_reaches_scipys_optimum_and_its_permutation_where_unique(n, seed, kind):
    gen = torch.Generator().manual_seed(seed)
    cost = torch.randn(n, n, generator=gen, dtype=torch.float64)
    if kind == "planted":
        cost += 3 * torch.eye(n, dtype=torch.float64)[torch.randperm(n, generator=gen)]
    elif kind == "scaled":
        cost *= 1e-8  # the tolerance is relative: tiny costs are solved as exactly as large ones
    col = assignment.auction(cost).numpy()
    _check_optimal(cost.numpy(), col)
    # continuous random costs have a unique optimum (ties have probability 0): the same permutation
    assert np.array_equal(col, linear_sum_assignment(cost.numpy(), maximize=True)[1])


@SETTINGS
@given(st.integers(2, 25), st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_the_auction_is_optimal_on_integer_costs_full_of_ties(n, seed, levels):
    """Few distinct values: many optimal assignments; the auction finds one of them (the same sum)."""
    rng = np.random.default_rng(seed)
    cost = rng.integers(0, levels + 1, size=(n, n)).astype(np.float64)
    col = assignment.auction(torch.from_numpy(cost)).numpy()
    _check_optimal(cost, col)
    assert _value(cost, col) == _value(cost, linear_sum_assignment(cost, maximize=True)[1])


@SETTINGS
@given(st.integers(2, 30), st.integers(0, 2**31 - 1), st.floats(0, 3), st.floats(0, 0.5))
def test_any_warm_start_gives_the_same_optimum(n, seed, spread, moved):
    """Prices and an assignment from another matrix (or arbitrary ones) change the work, never the
    guarantee: warm-started from a solve of ``cost``, then asked to solve ``cost`` moved by ``moved``."""
    gen = torch.Generator().manual_seed(seed)
    cost = torch.randn(n, n, generator=gen, dtype=torch.float64)
    prices = torch.randn(n, generator=gen, dtype=torch.float64) * spread
    current = assignment.auction(cost, prices=prices).numpy()
    cost = cost + moved * torch.randn(n, n, generator=gen, dtype=torch.float64)
    start = assignment.warm_start(cost, prices, current)
    assert assignment.WARM_START <= start <= 0.5
    _check_optimal(cost.numpy(), assignment.auction(cost, prices=prices, start=start).numpy())


def test_degenerate_matrices():
    assert assignment.auction(torch.zeros(5, 5)).tolist() == list(range(5))
    assert assignment.auction(torch.ones(1, 1)).tolist() == [0]
    with pytest.raises(ValueError, match="square"):
        assignment.auction(torch.zeros(2, 3))


def test_weight_matching_on_the_device_gives_the_cpus_permutations():
    """On the (fake) device weight matching solves with the warm-started auction; the permutations, pass
    count and objective are those of scipy's solver on the CPU."""
    in_shape = (1, 8, 8)
    torch.manual_seed(0)
    a, b = (build("mlp", 1, 10, in_shape, base_width=12).eval() for _ in range(2))
    spec = spec_for(a, in_shape)
    cpu = weight_matching(spec, model_state(a), model_state(b))
    solved = {"auction": 0}
    real = assignment.auction

    def counting(*args, **kwargs):
        solved["auction"] += 1
        return real(*args, **kwargs)

    with FakeCuda():
        a_dev, b_dev = a.to("cuda"), b.to("cuda")
        assignment.auction, saved = counting, assignment.auction
        try:
            dev = weight_matching(spec, model_state(a_dev), model_state(b_dev))
        finally:
            assignment.auction = saved
    assert solved["auction"] == dev.assignments > 0
    assert dev.passes == cpu.passes and all(np.array_equal(p, q) for p, q in zip(dev.perms, cpu.perms, strict=True))
    assert dev.objective_after == pytest.approx(cpu.objective_after, rel=1e-12)
