"""Fault injection: SIGKILL at random moments, a full disk, concurrent runs into one folder.

Each runs ``python -m lewc.verify`` in a real subprocess; afterwards every published folder must be
complete (report.json beside a readable results.nc), a rerun must succeed, and ``paper_figs`` must
only see complete runs.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lewc.commands.figs import collect_results
from lewc.reporting.report import REPORT_SCHEMA
from lewc.reporting.results import open_results


def verify_cmd(pair, out=None):
    cmd = [sys.executable, "-m", "lewc.verify", "--ckpt-a", str(pair[0]), "--ckpt-b", str(pair[1])]
    cmd += ["--lams", "0,0.25,0.5,0.75,1", "--n-test", "300", "--quiet"]
    return cmd + (["--out", str(out)] if out else [])


def env_for(home: Path) -> dict:
    return dict(os.environ, LEWC_DATA=str(home), OMP_NUM_THREADS="1")


def assert_only_complete_runs(results: Path) -> None:
    for nc in collect_results(results):
        report = json.loads((nc.parent / "report.json").read_text())
        assert report["schema"] == REPORT_SCHEMA
        assert open_results(nc).sizes["lam"] == len(report["lams"])


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(0.5, 9.0))
def test_sigkill_at_any_moment_then_rerun_and_paper_figs(delay, trained_pair, tmp_path_factory):
    home = tmp_path_factory.mktemp("kill")
    proc = subprocess.Popen(verify_cmd(trained_pair), env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    results = home / "results"
    if results.exists():
        assert_only_complete_runs(results)
    again = subprocess.run(verify_cmd(trained_pair) + ["--force"], env=env_for(home), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(collect_results(results)) == 1
    assert_only_complete_runs(results)
    figs = subprocess.run(
        [sys.executable, "-m", "lewc.commands.figs", "--out", str(home / "figs")],
        env=env_for(home),
        capture_output=True,
        text=True,
    )
    assert figs.returncode == 0, figs.stderr


@pytest.mark.slow
def test_a_full_disk_is_one_line_exit_2_and_publishes_nothing(trained_pair, tmp_path):
    cmd = " ".join(f"'{c}'" for c in verify_cmd(trained_pair, tmp_path / "out"))
    proc = subprocess.run(
        ["bash", "-c", f"ulimit -f 64; exec {cmd}"], env=env_for(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot write" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_concurrent_runs_into_one_folder_leave_one_complete_run(trained_pair, tmp_path):
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            verify_cmd(trained_pair, out), env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    assert (out / "report.json").is_file() and open_results(out / "results.nc").sizes["lam"] == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("module", ["lewc.verify", "lewc.commands.train", "lewc.commands.figs"])
def test_ctrl_c_while_importing_is_one_line(module, tmp_path):
    """SIGINT while the command's heavy imports run: one line, exit 130, no traceback.

    ``-X importtime`` reports each import as it finishes, so the signal is sent right after numpy is
    in — after lewc's handler exists and before torch has finished — however fast the machine is.
    """
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", module, "--help"],
        env=env_for(tmp_path),
        # a shell's background job inherits SIGINT ignored; a user's terminal gives it the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen_lewc = False
    for line in proc.stderr:
        seen_lewc = seen_lewc or "lewc.core.errors" in line
        if seen_lewc and line.split("|")[-1].strip() == "numpy":
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = [x for x in rest.splitlines() if not x.startswith("import time:")]
    assert proc.returncode == 130, err
    assert len(err) == 1 and err[0].startswith("interrupted") and "Traceback" not in rest
