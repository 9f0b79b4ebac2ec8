"""Issue 32: readers that never crash — trend, paper_figs, study --status/--collect and table1 on empty,
random, truncated, incomplete or foreign files exit 2 in one line naming the file, and write nothing;
plus the red team's unreached cases (a study killed mid-run, table1 on partial results, LEWC_DATA that
cannot be a folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cli_runner import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability import QUICK, pair_args
from test_study import SPEC, write
from test_trend import fake_study

import lewc.commands.figs as figs
from lewc import verify
from lewc.commands import study, trend
from lewc.core.io import TMP_PREFIX

KINDS = ["empty", "random", "truncated", "no_barrier", "no_metric", "foreign", "bad_spec", "text"]


def corrupt(path: Path, kind: str, seed: int) -> None:
    """Replace a netCDF file by a broken or foreign one of ``kind``."""
    rng = np.random.default_rng(seed)
    raw = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(rng.bytes(int(rng.integers(1, 4096))))
    elif kind == "truncated":
        path.write_bytes(raw[: int(rng.integers(1, max(2, len(raw) - 1)))])
    elif kind == "text":
        path.write_text("CDF\n" + "x" * int(rng.integers(0, 100)))
    else:
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        if kind == "no_barrier" and "barrier" in ds:
            ds = ds.drop_vars("barrier")
        elif kind == "no_metric" and "barrier_name" in ds.coords:
            ds = ds.isel(barrier_name=[0])
        elif kind == "foreign":
            ds = xr.Dataset({"temperature": ("time", rng.standard_normal(5))}, attrs=dict(ds.attrs))
        elif kind == "bad_spec":
            ds.attrs["spec"] = "{not json"
            ds.attrs["sidecar_a"] = "[1, 2"
        path.unlink()
        ds.to_netcdf(path)


def one_line_naming(err: str, path: Path) -> bool:
    return len(err.strip().splitlines()) == 1 and str(path) in err


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10**6))
def test_trend_on_a_broken_study_file_is_one_line_naming_it(tmp_path_factory, capsys, kind, seed):
    folder = fake_study(tmp_path_factory.mktemp("s") / "study", lambda w, a: 1.0 / w)
    corrupt(folder / "study.nc", kind, seed)
    code, _, err = run_cli(trend.main, [str(folder), "--quiet"], capsys)
    if kind == "bad_spec" and code == 0:  # the spec attribute is optional: model is an attribute of its own
        return
    assert code == 2 and one_line_naming(err, folder / "study.nc"), (kind, err)
    assert not (folder / "trend.md").exists()


@pytest.fixture(scope="module")
def published(tmp_path_factory, trained_pair):
    """One verify folder (results.nc, report.json) to break in copies."""
    import shutil

    root = tmp_path_factory.mktemp("pub")
    before = os.environ.get("LEWC_DATA")
    os.environ["LEWC_DATA"] = str(root / "data")
    try:
        code = verify.main(pair_args(trained_pair) + QUICK + ["--out", str(root / "one")])
    except SystemExit as exc:
        code = exc.code
    finally:
        if before is None:
            os.environ.pop("LEWC_DATA", None)
        else:
            os.environ["LEWC_DATA"] = before
    assert code in (0, None)
    return root / "one", shutil


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([k for k in KINDS if k != "no_metric"]), seed=st.integers(0, 10**6))
def test_paper_figs_on_a_broken_results_file_is_one_line_naming_it_and_draws_nothing(
    tmp_path_factory, capsys, published, kind, seed
):
    folder, shutil = published
    root = tmp_path_factory.mktemp("figs")
    shutil.copytree(folder, root / "results" / "pair")
    nc = root / "results" / "pair" / "results.nc"
    corrupt(nc, "no_barrier" if kind == "no_barrier" else kind, seed)
    if kind == "no_barrier":  # an incomplete results file: a variable every figure reads is gone
        with xr.open_dataset(nc) as ds:
            ds = ds.load().drop_vars("acc")
        nc.unlink()
        ds.to_netcdf(nc)
    code, _, err = run_cli(figs.main, ["--results", str(root / "results"), "--out", str(root / "figs"), "-q"], capsys)
    assert code == 2 and one_line_naming(err, nc), (kind, err)
    assert not (root / "figs").exists() or not list((root / "figs").iterdir())
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_study_status_and_collect_name_a_corrupted_job_result_and_a_rerun_redoes_it(
    tmp_path, isolated_data_home, capsys
):
    spec = write(tmp_path, SPEC)
    code, out, err = run_cli(study.main, [str(spec), "--executor", "inprocess", "-q"], capsys)
    assert code == 0, err
    nc = Path(out.strip().splitlines()[-1])
    nc.unlink()
    done = sorted((isolated_data_home / "results").glob("*/results.nc"))
    assert len(done) == 2
    done[0].write_bytes(done[0].read_bytes()[:300])  # a truncated job result
    for flag in ("--status", "--collect"):
        code, out, err = run_cli(study.main, [str(spec), flag, "-q"], capsys)
        assert code == 2 and one_line_naming(err, done[0]), (flag, err)
    assert "damaged" in run_cli(study.main, [str(spec), "--status"], capsys)[1]
    assert not nc.exists()  # --collect wrote nothing
    for record in ("submitted.json", "outcomes.json"):
        path = nc.parent / record
        keep = path.read_bytes() if path.exists() else None
        path.write_text('{"cell": ')
        code, _, err = run_cli(study.main, [str(spec), "--status", "-q"], capsys)
        assert code == 2 and one_line_naming(err, path), err
        path.unlink()
        if keep is not None:
            path.write_bytes(keep)
    code, out, err = run_cli(study.main, [str(spec), "--executor", "inprocess", "-q"], capsys)
    assert code == 0, err  # the damaged job is redone, the intact one reused
    assert (xr.open_dataset(nc).error.values == "").all()


@pytest.mark.slow
def test_a_study_killed_with_sigkill_mid_run_then_rerun_completes_without_debris(tmp_path):
    spec = write(tmp_path, SPEC)
    env = {"LEWC_DATA": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lewc.commands.study", str(spec), "--executor", "inprocess"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if " INFO [1/2] " in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (xr.open_dataset(Path(rerun.stdout.strip().splitlines()[-1])).error.values == "").all()
    debris = [p for p in (tmp_path / "data").rglob("*") if p.name.startswith((TMP_PREFIX, ".tmp"))]
    assert not debris, debris


def test_table1_on_partial_results_redoes_them(tmp_path, isolated_data_home, capsys):
    from lewc.commands import table1

    argv = ["--smoke", "--rows", "mlp", "--out", str(tmp_path / "t1"), "-q"]
    code, _, err = run_cli(table1.main, argv, capsys)
    assert code == 0, err
    (report,) = (isolated_data_home / "results").glob("*/report.json")
    report.write_text('{"barriers": ')  # a partial folder: report.json cut short
    (report.parent / "results.nc").write_bytes(b"")
    code, out, err = run_cli(table1.main, argv, capsys)
    assert code == 0, err
    assert json.loads(report.read_text())["barriers"]  # redone, not read
    assert "| " in out


@pytest.mark.parametrize("command", ["verify", "study", "table1", "figs", "trend"])
def test_lewc_data_that_cannot_be_a_folder_is_one_line(command, tmp_path, monkeypatch, capsys, trained_pair):
    from lewc.commands import table1

    blocker = tmp_path / "data-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("LEWC_DATA", str(blocker))
    spec = write(tmp_path, SPEC)
    main, argv = {
        "verify": (verify.main, pair_args(trained_pair) + QUICK),
        "study": (study.main, [str(spec), "--executor", "inprocess"]),
        "table1": (table1.main, ["--smoke", "--rows", "mlp"]),
        "figs": (figs.main, []),
        "trend": (trend.main, [str(blocker / "study")]),
    }[command]
    code, _, err = run_cli(main, argv + ["-q"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert blocker.read_text() == ""
