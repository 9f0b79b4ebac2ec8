"""Property-based tests of the interpolation identities (hypothesis)."""

import copy
import json

import numpy as np
import pytest
import torch
from constructions import disjoint_pair
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lewc.core.errors import LewcError
from lewc.models import build
from lewc.pipeline.analysis import path_dataset
from lewc.stats import calibrate
from lewc.sweep.batchnorm import reestimate, reestimation_images
from lewc.sweep.merge import Pair, check_lams, model_state
from lewc.sweep.path import SweepOptions, sweep

FAST = settings(max_examples=15, deadline=None)
lams_st = st.floats(0.0, 1.0, allow_nan=False)


def random_pair(seed, name="mlp", norm="none", width=1):
    models = []
    for s in (seed, seed + 1000):
        torch.manual_seed(s)
        models.append(build(name, width, 10, (3, 16, 16), norm=norm, base_width=8).eval())
    return models


@FAST
@given(seed=st.integers(0, 10_000))
def test_endpoints_are_exact(seed):
    a, b = random_pair(seed)
    pair = Pair(a, b)
    for lam, model in ((0.0, a), (1.0, b)):
        state = pair.state_at(lam)
        ref = model_state(model)
        assert all(torch.equal(state[k], ref[k]) for k in ref)
        x = torch.randn(5, 3, 16, 16)
        assert torch.equal(pair.forward(state, x), model(x))


@FAST
@given(seed=st.integers(0, 10_000), lam=lams_st)
def test_symmetry(seed, lam):
    a, b = random_pair(seed)
    ab = Pair(a, b).state_at(lam)
    ba = Pair(b, a).state_at(1 - lam)
    for k in ab:
        torch.testing.assert_close(ab[k], ba[k], rtol=1e-6, atol=1e-7)


@FAST
@given(seed=st.integers(0, 10_000), lam=lams_st, mu=lams_st)
def test_linearity_in_lambda(seed, lam, mu):
    """θ(λ) is affine: θ(½(λ+μ)) = ½(θ(λ) + θ(μ))."""
    a, b = random_pair(seed)
    pair = Pair(a, b)
    mid = pair.state_at((lam + mu) / 2)
    sa, sb = pair.state_at(lam), pair.state_at(mu)
    for k in mid:
        torch.testing.assert_close(mid[k], (sa[k] + sb[k]) / 2, rtol=1e-5, atol=1e-6)


def test_endpoints_are_not_mutated():
    a, b = random_pair(0, "resnet20", "bn")
    before = copy.deepcopy(model_state(a))
    pair = Pair(a, b)
    images = torch.randint(0, 255, (64, 3, 16, 16), dtype=torch.uint8)

    class DS:  # the smallest dataset-like object reestimate needs
        normalize = staticmethod(lambda x: x.float() / 255)

    reestimate(pair, pair.state_at(0.5), images, DS(), batch_size=32)
    assert all(torch.equal(before[k], v) for k, v in model_state(a).items())
    assert a.training is False


def test_self_merge_is_the_model_and_all_barriers_vanish(synthetic):
    a, _ = random_pair(3)
    lams = [0.0, 0.25, 0.5, 0.75, 1.0]
    res = sweep(Pair(a, copy.deepcopy(a)), synthetic, lams, SweepOptions(capture=False, progress=False, n_test=300))
    assert all(torch.equal(res.logits["test"][i], res.logits["test"][0]) for i in range(len(lams)))
    ds, barrier = path_dataset(res, n_boot=50)
    for name in ("acc_mid", "acc_max", "loss_mid_raw", "loss_max_raw", "loss_mid_cal", "loss_max_cal"):
        assert abs(barrier[name]["value"]) < 1e-9


@pytest.mark.parametrize("mutate", ["width", "model", "shape"])
def test_mismatched_pairs_are_refused(mutate):
    a = build("mlp", 1, 10, (3, 16, 16))
    b = {
        "width": build("mlp", 2, 10, (3, 16, 16)),
        "model": build("vgg11", 1, 10, (3, 16, 16)),
        "shape": build("mlp", 1, 10, (1, 28, 28)),
    }[mutate]
    with pytest.raises(LewcError):
        Pair(a, b)


@pytest.mark.parametrize("lams", [[0, 0.5, 1.2], [-0.1, 0, 1], [0.1, 0.5, 1], [0, 0.5], [0, float("nan"), 1]])
def test_bad_lambda_grids_are_refused(lams):
    with pytest.raises(LewcError):
        check_lams(lams)


# ----------------------------------------------------------------------------- calibration


@st.composite
def logits_and_labels(draw):
    n = draw(st.integers(20, 200))
    c = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1, (n, c))
    z[np.arange(n), y] += draw(st.floats(0.2, 3.0))
    # β > 0 exists only for better-than-chance logits, and is finite only if they are not separable
    assume((z.mean(1) - z[np.arange(n), y]).mean() < -0.05)
    assume((z.argmax(1) != y).sum() >= 2)
    return torch.tensor(z), torch.tensor(y)


@FAST
@given(data=logits_and_labels())
def test_calibration_lowers_loss_and_keeps_argmax(data):
    z, y = data
    beta = calibrate.fit_beta(z, y)
    assert beta > 0
    raw = calibrate.cross_entropy_per_sample(z, y, 1.0).mean()
    cal = calibrate.cross_entropy_per_sample(z, y, beta).mean()
    assert cal <= raw + 1e-12
    assert torch.equal((beta * z).argmax(1), z.argmax(1))
    # β is a minimum: nudging it either way does not lower the loss
    for f in (0.99, 1.01):
        assert calibrate.cross_entropy_per_sample(z, y, beta * f).mean() >= cal - 1e-12


@FAST
@given(data=logits_and_labels(), c=st.floats(0.1, 10.0))
def test_calibration_of_scaled_logits_recovers_beta_over_c(data, c):
    z, y = data
    beta = calibrate.fit_beta(z, y)
    assert calibrate.fit_beta(c * z, y) == pytest.approx(beta / c, rel=1e-6)


@FAST
@given(data=logits_and_labels(), scales=st.lists(st.floats(0.05, 20.0), min_size=1, max_size=5))
def test_stacked_calibration_solves_each_set_to_its_root(data, scales):
    """fit_betas on stacked sets: each β is the root of g(β) = E_p[z] − z_y to ~1e-10 relative,
    and equals the single-set answer; the same β falls out of brentq on the scalar derivative."""
    from scipy.optimize import brentq

    z, y = data
    stacked = torch.stack([s * z for s in scales])
    betas = calibrate.fit_betas(stacked, y)
    for zs, beta in zip(stacked, betas, strict=True):

        def g(b, zs=zs):
            p = torch.softmax(b * zs, 1)
            return float(((p * zs).sum(1) - zs.gather(1, y[:, None])[:, 0]).mean())

        reference = brentq(g, beta / 8, beta * 8, xtol=1e-14, rtol=1e-12)
        assert beta == pytest.approx(reference, rel=1e-9)
        assert calibrate.fit_beta(zs, y) == pytest.approx(beta, rel=1e-12)


def test_calibration_bounds_for_degenerate_sets():
    y = torch.tensor([0, 1, 2, 0])
    perfect = torch.nn.functional.one_hot(y, 3).double() * 5
    chance = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.warns(UserWarning):
        betas = calibrate.fit_betas(torch.stack([perfect, chance]), y)
    assert betas.tolist() == [calibrate.BETA_MAX, calibrate.BETA_MIN]


@FAST
@given(data=logits_and_labels(), scales=st.lists(st.floats(0.05, 20.0), min_size=1, max_size=3), seed=st.integers(0, 9))
def test_resampled_calibration_equals_refitting_each_materialised_resample(data, scales, seed):
    """fit_betas_resampled (a grid of per-sample terms, one matrix product for all resamples) gives
    fit_betas's β on every materialised bootstrap resample within 1e-8 in log β, degenerate resamples
    (all correct, chance level: the bounds) included."""
    import warnings

    z, y = data
    stacked = torch.stack([s * z for s in scales])
    rng = np.random.default_rng(seed)
    n = len(y)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=12)
    counts[0] = 0
    counts[0, 0] = n  # one image repeated: correct (β → the upper bound) or not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = calibrate.fit_betas_resampled(stacked, y, counts)
        for r, c in enumerate(counts):
            idx = torch.as_tensor(np.repeat(np.arange(n), c))
            exact = calibrate.fit_betas(stacked[:, idx], y[idx])
            np.testing.assert_allclose(np.log(fast[r]), np.log(exact), rtol=0, atol=1e-8)


def test_resampled_calibration_refuses_counts_of_the_wrong_shape():
    z, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"counts must be \(resamples, 5\)"):
        calibrate.fit_betas_resampled(z[None], y, np.ones((3, 4)))


# ----------------------------------------------------------------------------- exact LEWC


def layer_outputs(pair, state, x):
    _, records = pair.forward(state, x, capture=True)
    return [out for _, _, out in records]


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(["mlp", "vgg"]),
    depth=st.integers(1, 4),
    hidden=st.integers(1, 6),
    seed=st.integers(0, 1000),
    lam=st.floats(0.05, 0.95),
)
def test_exact_lewc_on_disjoint_blocks(kind, depth, hidden, seed, lam):
    torch.set_default_dtype(torch.float64)
    try:
        a, b = disjoint_pair(kind, depth, hidden, seed)
        pair = Pair(a, b)
        x = torch.randn(8, 3, 16, 16)
        fa, fb = layer_outputs(pair, pair.state_at(0.0), x), layer_outputs(pair, pair.state_at(1.0), x)
        fm = layer_outputs(pair, pair.state_at(lam), x)
        for spec, m, oa, ob in zip(pair.layers, fm, fa, fb, strict=True):
            ell = spec.depth
            torch.testing.assert_close(m, (1 - lam) ** ell * oa + lam**ell * ob, rtol=1e-9, atol=1e-12)
        L = pair.template.total_depth
        mid = pair.forward(pair.state_at(0.5), x) * 2 ** (L - 1)
        torch.testing.assert_close(mid, (fa[-1] + fb[-1]) / 2, rtol=1e-9, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("breaker", [{"bias": True}, {"shared_block": True}])
def test_exact_lewc_breaks_with_biases_or_shared_blocks(breaker):
    torch.set_default_dtype(torch.float64)
    try:
        a, b = disjoint_pair("mlp", 3, 4, 0, **breaker)
        pair = Pair(a, b)
        x = torch.randn(64, 3, 16, 16)
        lam = 0.3
        fa, fb = layer_outputs(pair, pair.state_at(0.0), x), layer_outputs(pair, pair.state_at(1.0), x)
        fm = layer_outputs(pair, pair.state_at(lam), x)
        errors = [
            float((m - ((1 - lam) ** s.depth * oa + lam**s.depth * ob)).norm() / m.norm())
            for s, m, oa, ob in zip(pair.layers, fm, fa, fb, strict=True)
        ]
        assert max(errors[1:]) > 1e-3
    finally:
        torch.set_default_dtype(torch.float32)


# ----------------------------------------------------------------------------- BatchNorm


def test_bn_reestimation_of_an_unmerged_model_reproduces_its_accuracy(synthetic, tmp_path):
    from lewc.training import checkpoints
    from lewc.training.recipe import default_config
    from lewc.training.train import evaluate, train

    path = train(
        default_config("mlp", 2, "synthetic", 0, base_width=32, epochs=3, norm="bn"),
        tmp_path,
        "cpu",
        progress=False,
        dataset=synthetic,
    )
    model, meta = checkpoints.load(path)
    acc_trained, _ = evaluate(model, synthetic, "test")
    pair = Pair(model, copy.deepcopy(model))
    state = reestimate(pair, pair.state_at(0.0), reestimation_images(synthetic, 2000), synthetic)
    changed = any(not torch.equal(state[k], pair.state_a[k]) for k in state if "running_mean" in k)
    logits = torch.cat([pair.forward(state, x) for x, _ in synthetic.batches("test", 500)])
    acc_reest = float((logits.argmax(1) == synthetic.test.y).float().mean())
    assert changed
    assert abs(acc_reest - acc_trained) <= 0.02  # stated tolerance: 2 points on 1000 test images


def test_vmap_over_lambda_equals_the_loop(synthetic):
    a, b = random_pair(5, "vgg11", "bn")
    lams = [0.0, 0.3, 0.5, 1.0]
    loop = sweep(
        Pair(a, b),
        synthetic,
        lams,
        SweepOptions(capture=False, vectorize="no", progress=False, n_test=200, bn_images=500),
    )
    vm = sweep(
        Pair(a, b),
        synthetic,
        lams,
        SweepOptions(capture=False, vectorize="yes", progress=False, n_test=200, bn_images=500),
    )
    assert vm.vectorized and not loop.vectorized
    torch.testing.assert_close(vm.logits["test"], loop.logits["test"], rtol=1e-4, atol=1e-4)


def test_bn_reestimation_is_the_exact_average_over_the_images():
    """Cumulative averaging (momentum None) of equal batches = the mean over all images."""
    torch.manual_seed(0)
    model = build("mlp", 1, 10, (3, 16, 16), norm="bn", base_width=8).eval()
    pair = Pair(model, copy.deepcopy(model))
    images = torch.randint(0, 256, (1000, 3, 16, 16), dtype=torch.uint8)

    class DS:
        normalize = staticmethod(lambda x: x.float() / 255 - 0.5)

    state = reestimate(pair, pair.state_at(0.0), images, DS(), batch_size=250)
    with torch.no_grad():
        pre = model.linears[0](DS.normalize(images).flatten(1))
    torch.testing.assert_close(state["norms.0.running_mean"], pre.mean(0), rtol=1e-5, atol=1e-5)
    assert int(state["norms.0.num_batches_tracked"]) == 4


def test_the_vectorize_probe_runs_once_per_architecture_and_device(synthetic, isolated_data_home, monkeypatch):
    """The vmap-or-loop decision is measured once, cached under LEWC_DATA, and reused."""
    from lewc.sweep import path

    a, b = random_pair(6, "vgg11", "bn")
    calls = []
    real = path.measure_vectorize

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(path, "measure_vectorize", counting)
    options = SweepOptions(capture=False, progress=False, n_test=100, bn_images=200)
    first = sweep(Pair(a, b), synthetic, [0.0, 0.5, 1.0], options)
    second = sweep(Pair(a, b), synthetic, [0.0, 0.5, 1.0], options)
    assert len(calls) == 1 and first.vectorized == second.vectorized
    cache = json.loads((isolated_data_home / "cache" / "vectorize.json").read_text())
    assert list(cache.values()) == [first.vectorized]
    (isolated_data_home / "cache" / "vectorize.json").write_text("{damaged")
    sweep(Pair(a, b), synthetic, [0.0, 0.5, 1.0], options)  # a damaged cache is measured again, not fatal
    assert len(calls) == 2


def test_bn_reestimation_images_are_drawn_on_the_cpu_the_same_on_every_device(synthetic):
    """The subset and its augmentation come from a CPU generator: the numbers a CUDA generator would
    have given differ, so the device must not choose them. Same images as the seeded CPU draw."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from fakecuda import FakeCuda

    ref = reestimation_images(synthetic, 50)
    gen = torch.Generator().manual_seed(1234)
    expected = synthetic.train.x[torch.randperm(len(synthetic.train), generator=gen)[:50]]
    assert torch.equal(ref, expected)  # synthetic has no augmentation: the subset itself
    with FakeCuda():
        from lewc.training.data import DeviceDataset

        dev = DeviceDataset(synthetic.info, synthetic.train, synthetic.calib, synthetic.test, torch.device("cuda"))
        on_device = reestimation_images(dev, 50)
        assert on_device.device.type == "cuda"
        assert torch.equal(on_device.cpu(), ref)
