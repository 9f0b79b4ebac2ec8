"""lewc.commands.study: a declarative grid run through submitit, resumable, failures listed, bad specs refused."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cli_runner import run_cli

from lewc.commands import study
from lewc.core.errors import LewcError
from lewc.reporting.results import open_results

SPEC = """
[study]
name = "tiny"
model = "mlp"
dataset = "synthetic"
pairs = 1
lams = "0,0.5,1"
n_test = 100

[grid]
width = [1, 2]
epochs = [1]
base_width = [32]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def run(argv, capsys):
    return run_cli(study.main, argv, capsys)


def test_a_study_runs_in_process_lists_a_failed_cell_and_resumes(tmp_path, isolated_data_home, capsys):
    spec = write(tmp_path, SPEC.replace("width = [1, 2]", "width = [1, 2, 3]"))
    # the width-3 cell's endpoint is corrupt: that job fails, the others must not be lost
    from lewc.training.recipe import default_config

    bad = default_config("mlp", 3, "synthetic", 0, base_width=32, epochs=1).checkpoint_path(
        isolated_data_home / "checkpoints"
    )
    bad.parent.mkdir(parents=True)
    bad.with_suffix(".json").write_text("{not json")
    code, out, err = run([str(spec), "--executor", "inprocess"], capsys)
    assert code == 0, err
    nc = Path(out.strip().splitlines()[-1])
    ds = open_results(nc).load()
    sizes = {"width": 3, "epochs": 1, "base_width": 1, "pair": 1, "align": 2, "barrier_name": 3}
    assert dict(ds.barrier.sizes) == sizes
    assert ds.error.sel(width=3, pair=0).item().startswith("LewcError")
    assert ds.error.sel(width=1, pair=0).item() == ""
    assert np.isfinite(ds.barrier.sel(width=[1, 2]).values).all()
    assert np.isnan(ds.barrier.sel(width=3).values).all()  # the failed cell has no numbers, not made-up ones
    md = nc.with_name("study.md").read_text()
    assert "Failed jobs (1)" in md and "permutation_gap" in md
    for stem in ("study_barrier_vs_width", "study_beta_vs_width", "study_magnitude_vs_depth"):
        assert (nc.parent / f"{stem}.png").is_file() and f"({stem}.png)" in md
    assert ds.magnitude_mid.sizes["ell"] == 4 and float(ds.total_depth.sel(width=1).squeeze()) == 4
    # --status reads the grid's state from disk
    code, out, err = run([str(spec), "--status"], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == "2 done, 1 failed, 0 submitted, 0 missing of 3 job(s)"
    assert out.count("failed    {") == 1 and "LewcError" in out
    # rerun: the finished cells are skipped before anything runs, and give the same numbers
    before = ds.barrier.sel(width=[1, 2]).values.copy()
    code, out, err = run([str(spec), "--executor", "inprocess"], capsys)
    assert code == 0 and "2 of 3 job(s) finished on disk (skipped); 1 to run" in err and "reusing" not in err
    assert (open_results(nc).barrier.sel(width=[1, 2]).values == before).all()
    # --collect combines the same study.nc from disk alone
    nc.unlink()
    code, out, err = run([str(spec), "--collect"], capsys)
    assert code == 0 and Path(out.strip().splitlines()[-1]) == nc
    again = open_results(nc).load()
    assert (again.barrier.sel(width=[1, 2]).values == before).all() and again.error.sel(width=3, pair=0).item()


@pytest.mark.slow
def test_the_local_executor_runs_jobs_as_subprocesses(tmp_path):
    spec = write(tmp_path, SPEC)
    env = {"LEWC_DATA": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lewc.commands.study", str(spec), "--parallel", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    nc = Path(proc.stdout.strip().splitlines()[-1])
    assert (open_results(nc).error.values == "").all()
    logs = list((tmp_path / "data" / "studies" / "tiny" / "jobs").glob("*_result.pkl"))
    assert len(logs) == 2  # two submitit jobs, each its own process


BAD_SPECS = {
    "unknown_axis": ("[grid]\nheight = [1]", "unknown grid axis"),
    "empty_grid": ("[grid]\n", "is empty"),
    "empty_axis": ("[grid]\nwidth = []", "non-empty list"),
    "width_zero": ("[grid]\nwidth = [0, 1]", "must be positive"),
    "wrong_type": ('[grid]\nwidth = ["wide"]', "takes int"),
    "repeated": ("[grid]\nwidth = [1, 1]", "repeats"),
    "unknown_study_key": ("[grid]\nwidth = [1]\n[study]\nname='x'\nmodel='mlp'\ncolour='red'", "unknown key"),
    "bad_alignment": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\nalign="none,weight"', "unknown alignment"),
    "conflicting_depth": ('[grid]\ndepth = [2]\n[study]\nname="x"\nmodel="resnet20"', "depth"),
    "not_toml": ("[grid\nwidth=", "not valid TOML"),
    "unknown_slurm_key": ('[grid]\nwidth = [1]\n[slurm]\nacount = "x"', "submitit accepts"),
    # issue 23: values checked by type and range, names that become paths are plain names
    "controls_string": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\ncontrols="no"', "true or false"),
    "n_test_zero": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\nn_test=0', "n_test must be in"),
    "align_int": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\nalign=5', "align must be"),
    "lams_scalar": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\nlams=0.5', "lams must be"),
    "lams_outside": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\nlams=[0, 0.5, 2]', "lams value"),
    "name_escapes": ('[grid]\nwidth = [1]\n[study]\nname="../../../x"\nmodel="mlp"', "plain name"),
    "pairs_zero": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\npairs=0', "pairs must be"),
    "huge_width": ("[grid]\nwidth = [1000000000]", "width must be in"),
    "huge_pairs": ('[grid]\nwidth = [1]\n[study]\nname="x"\nmodel="mlp"\npairs=' + "9" * 30, "pairs must be"),
    "slurm_gpus_string": ('[grid]\nwidth = [1]\n[slurm]\ngpus_per_job="two"', "gpus_per_job must be"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_specs_are_one_line_errors_before_anything_runs(case, tmp_path, isolated_data_home, capsys):
    text, message = BAD_SPECS[case]
    if "[study]" not in text and case != "not_toml":
        text += '\n[study]\nname = "x"\nmodel = "mlp"\n'
    code, out, err = run([str(write(tmp_path, text))], capsys)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (isolated_data_home / "studies").exists() and not (isolated_data_home / "checkpoints").exists()


def test_dry_run_prints_every_job_and_trains_nothing(tmp_path, isolated_data_home, capsys):
    code, out, err = run([str(write(tmp_path, SPEC)), "--dry-run"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2 and "2 job(s)" in err
    assert all("python -m lewc.verify" in line for line in out.strip().splitlines())
    assert not (isolated_data_home / "checkpoints").exists()


def test_every_slurm_parameter_of_submitit_passes_through_the_spec(tmp_path, isolated_data_home, capsys):
    """account, qos, mem, constraint, additional_parameters: submitit's names, generic or slurm_-prefixed."""
    import submitit

    slurm = '[slurm]\naccount = "x"\nqos = "high"\nmem = "16G"\nslurm_constraint = "a100"\nmem_gb = 8\n'
    slurm += 'gpus_per_job = 2\nadditional_parameters = { reservation = "r" }\n'
    spec = write(tmp_path, SPEC + slurm)
    code, out, err = run([str(spec), "--dry-run", "--executor", "slurm", "--partition", "gpu"], capsys)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 2 and not (isolated_data_home / "studies").exists()
    for shown in ("slurm_account='x'", "slurm_qos='high'", "slurm_constraint='a100'", "gpus_per_node=2"):
        assert shown in err
    params = study.slurm_submission(study.load_spec(spec), study.build_parser().parse_args([str(spec)]))
    generic, specific = set(submitit.AutoExecutor._valid_parameters()), submitit.SlurmExecutor._valid_parameters()
    assert all(k in generic or k.removeprefix("slurm_") in specific for k in params)
    assert params["slurm_additional_parameters"] == {"reservation": "r"} and params["mem_gb"] == 8


def test_status_of_a_fresh_grid_is_all_missing_and_detach_needs_slurm(tmp_path, capsys):
    spec = write(tmp_path, SPEC)
    code, out, _ = run([str(spec), "--status"], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == "0 done, 0 failed, 0 submitted, 2 missing of 2 job(s)"
    code, _, err = run([str(spec), "--detach"], capsys)
    assert code == 2 and "--detach needs --executor slurm" in err


def test_a_spec_cell_is_a_request_of_its_pair(tmp_path):
    spec = study.load_spec(write(tmp_path, SPEC.replace("epochs = [1]", "epochs = [1]\nbias = [false]")))
    request = spec.job(spec.cells()[0], 1)
    configs = request.endpoints.configs
    assert [c.seed for c in configs] == [2, 3] and not configs[0].bias and not request.options.controls
    assert json.dumps(spec.cells()) == json.dumps(
        [
            {"width": 1, "epochs": 1, "bias": False, "base_width": 32},
            {"width": 2, "epochs": 1, "bias": False, "base_width": 32},
        ]
    )
    with pytest.raises(LewcError):
        study.load_spec(tmp_path / "missing.toml")


def test_a_job_is_its_request_file_and_verify_runs_that_file(tmp_path):
    """The worker reads the job's JSON; the recorded command, ``python -m lewc.verify --request FILE``, too."""
    from lewc.pipeline.request import Request
    from lewc.verify import build_parser, request_file

    text = SPEC.replace("epochs = [1]", "epochs = [1]\nbias = [false]\nwd = [1e-4]")
    spec = study.load_spec(write(tmp_path, text.replace('lams = "0,0.5,1"', 'lams = "0, 0.5, 1"')))
    for i, cell in enumerate(spec.cells()):
        path = study.job_file(tmp_path / "study", i, 1)
        request = spec.job(cell, 1, study.job_command(path))
        [(_, _, written)] = study.write_jobs([(cell, 1, request, path)])
        assert Request.from_json(Path(written).read_text()) == request
        assert request.options.lams == (0.0, 0.5, 1.0)  # a λ text with spaces survives
        configs = request.endpoints.configs
        assert [c.seed for c in configs] == [2, 3] and not configs[0].bias and configs[0].wd == 1e-4
        args = build_parser().parse_args(shlex.split(request.context.command)[3:])
        assert request_file(args) == request
    with pytest.raises(LewcError, match="--request names the pair"):
        request_file(build_parser().parse_args(["--request", written, "--n-test", "100"]))
    for empty in ('","', '" "'):  # an empty λ list is one line, never an IndexError
        with pytest.raises(LewcError, match="empty"):
            study.load_spec(write(tmp_path, SPEC.replace('"0,0.5,1"', empty)))


@pytest.mark.slow
def test_a_killed_study_cancels_its_jobs_and_a_rerun_completes_it(tmp_path):
    """SIGTERM after the first job: exit without orphans; the rerun reuses that job and runs the rest."""
    import os
    import signal
    import time

    spec = write(tmp_path, SPEC)
    env = {"LEWC_DATA": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lewc.commands.study", str(spec), "--parallel", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if " INFO [1/2] " in line:
            break
    time.sleep(1.0)  # the second job is now running
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 130
    time.sleep(2.0)
    jobs = tmp_path / "data" / "studies" / "tiny" / "jobs"
    alive = [p for p in os.listdir("/proc") if p.isdigit() and str(jobs) in _cmdline(p)]
    assert not alive, "a job outlived the killed study"
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (open_results(Path(rerun.stdout.strip().splitlines()[-1])).error.values == "").all()


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


def test_beta_against_depth_is_drawn_when_depth_is_an_axis(tmp_path):
    """A study.nc with a depth axis gets the β-vs-depth figure with its 2^(L−1) reference."""
    from lewc.reporting.study_plots import study_figures

    shape = (2, 2, 2)  # width, depth, pair
    ds = xr.Dataset(
        {
            "barrier": (("width", "depth", "pair", "align", "barrier_name"), np.ones((*shape, 1, 2))),
            "beta_mid": (("width", "depth", "pair", "align"), np.full((*shape, 1), 4.0)),
            "total_depth": (("width", "depth", "pair"), np.broadcast_to(np.array([3.0, 5.0])[None, :, None], shape)),
            "magnitude_mid": (("width", "depth", "pair", "align", "ell"), np.full((*shape, 1, 5), 0.5)),
        },
        coords={
            "width": [1, 4],
            "depth": [2, 4],
            "pair": [0, 1],
            "align": ["none"],
            "barrier_name": ["acc_mid", "loss_mid_cal"],
            "ell": [1, 2, 3, 4, 5],
        },
    )
    made = dict(study_figures(ds, tmp_path, "s"))
    assert "s_beta_vs_depth" in made and (tmp_path / "s_beta_vs_depth.png").is_file()
    assert "2^(L−1)" in made["s_beta_vs_depth"]


def test_slurm_without_slurm_is_exit_2_before_creating_anything(tmp_path, isolated_data_home, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch, no srun
    out = tmp_path / "study-out"
    code, _, err = run([str(write(tmp_path, SPEC)), "--executor", "slurm", "--out", str(out)], capsys)
    assert code == 2 and "SLURM is not available" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (isolated_data_home / "studies").exists()


def test_a_registered_claim_and_the_paper_statistics_reach_report_results_study_and_trend(
    tmp_path, isolated_data_home, capsys, toy_claim
):
    """A toy claim registered in one file reaches report.json, results.nc, study.nc and the trend map with
    nothing naming it; the paper's per-layer statistics sit beside the verdicts in each; a cell of two
    pairs gets the t-interval over pairs and says n."""
    from lewc.commands import trend
    from lewc.stats.claims import unregister_claim
    from lewc.stats.pairs import COVERS, t_intervals

    spec = write(tmp_path, SPEC.replace("pairs = 1", "pairs = 2").replace("width = [1, 2]", "width = [1]"))
    text = spec.read_text().replace('lams = "0,0.5,1"', 'lams = "0,0.3,0.5,0.7,1"')
    spec.write_text(text.replace("epochs = [1]", "epochs = [4]"))  # every endpoint above chance
    try:
        code, out, err = run([str(spec), "--executor", "inprocess"], capsys)
        assert code == 0, err
        nc = Path(out.strip().splitlines()[-1])
        ds = open_results(nc).load()
        outcomes = json.loads(nc.with_name("outcomes.json").read_text())
        folder = Path(outcomes[0]["folder"])
        res = open_results(folder / "results.nc").load()
        rep = json.loads((folder / "report.json").read_text())
        cid = toy_claim.ENDPOINTS_AGREE.id
        # results.nc and report.json
        assert cid in res.claim.values and "lewc_position" in res
        assert cid in {c["id"] for c in rep["claims"]} and rep["claims"][0]["covers"] == COVERS["images"]
        block = rep["paper_statistics"]
        assert block["lams"] == [0.3, 0.5, 0.7] and block["references"]["weak_additivity"]["exact"] == 1.0
        layer = block["layers"][1]  # ℓ = 2
        for key in ("cos_lewc", "cos_llfc", "weak_additivity", "r2_full"):
            assert len(layer[key]) == 3
        assert layer["cos_lewc"][0] == pytest.approx(float(res.cos_lewc.sel(lam=0.3, align="none").isel(layer=1)))
        report_md = (folder / "report.md").read_text()
        assert "The paper's statistics beside lewc's" in report_md and "conditional on this pair" in report_md
        # study.nc: the claim from the registry, per-pair image intervals, the t-interval over the 2 pairs
        assert cid in ds.claim.values
        values = ds.claim_value.sel(claim=cid, align="none").squeeze().values
        over = t_intervals(values)
        ci = ds.claim_ci_pairs.sel(claim=cid, align="none").squeeze().values
        np.testing.assert_allclose(ci, over.ci) and np.testing.assert_allclose(
            ds.claim_prediction.sel(claim=cid, align="none").squeeze().values, over.prediction
        )
        assert int(ds.claim_n_pairs.sel(claim=cid, align="none").squeeze()) == 2
        assert ds.claim_ci.attrs["covers"] == COVERS["images"]
        assert ds.cos_lewc.dims[-2:] == ("lam", "ell") and list(ds.lam.values) == [0.3, 0.5, 0.7]
        assert ds.lewc_position.dims[-1] == "ell" and np.isfinite(ds.cos_llfc.sel(lam=0.5, ell=2)).all()
        assert float(ds.cos_lewc.sel(lam=0.3, ell=2, align="none", pair=0).squeeze()) == pytest.approx(
            layer["cos_lewc"][0]
        )
        md = nc.with_name("study.md").read_text()
        assert cid in md and "(n=2)" in md and COVERS["pairs"] in md
        assert "The paper's statistics beside the verdicts" in md and "| 1 | 4 | 32 | 2 | " in md
        # the trend's map and its paper table
        records = trend.load_points([nc.parent])
        cells = trend.cell_table(records)
        text = "\n".join(trend.map_markdown(cells))
        assert f"{cid} (none)" in text and "lewc_magnitude (none)" in text
        assert "The paper's statistics per layer" in text and "cos_lewc λ=0.3" in text and "lewc_position" in text
        row = next(c for c in cells if c["metric"] == "cos_lewc" and c["ell"] == 2 and c["lam"] == 0.3)
        assert row["pairs"] == 2 and row["covers"]["ci"] == COVERS["pairs"]
    finally:
        unregister_claim("endpoints_agree")
