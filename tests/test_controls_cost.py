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
