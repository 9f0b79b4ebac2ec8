"""The whole tool is installable: a wheel built from this tree, outside the clone, runs every subcommand."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lewc import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_subcommand_runs_from_a_wheel_outside_the_clone(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("lewc-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert not any(n.startswith(("experiments/", "paper_figs/", "tests/", "benchmarks/")) for n in names)
    assert "lewc/reporting/report.schema.json" in names
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), LEWC_DATA=str(tmp_path / "data"))
    where = subprocess.run(
        [sys.executable, "-c", "import lewc; print(lewc.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel's copy, not the clone's
    for name in cli.COMMANDS:
        run = subprocess.run(
            [sys.executable, "-m", "lewc.cli", name, "--help"], cwd=outside, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0 and "usage:" in run.stdout, (name, run.stderr[-500:])
