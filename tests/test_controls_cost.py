"""The controls at a fraction of their old cost, with the same numbers and verdicts.

* negative control (A with itself): one pass of A per batch serves every λ (θ(λ) = θ_A bit for bit);
* positive control (bias-free A and B in disjoint blocks of a 2× network): composed from the two
  endpoints' passes (lewc.sweep.blocks) instead of running the wide network at every λ.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lewc.align import controls
from lewc.pipeline.analysis import analyze
from lewc.stats.claims import evaluate_claims
from lewc.sweep.blocks import BlockPair, block_pair
from lewc.sweep.merge import Pair
from lewc.sweep.path import SweepOptions
from lewc.training import checkpoints

LAMS = [0.0, 0.25, 0.5, 0.75, 1.0]
OPTS = SweepOptions(n_test=300, bn_images=64, progress=False, batch_size=100)


@pytest.fixture(scope="module")
def endpoints(trained_pair):
    (a, meta_a), (b, meta_b) = (checkpoints.load(p) for p in trained_pair)
    return a, b, meta_a, meta_b


def _same(res_fast, res_slow, rtol=1e-4, atol=1e-5):
    assert [c.verdict for c in evaluate_claims(res_fast)] == [c.verdict for c in evaluate_claims(res_slow)]
    for name, var in res_slow.data_vars.items():
        if np.issubdtype(var.dtype, np.floating):
            np.testing.assert_allclose(res_fast[name].values, var.values, rtol=rtol, atol=atol, err_msg=name)


def test_the_negative_control_is_one_pass_and_the_same_numbers(endpoints, synthetic, monkeypatch):
    a, _, meta_a, _ = endpoints
    calls = {"n": 0}
    forward = Pair.forward

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Pair, "forward", counting)
    fast = analyze(Pair(a, a, meta_a, meta_a), synthetic, LAMS, OPTS, {})
    fast_calls, calls["n"] = calls["n"], 0
    slow = analyze(Pair(a, copy.deepcopy(a), meta_a, meta_a), synthetic, LAMS, OPTS, {})
    assert fast_calls * 3 < calls["n"]  # one forward per batch instead of one per λ (and per endpoint)
    _same(fast, slow, rtol=0)


def test_the_positive_control_is_composed_from_the_endpoints_passes(endpoints, synthetic):
    a, b, meta_a, meta_b = endpoints
    probe = synthetic.normalize(synthetic.test.x[:64])
    wa, wb, ma, mb, note = controls.disjoint_block_pair(a, b, meta_a, meta_b, probe)
    assert note.startswith("exact LEWC")
    pair = Pair(wa, wb, ma, mb)
    assert isinstance(block_pair(pair, probe), BlockPair)
    fast = analyze(pair, synthetic, LAMS, OPTS, {"control": "positive"})
    for m in (wa, wb):
        object.__delattr__(m, "lewc_block_source")  # the 2× network, run at every λ as before
    slow = analyze(Pair(wa, wb, ma, mb), synthetic, LAMS, OPTS, {"control": "positive"})
    _same(fast, slow, atol=1e-3)  # the exact identity's residuals are float rounding (≈ 1e-4) either way


def test_a_composition_that_does_not_match_falls_back_to_the_wide_network(endpoints, synthetic):
    a, b, meta_a, meta_b = endpoints
    probe = synthetic.normalize(synthetic.test.x[:64])
    wa, wb, ma, mb, _ = controls.disjoint_block_pair(a, b, meta_a, meta_b, probe)
    wrong = copy.deepcopy(wa.lewc_block_source)
    with torch.no_grad():
        next(wrong.parameters()).mul_(1.5)
    object.__setattr__(wa, "lewc_block_source", wrong)
    assert not isinstance(block_pair(Pair(wa, wb, ma, mb), probe), BlockPair)


@pytest.fixture(scope="module")
def bn_resnet():
    """A small trained BN ResNet-20 pair (projection shortcuts) on bn_construction's data, and that data."""
    import bn_construction as bc

    from lewc.pipeline.api import device_dataset

    train_data, test_data = bc.make_data(600, 0), bc.make_data(200, 1)
    a, b = (bc.train("resnet20", 2, s, train_data, epochs=2) for s in (0, 1))
    ds = device_dataset(train_data, test_data, bc.N_CLASSES, torch.device("cpu"), n_calib=100)
    return a, b, bc.meta("resnet20", 2, 0), bc.meta("resnet20", 2, 1), ds


def test_a_bn_positive_control_is_composed_and_matches_the_wide_network(bn_resnet):
    """With BN re-estimated per λ the control is composed from A's and B's passes (one re-estimation of
    each), and gives the wide network's numbers and verdicts."""
    a, b, meta_a, meta_b, ds = bn_resnet
    probe = ds.normalize(ds.test.x[:64])
    wa, wb, ma, mb, note = controls.disjoint_block_pair(a, b, meta_a, meta_b, probe)
    assert note.startswith("exact LEWC") and "BN ε 1e-20" in note
    opts = SweepOptions(n_test=200, bn_images=128, progress=False, batch_size=100, bn_batch=64)
    lams = [0.0, 0.1, 0.5, 0.9, 1.0]
    from lewc.sweep.batchnorm import reestimation_images

    images = reestimation_images(ds, 128)
    composed = block_pair(Pair(wa, wb, ma, mb), probe, lams, images, ds)
    assert isinstance(composed, BlockPair)
    # the exponents read off the probe: the stem and every block restart at 1 after BN, the head is 2
    outs = [p for p, _ in composed.layout[3::3]]
    assert outs == [1] * 10 + [2] and composed.layout[0] == (2, False)
    fast = analyze(Pair(wa, wb, ma, mb), ds, lams, opts, {"control": "positive"})
    for m in (wa, wb):
        object.__delattr__(m, "lewc_block_source")
    slow = analyze(Pair(wa, wb, ma, mb), ds, lams, opts, {"control": "positive"})
    _same(fast, slow, atol=1e-3)
    # without re-estimation a BN network's control is approximate, and the wide network runs
    *_, note = controls.disjoint_block_pair(a, b, meta_a, meta_b, probe, reestimate_bn=False)
    assert note.startswith("approximate LEWC") and "not re-estimated" in note


def test_the_probe_checks_every_lambda_of_the_grid(endpoints, synthetic, monkeypatch):
    """A composition right at λ = ½ and wrong elsewhere is refused on the grid, accepted when only ½ is probed."""
    import lewc.sweep.blocks as blocks

    a, b, meta_a, meta_b = endpoints
    probe = synthetic.normalize(synthetic.test.x[:64])
    wa, wb, ma, mb, _ = controls.disjoint_block_pair(a, b, meta_a, meta_b, probe)
    assert isinstance(block_pair(Pair(wa, wb, ma, mb), probe, LAMS), BlockPair)
    monkeypatch.setattr(blocks, "lewc_weights", lambda lam, p: ((1 - lam) ** p * (1.5 - lam), lam**p))
    assert isinstance(block_pair(Pair(wa, wb, ma, mb), probe, [0.5]), BlockPair)
    assert not isinstance(block_pair(Pair(wa, wb, ma, mb), probe, LAMS), BlockPair)
