"""What LEWC predicts with biases, and what the positive control gives with its biases kept.

The theorem is for bias-free nets. In the disjoint-block construction with biases, block A of the
merged layer ℓ is exactly (1-λ)^ℓ f_ℓ(A with the bias of each layer j divided by (1-λ)^(j−1)):
a merged bias is (1-λ)·b_j while the path through j weight layers carries (1-λ)^j (docs/claims.md).
"""

import copy
import warnings

import pytest
import torch
from constructions import train_small

from lewc.align import controls
from lewc.models import build
from lewc.pipeline.analysis import analyze
from lewc.stats import claims
from lewc.sweep.merge import Pair
from lewc.sweep.path import SweepOptions
from lewc.training.checkpoints import CheckpointMeta

IN_SHAPE = (3, 16, 16)
META = dict(model="mlp", width=1, num_classes=10, in_shape=list(IN_SHAPE), norm="none", bias=True)
META |= dict(base_width=16, depth=3, sha256="0" * 64)
META = CheckpointMeta.record(**META)


def biased_pair(bias_scale: float, seed: int = 0):
    nets = []
    for s in (seed, seed + 1):
        torch.manual_seed(s)
        net = build("mlp", 1, 10, IN_SHAPE, norm="none", bias=True, base_width=16, depth=3).eval()
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, bias_scale)
        nets.append(net)
    return nets


def test_merged_blocks_follow_the_rescaled_bias_formula():
    a, b = biased_pair(0.3)
    probe = torch.randn(8, *IN_SHAPE, generator=torch.Generator().manual_seed(1))
    wide_a, wide_b, *_, note = controls.disjoint_block_pair(a, b, META, META, probe, keep_biases=True)
    assert note.startswith("approximate LEWC") and "biases kept" in note
    torch.testing.assert_close(wide_a(probe), a(probe))  # A' computes A itself, biases included
    lam = 0.3
    sa, sb = wide_a.state_dict(), wide_b.state_dict()
    merged = copy.deepcopy(wide_a)
    merged.load_state_dict({k: (1 - lam) * sa[k] + lam * sb[k] for k in sa})
    rescaled = copy.deepcopy(a)
    with torch.no_grad():
        for j, spec in enumerate(rescaled.layers(), start=1):
            spec.weight_module.bias /= (1 - lam) ** (j - 1)
    _, rec_m = merged(probe, capture=True)
    _, rec_r = rescaled(probe, capture=True)
    _, rec_a = a(probe, capture=True)
    for ell, (m, r, plain) in enumerate(zip(rec_m[:-1], rec_r[:-1], rec_a[:-1], strict=True), start=1):
        block_a = m.out[:, : r.out.shape[1]]
        torch.testing.assert_close(block_a, (1 - lam) ** ell * r.out, rtol=1e-4, atol=1e-5)
        if ell >= 2:  # LEWC's own prediction (1-λ)^ℓ f_ℓ(A) is off: the bias is amplified by (1-λ)^(1−ℓ)
            assert not torch.allclose(block_a, (1 - lam) ** ell * plain.out, rtol=1e-3, atol=1e-4)


def verdicts(a, b, ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = analyze(Pair(a, b), ds, [round(i / 10, 1) for i in range(11)], SweepOptions(n_test=300, progress=False))
    return {c.id: c for c in claims.evaluate_claims(res, n_boot=200)}


@pytest.mark.parametrize("keep", [False, True])
def test_positive_control_of_trained_nets_with_biases(synthetic, keep):
    """The positive control of two briefly trained biased 3 × 16 MLPs: exact (every LEWC claim PASSes)
    with the biases zeroed, as today; with them kept the conditions stay exact (disjoint blocks) but the
    merged outputs drift from (1-λ)^ℓ f_ℓ(A) + λ^ℓ f_ℓ(B) — printed, and the weighting/magnitude values
    move off 0."""
    a, b = train_small(biased_pair(0.1), synthetic, steps=100)
    probe = synthetic.normalize(synthetic.test.x[:8])
    wide_a, wide_b, *_ = controls.disjoint_block_pair(a, b, META, META, probe, keep_biases=keep)
    got = verdicts(wide_a, wide_b, synthetic)
    print({cid: (c.verdict, round(c.value, 3)) for cid, c in got.items() if cid.startswith(("lewc", "weak", "recip"))})
    assert got["weak_additivity"].value == pytest.approx(1.0, abs=1e-6)
    assert got["reciprocal_orthogonality"].value == pytest.approx(0.0, abs=1e-6)
    if not keep:
        for cid in ("lewc_weighting", "lewc_magnitude"):
            assert got[cid].verdict == claims.PASS and got[cid].value == pytest.approx(0.0, abs=1e-3)
    else:
        assert got["lewc_weighting"].value > 1e-3 and got["lewc_magnitude"].value > 1e-3
