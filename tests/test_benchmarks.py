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
    row = report["verify"]
    assert row["verify_s"] > 0 and row["floor_s"] > 0 and row["weight_matching_passes"] >= 1
    assert report["training"][0]["images_per_s"] > 0 and report["training"][0]["steps"] == 2
    head = report["headline"]  # run directly (not extrapolated), beside its memory plan
    assert head["main_s"] > 0 and head["controls_run"] == ["negative", "positive"]
    assert head["plan_peak_gib"] > 0 and "positive control" in head["plan_gib"]


def test_gpu_check_knows_the_devices_peaks():
    sys.path.insert(0, "benchmarks")
    from gpu_check import device_peaks

    assert device_peaks("NVIDIA H200")["bf16"] == 989.0 and device_peaks("NVIDIA A100-SXM4-80GB")["fp32"] == 19.5
    assert device_peaks("NVIDIA H100 PCIe")["bf16"] == 756.0
    unknown = device_peaks("Some GPU")
    assert unknown["bf16"] == 989.0 and "unknown" in unknown["source"]
    assert device_peaks("NVIDIA H200", override=500.0)["bf16"] == 500.0
