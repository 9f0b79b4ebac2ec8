"""lewc.commands.trend: the floor fit recovers known power laws from a study.nc it did not make."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from lewc.commands import trend

WIDTHS = [128, 256, 512, 1024, 2048, 4096]


def fake_study(path, fn, pairs=2, noise=0.0, seed=0):
    """A study.nc shaped like lewc.commands.study's: axes epochs, wd, base_width; pair, align, barrier_name."""
    rng = np.random.default_rng(seed)
    names = ["acc_mid", "loss_mid_raw", "loss_mid_cal"]
    values = np.zeros((1, 1, len(WIDTHS), pairs, 2, 3))
    for i, w in enumerate(WIDTHS):
        for j, align in enumerate(("none", "weights")):
            base = fn(w, align)
            values[0, 0, i, :, j, :] = base + noise * rng.standard_normal((pairs, 1))
    ds = xr.Dataset(
        {"barrier": (["epochs", "wd", "base_width", "pair", "align", "barrier_name"], values)},
        coords={
            "epochs": [10],
            "wd": [3e-3],
            "base_width": WIDTHS,
            "pair": list(range(pairs)),
            "align": ["none", "weights"],
            "barrier_name": names,
        },
        attrs={"model": "mlp", "spec": json.dumps({"model": "mlp", "dataset": "mnist"})},
    )
    path.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path / "study.nc")
    return path


def rows_by(rows, align, metric):
    (row,) = [r for r in rows if r["align"] == align and r["metric"] == metric]
    return row


def test_an_exact_power_law_gives_its_floor_and_the_width_where_it_reaches_the_tolerance(tmp_path):
    law = {"none": (2.0, 10.0, 0.7), "weights": (-0.1, 1.0, 1.0)}
    folder = fake_study(tmp_path / "s", lambda w, al: trend.power_law(np.float64(w), *law[al]))
    rows = trend.fit_table(trend.load_points([folder]))
    none = rows_by(rows, "none", "acc_mid")
    assert none["c"] == pytest.approx(2.0, abs=1e-6) and none["alpha"] == pytest.approx(0.7, rel=1e-5)
    assert none["c_ci"][0] - 1e-6 <= 2.0 <= none["c_ci"][1] + 1e-6
    expected = 512 * (10.0 / (3.0 - 2.0)) ** (1 / 0.7)  # c + a (w/512)^-α = 3
    assert none["width_at_tolerance"] == pytest.approx(expected, rel=1e-4)
    # the loss tolerance (0.1) is below this floor: more width never gets there
    assert rows_by(rows, "none", "loss_mid_cal")["width_at_tolerance"] == float("inf")
    assert rows_by(rows, "weights", "acc_mid")["c"] == pytest.approx(-0.1, abs=1e-6)


def test_a_width_independent_barrier_is_its_own_floor_and_never_reaches_a_lower_tolerance(tmp_path):
    """The rival of 'width removes the barrier': a flat 5 pp. The fit must say floor 5, width ∞."""
    folder = fake_study(tmp_path / "s", lambda w, al: 5.0, noise=0.05)
    row = rows_by(trend.fit_table(trend.load_points([folder])), "none", "acc_mid")
    assert row["c"] == pytest.approx(5.0, abs=0.2)
    assert row["c_ci"][0] > 3.0  # the floor is distinguishably above the tolerance
    assert row["width_at_tolerance"] == float("inf")


@settings(max_examples=25, deadline=None)
@given(c=st.floats(-1, 2), a=st.floats(0.5, 50), alpha=st.floats(0.2, 2.0))
def test_width_reaching_inverts_the_law(c, a, alpha):
    tol = 3.0
    w = trend.width_reaching(c, a, alpha, tol)
    assert trend.power_law(np.float64(w), c, a, alpha) == pytest.approx(tol, rel=1e-9)


def test_the_command_writes_table_csv_and_figures_from_study_nc_alone(tmp_path, capsys):
    folder = fake_study(tmp_path / "s", lambda w, al: trend.power_law(np.float64(w), 1.0, 8.0, 0.5), noise=0.1)
    trend.main([str(folder), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "floor c" in out and "3×{128/256/512/1024/2048/4096}" in out
    for name in ("trend.md", "trend.json", "trend_points.csv", "trend_acc_mid.png", "trend_loss_mid_cal.png"):
        assert (tmp_path / "out" / name).is_file()


@pytest.mark.parametrize("n_pairs", [2, 3])
def test_a_new_independent_pair_falls_in_the_prediction_interval_95_percent_of_the_time(n_pairs):
    """Pairs drawn from one normal law: a further draw lands in the prediction interval at its level,
    while the mean's t-interval (the rival "interval over pairs") covers a new pair far less often."""
    rng = np.random.default_rng(7)
    trials = 4000
    hits_new = hits_mean = 0
    for _ in range(trials):
        pairs, new = rng.normal(3.0, 0.5, n_pairs), rng.normal(3.0, 0.5)
        ci, prediction = trend.t_intervals(pairs)
        hits_new += prediction[0] <= new <= prediction[1]
        hits_mean += ci[0] <= new <= ci[1]
    from scipy import stats

    se = np.sqrt(0.95 * 0.05 / trials)
    assert abs(hits_new / trials - 0.95) < 4 * se  # ±1.4 pp at 4,000 trials
    # the mean's interval covers a new pair with P(|t_{n-1}| ≤ t_crit/√(n+1)): 91% at n = 2, 84% at n = 3
    t_crit = stats.t.ppf(0.975, n_pairs - 1)
    rival = 2 * stats.t.cdf(t_crit / np.sqrt(n_pairs + 1), n_pairs - 1) - 1
    assert rival < 0.92 and abs(hits_mean / trials - rival) < 4 * np.sqrt(rival * (1 - rival) / trials)
    assert trend.t_intervals(np.array([1.0]))[1] != trend.t_intervals(np.array([1.0]))[1]  # NaN: no spread


def test_the_tail_trend_separates_a_falling_barrier_from_a_floor(tmp_path):
    """Over the widest widths: a power law still falls per doubling (interval below 0); the rival, a
    flat 5 pp, has a change per doubling whose interval holds 0 and a mean at its floor."""
    falling = fake_study(tmp_path / "p", lambda w, al: 0.5 + 40 * (w / 512) ** -1.0, noise=0.05)
    flat = fake_study(tmp_path / "f", lambda w, al: 5.0, noise=0.05, seed=1)
    t = rows_by(trend.fit_table(trend.load_points([falling])), "none", "acc_mid")["tail"]
    assert t["widths"] == WIDTHS[-3:] and t["points"] == 6
    assert t["slope_ci"][1] < 0 and t["slope_per_doubling"] == pytest.approx(
        (40 / 8 - 40 / 2) / 2, abs=0.1
    )  # OLS over 3 equally spaced points
    t = rows_by(trend.fit_table(trend.load_points([flat])), "none", "acc_mid")["tail"]
    assert t["slope_ci"][0] < 0 < t["slope_ci"][1] and abs(t["slope_per_doubling"]) < 0.1
    assert t["mean"] == pytest.approx(5.0, abs=0.1) and t["mean_ci"][0] > 3.0


def test_the_tail_forecast_at_3x8192_covers_one_new_pair_95_percent_of_the_time():
    """The extrapolated prediction interval is an interval for one new pair: on a law linear in log2(w)
    with Gaussian pair scatter, measured at 3×{1024, 2048, 4096} with two pairs each, a new pair drawn at
    3×8192 falls inside it in ≈ 95% of repetitions (binomial bounds for 400 draws). On a flat law the
    forecast is the floor."""
    rng = np.random.default_rng(0)
    widths = np.repeat([1024, 2048, 4096], 2).astype(float)
    law = lambda w: 9.0 - 2.0 * np.log2(w / 1024)  # noqa: E731
    inside = 0
    for _ in range(400):
        t = trend.tail_trend(widths, law(widths) + rng.normal(0, 1.0, len(widths)))
        new = law(8192) + rng.normal(0, 1.0)
        inside += t["predicted_pi"][0] <= new <= t["predicted_pi"][1]
        assert t["predict_width"] == 8192 and t["predicted_pi"][0] < t["predicted"] < t["predicted_pi"][1]
    assert 0.92 <= inside / 400 <= 0.98, inside
    flat = trend.tail_trend(widths, 5.0 + rng.normal(0, 0.05, len(widths)))
    assert flat["predicted"] == pytest.approx(5.0, abs=0.2) and flat["predicted_pi"][0] < 5.0 < flat["predicted_pi"][1]


def test_a_width_sweeps_fixed_recipe_flags_are_read_like_a_studys_axes(tmp_path):
    """verify --widths records its recipe flags as the spec's ``overrides``: the trend groups its cells by
    them and computes Σ lr·wd from them, exactly as for a study whose grid varies them."""
    names = ["acc_mid", "loss_mid_raw", "loss_mid_cal"]

    def study(folder, dims, coords, spec):
        values = np.full([len(v) for v in coords.values()] + [1, 1, 3], 5.0)
        ds = xr.Dataset(
            {"barrier": ([*dims, "pair", "align", "barrier_name"], values)},
            coords=coords | {"pair": [0], "align": ["none"], "barrier_name": names},
            attrs={"model": "mlp", "spec": json.dumps(spec)},
        )
        (tmp_path / folder).mkdir()
        ds.to_netcdf(tmp_path / folder / "study.nc")
        return trend.study_points(tmp_path / folder / "study.nc")

    sweep = study("sweep", ["width"], {"width": [1]}, {"model": "mlp", "dataset": "mnist", "overrides": {"epochs": 30}})
    grid = study("grid", ["width", "epochs"], {"width": [1], "epochs": [30]}, {"model": "mlp", "dataset": "mnist"})
    keys = ("epochs", "wd", "bias", "decay")
    assert {tuple(r[k] for k in keys) for r in sweep} == {tuple(r[k] for k in keys) for r in grid}
    assert sweep[0]["epochs"] == 30 and sweep[0]["decay"] > 0
