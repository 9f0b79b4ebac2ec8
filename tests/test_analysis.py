"""Layer capture, storage and fits: exact construction, identical endpoints, streaming = full data."""

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from constructions import disjoint_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from lewc.pipeline.analysis import analyze
from lewc.reporting.results import open_results, write_netcdf
from lewc.stats import claims, fit
from lewc.sweep.capture import GRAM_TERMS
from lewc.sweep.merge import Pair
from lewc.sweep.path import SweepOptions, sweep
from lewc.training import checkpoints

LAMS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
EXACT_LAMS = [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0]


def quick(pair, ds, lams=LAMS, **capture):
    return analyze(pair, ds, lams, SweepOptions(n_test=300, progress=False, capture_kwargs=capture), n_boot=50)


@settings(max_examples=4, deadline=None)
@given(depth=st.integers(2, 4), seed=st.integers(0, 100), kind=st.sampled_from(["mlp", "vgg"]))
def test_fits_recover_the_exact_lewc_weights(synthetic, depth, seed, kind):
    a, b = disjoint_pair(kind, depth, 8 if kind == "mlp" else 2, seed)
    # λ^ℓ/(1-λ)^ℓ must stay above float32 resolution for the deepest layer (ℓ = 9 in the VGG)
    res = quick(Pair(a, b), synthetic, EXACT_LAMS)
    lam = res.lam.values
    checked = 0
    for name in res.layer.values:
        s = res.sel(layer=name)
        ell = int(s.depth)
        if not np.isfinite(s.r2.sel(lam=0.5)):  # a layer whose units are all dead on these images
            continue
        np.testing.assert_allclose(s.coef_a, (1 - lam) ** ell, atol=1e-4)
        np.testing.assert_allclose(s.coef_b, lam**ell, atol=1e-4)
        np.testing.assert_allclose(s.coef_a_full, (1 - lam) ** ell, atol=1e-4)
        np.testing.assert_allclose(s.r2.sel(lam=[0.3, 0.5, 0.7]), 1.0, atol=1e-6)
        assert float(s.k_coord) == pytest.approx(ell, abs=1e-3)
        assert float(s.k_gram) == pytest.approx(ell, abs=1e-3)
        if ell >= 2:  # layer 1 reads the shared input x, so W_B x ≠ 0 there by construction
            assert float(s.ro_b_on_a) < 1e-6 and float(s.ro_a_on_b) < 1e-6
        if s.weak_additivity.notnull().any():
            np.testing.assert_allclose(s.weak_additivity.dropna("lam"), 1.0, atol=1e-5)
        checked += 1
    assert checked >= 2
    np.testing.assert_array_equal(res.ens_agreement.sel(kind="lewc"), 1.0)
    value, _ = claims.stat_lewc_weighting(res, None)
    assert value[0] == pytest.approx(0.0, abs=1e-3)  # every t_ℓ = 1


def test_identical_endpoints_give_llfc_not_lewc(synthetic, trained_pair):
    model, _ = checkpoints.load(trained_pair[0])
    res = quick(Pair(model, copy.deepcopy(model)), synthetic)
    np.testing.assert_allclose(res.coef_a + res.coef_b, 1.0, atol=1e-4)
    total = fit.coefficients_from_gram(res.gram.sum("image").values).sum(-1)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # a + b is identified even for collinear endpoints
    at = res.sel(lam=0.3)
    deep = at.depth >= 2
    assert bool((at.rel_err_lewc > at.rel_err_llfc + 1e-3)[deep].all())
    np.testing.assert_allclose(at.rel_err_llfc, 0.0, atol=1e-5)
    assert claims.degeneracy(res) != ""
    magnitude, _ = claims.stat_lewc_magnitude(res, None)
    assert magnitude[0] > 0.5  # no shrinkage: far from LEWC's (½)^(ℓ−1)


def test_streaming_statistics_equal_those_of_the_full_activations(synthetic):
    torch.manual_seed(0)
    from lewc.models import build

    a, b = (build("mlp", 1, 10, (3, 16, 16), base_width=8).eval() for _ in range(2))
    n = 120
    result = sweep(
        Pair(a, b),
        synthetic,
        LAMS,
        SweepOptions(n_test=n, batch_size=50, progress=False, capture_kwargs={"sample_images": n, "sample_units": 16}),
    )
    stats = result.layer_stats
    assert (stats.units_per_layer <= 16).all()  # every coordinate of every image is stored
    act = stats.act.astype(np.float64)
    order = np.argsort(stats.sample_image_index)
    i0, i1 = LAMS.index(0.0), LAMS.index(1.0)
    for j in range(len(LAMS)):
        for li in range(len(stats.depths)):
            m, x, y = (np.nan_to_num(act[k, li][order]) for k in (j, i0, i1))
            full = np.stack(
                [(m * m).sum(1), (x * x).sum(1), (y * y).sum(1), (m * x).sum(1), (m * y).sum(1), (x * y).sum(1)], axis=1
            )
            np.testing.assert_allclose(stats.gram[j, li], full, rtol=1e-5, atol=1e-6)
    assert stats.gram.shape[-1] == len(GRAM_TERMS)


def test_subsample_fit_agrees_with_full_data_fit_within_its_ci(synthetic, trained_pair):
    pair = Pair(*(checkpoints.load(p)[0] for p in trained_pair))
    res = analyze(pair, synthetic, LAMS, SweepOptions(n_test=1000, progress=False), n_boot=50)
    interior = res.sel(lam=[0.1, 0.3, 0.5, 0.7, 0.9])
    for coef in ("a", "b"):
        lo = interior.coef_ci.sel(coef=coef, bound="lo")
        hi = interior.coef_ci.sel(coef=coef, bound="hi")
        full = interior[f"coef_{coef}_full"]
        inside = ((full >= lo) & (full <= hi)).values
        assert inside.all(), f"coefficient {coef}: full-data fit outside the subsample CI at {np.argwhere(~inside)}"


def test_netcdf_round_trip_is_identical(tmp_path, synthetic, trained_pair):
    pair = Pair(*(checkpoints.load(p)[0] for p in trained_pair))
    res = quick(pair, synthetic)
    path = write_netcdf(res, tmp_path / "r.nc")
    back = open_results(path).load()
    xr.testing.assert_identical(back.drop_attrs(), res.drop_attrs())
    assert back.attrs["sha256_a"] == res.attrs["sha256_a"]


def test_an_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    ds = xr.Dataset({"x": ("lam", np.arange(3.0))})

    def explode(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", explode)
    with pytest.raises(KeyboardInterrupt):
        write_netcdf(ds, tmp_path / "r.nc")
    assert list(tmp_path.iterdir()) == []


def test_condition_images_follow_a_coordinate_budget():
    """The conditions' images are fixed before any statistic is computed: all 2,048 for layers of up to
    2¹¹ units, fewer for wide maps (2²² coordinates in the widest layer), never fewer than 256."""
    from lewc.models import build
    from lewc.sweep import capture
    from lewc.sweep.merge import Pair

    def chosen(family: str, width: int, in_shape: tuple, n_images: int = 4096) -> int:
        torch.manual_seed(0)
        model = build(family, width, 10, in_shape)
        pair = Pair(model, model)
        x = torch.zeros(2, *in_shape)
        _, records = pair.forward(pair.state_a, x, capture=True)
        stats = capture.LayerStatistics(pair, [0.0, 1.0], n_images)
        stats.observe_endpoints(0, records, records)
        return stats.condition_images

    assert chosen("mlp", 4, (1, 28, 28)) == capture.DEFAULT_CONDITION_IMAGES  # MLP ×4: 2,048 units
    assert chosen("mlp", 16, (1, 28, 28)) == 2**22 // (16 * 512)  # ×16, 8,192 units: 512 images
    assert chosen("resnet20", 1, (3, 32, 32)) == capture.MIN_CONDITION_IMAGES  # 16·32·32 units: 256
    assert chosen("resnet20", 2, (3, 32, 32)) == capture.MIN_CONDITION_IMAGES  # the floor
    assert chosen("mlp", 1, (1, 28, 28), n_images=300) == 300  # never more than there are


def test_meta_memory_estimate_counts_what_the_sweep_keeps():
    """lewc.sweep.memory's byte counts are the bytes the capture really holds: the kept endpoint records and
    the weak-additivity inputs of a real ResNet-20 batch; and ResNet-20 ×32 fits 40 GiB at batch 500."""
    from lewc.models import build
    from lewc.sweep import capture
    from lewc.sweep.memory import estimate_sweep_peak
    from lewc.sweep.merge import Pair

    batch, shape = 300, (3, 32, 32)
    torch.manual_seed(0)
    pair = Pair(build("resnet20", 1, 10, shape).eval(), build("resnet20", 1, 10, shape).eval())
    stats = capture.LayerStatistics(pair, [0.0, 0.5, 1.0], batch)
    x = torch.randn(batch, *shape)
    kept = []
    for state in (pair.state_a, pair.state_b):
        _, records = pair.forward(state, x, capture=True)
        kept.append(stats.keep_endpoint(records))
    stats.observe_endpoints(0, *kept)

    def storages(tensors) -> dict[int, int]:  # views share their storage: count each buffer once
        return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}

    est = estimate_sweep_peak("resnet20", 1, shape, batch=batch, n_lams=3)
    assert est.condition_rows == stats._cond_rows == min(batch, capture.MIN_CONDITION_IMAGES)
    kept_a = storages(t for rec in kept[0] for t in rec)
    assert sum(kept_a.values()) == est.kept_per_endpoint
    kept_both = kept_a | storages(t for rec in kept[1] for t in rec)
    held = storages(t for inputs in stats._additivity_inputs if inputs is not None for t in _flatten(inputs))
    extra = sum(v for k, v in held.items() if k not in kept_both)
    assert extra == pytest.approx(est.additivity, rel=0.01)  # per-image inner products are not counted
    assert estimate_sweep_peak("resnet20", 32, shape, batch=500).peak < 40 * 2**30


def _flatten(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from _flatten(item)


def test_fewer_batches_than_the_condition_budget_leave_no_empty_rows():
    """ResNet-20 ×2 takes 128 condition rows per batch; one batch of 200 images gives 128 condition
    images — the arrays are cut to them, not padded with zeros that would read as data."""
    from lewc.models import build
    from lewc.sweep import capture
    from lewc.sweep.merge import Pair

    torch.manual_seed(0)
    pair = Pair(build("resnet20", 2, 10, (3, 32, 32)).eval(), build("resnet20", 2, 10, (3, 32, 32)).eval())
    stats = capture.LayerStatistics(pair, [0.0, 1.0], 200)
    x = torch.randn(200, 3, 32, 32)
    kept = [stats.keep_endpoint(pair.forward(s, x, capture=True)[1]) for s in (pair.state_a, pair.state_b)]
    stats.observe_endpoints(0, *kept)
    for i in range(2):
        stats.observe(i, kept[i])
    stats.end_batch()
    stats.finish()
    assert stats.condition_rows_per_batch == 2**22 // (32 * 32 * 32) == 128
    assert stats.wa.shape[2] == stats.ro.shape[1] == len(stats.condition_image_index) == 128
    relu = np.asarray(stats.is_relu)
    assert np.all(stats.wa[:, relu, :, 1] > 0) and np.all(stats.ro[..., 1] > 0)  # ⟨u,u⟩, ‖W_A z_A‖² filled


def _coordinate_level_fit(m: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    """The reference: statsmodels OLS on every finite coordinate, clustered by image (row)."""
    import statsmodels.api as sm

    groups = np.repeat(np.arange(m.shape[0]), m.shape[1])
    ok = (np.isfinite(m) & np.isfinite(a) & np.isfinite(b)).ravel()
    y = m.ravel()[ok].astype(np.float64)
    x = np.column_stack([a.ravel()[ok], b.ravel()[ok]]).astype(np.float64)
    res = sm.OLS(y, x, hasconst=False).fit(cov_type="cluster", cov_kwds={"groups": groups[ok]})
    return res.params, res.cov_params(), np.asarray(res.conf_int(alpha=0.05)), 1 - res.ssr / (y @ y)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    images=st.integers(4, 40),
    coords=st.integers(2, 24),
    unfilled=st.integers(0, 2),
    degenerate=st.booleans(),
)
def test_clustered_fit_from_image_moments_equals_the_coordinate_level_fit(seed, images, coords, unfilled, degenerate):
    """Two compressed rows per image give statsmodels' coordinate-level estimate, cluster covariance,
    interval and R² — with unfilled (NaN) coordinates, all-zero images and images where a = b."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(images, coords)).astype(np.float32)
    b = rng.normal(size=(images, coords)).astype(np.float32)
    noise = rng.normal(size=(images, coords)) * rng.uniform(0.1, 2, size=(images, 1))
    m = (rng.normal() * a + rng.normal() * b + noise).astype(np.float32)
    if unfilled and coords > unfilled + 1:
        for v in (m, a, b):
            v[:, -unfilled:] = np.nan
    if degenerate:
        a[0], b[0] = 0, 0
        b[1] = a[1]
    coef, cov, ci, r2 = _coordinate_level_fit(m, a, b)
    got = fit.ols_clustered(fit.image_moments(m, a, b))
    np.testing.assert_allclose(got["coef"], coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["cov"], cov, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(got["ci"], ci, rtol=1e-9, atol=1e-12)
    assert got["r2"] == pytest.approx(r2, rel=1e-9, abs=1e-12)
