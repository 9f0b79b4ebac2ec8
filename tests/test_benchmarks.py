"""The benchmark scripts run (tiny sizes), so a GPU session never finds them broken."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["width"] for r in report["verify"]] == [1, 2]
    for row in report["verify"]:
        assert row["verify_s"] > 0 and row["floor_s"] > 0 and row["weight_matching_passes"] >= 1
    assert report["training"][0]["images_per_s"] > 0
    assert set(report["extrapolated_x32"]) == {"verify_s", "floor_s", "verify_peak_gib", "weight_matching_s"}
