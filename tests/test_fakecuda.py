"""Device correctness without a GPU: lewc's commands on a CPU-backed stand-in for CUDA (tests/fakecuda.py).

Every tensor the run puts on ``cuda`` is device-resident in the harness; an op mixing it with a CPU
tensor of ≥ 1 dimension, ``.numpy()`` of it, or a generator of the other device raises as CUDA would.
With ``LEWC_TEST_DEVICE=cuda`` on a machine with a GPU the same tests run on the real device
(the ``test_device`` fixture), without the harness's counters.
"""

from __future__ import annotations

import json

import pytest
import torch
from cli_runner import run_cli
from fakecuda import DeviceRuleError, FakeCuda

from lewc import verify
from lewc.training.recipe import default_config


def _cuda_args(tmp_path):
    return ["--device", "cuda", "--lams", "0,0.5,1", "--n-test", "100", "--bn-images", "32", "--batch-size-eval", "100"]


def test_the_harness_enforces_cudas_rules():
    with FakeCuda() as fc:
        x = torch.randn(4, 3, device="cuda")
        assert x.device.type == "cuda" and torch.cuda.is_available()
        with pytest.raises(DeviceRuleError, match="same device"):
            torch.nn.Linear(3, 2)(x)  # a CPU-built layer on device data: the --arch bug
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        g = torch.Generator(device="cuda").manual_seed(0)
        with pytest.raises(DeviceRuleError, match="generator"):
            torch.randperm(5, generator=g)
        with pytest.raises(DeviceRuleError, match="generator"):
            torch.randperm(5, device="cuda", generator=torch.Generator().manual_seed(0))
        assert (x * torch.tensor(2.0)).device.type == "cuda"  # 0-dim CPU scalars may mix, as on CUDA
        y = x.cpu()
        assert y.device.type == "cpu" and y.numpy().shape == (4, 3) and fc.d2h_bytes == 48
        float(x.sum())
        assert fc.syncs == 2


def test_verify_trains_and_verifies_an_mlp_on_cuda(tmp_path, capsys, device_context):
    """The card's command shape (train both endpoints, verify with weight matching and both controls)
    on the device: no mixing, no ``.numpy()`` of a device tensor, syncs and copies per λ bounded."""
    argv = ["--model", "mlp", "--width", "1", "--base-width", "16", "--dataset", "synthetic", "--epochs", "1"]
    argv += _cuda_args(tmp_path) + ["--align", "none,weights", "--out", str(tmp_path / "out")]
    with device_context() as fc:
        code, _, err = run_cli(verify.main, argv, capsys)
    assert code in (0, None), err
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["provenance"]["device"].startswith("cuda") if "provenance" in rep else True
    assert rep["controls"]["positive"]["note"].startswith("exact LEWC")
    assert fc is None or fc.peak_bytes > 0


def test_verify_a_bn_resnet_on_cuda(tmp_path, capsys, device_context):
    """BN re-estimation, layer capture and both controls of a convolutional BN network on the device:
    two ResNet-20 state dicts (``--arch``, untrained: chance-level weights, analysed with ``--allow-chance``)."""
    from lewc.models import build

    for tag, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        torch.save(build("resnet20", 1, 10, (3, 16, 16), base_width=2).state_dict(), tmp_path / f"{tag}.pth")
    argv = ["--arch", "resnet20:width=1,base_width=2", "--dataset", "synthetic", "--align", "none", "--allow-chance"]
    argv += ["--ckpt-a", str(tmp_path / "a.pth"), "--ckpt-b", str(tmp_path / "b.pth")]
    argv += _cuda_args(tmp_path) + ["--out", str(tmp_path / "out")]
    with device_context() as fc:
        code, _, err = run_cli(verify.main, argv, capsys)
    assert code in (0, None), err
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["bn_reestimated"] and (fc is None or fc.peak_bytes > 0)


@pytest.mark.slow
def test_training_a_bn_resnet_on_cuda(tmp_path, device_context):
    """bf16 autocast, channels_last and the fused optimizer's path on the device: one epoch."""
    from lewc.training.train import train

    cfg = default_config("resnet20", 1, "synthetic", 0, base_width=4, epochs=1, precision="bf16")
    with device_context():
        path = train(cfg, tmp_path, "cuda", progress=False)
    assert path.is_file()


def test_arch_state_dicts_on_cuda(tmp_path, capsys, device_context):
    """``--arch``: plain state dicts, built on the CPU, analysed on the device (it crashed in addmm)."""
    from lewc.training.train import train

    paths = [
        train(default_config("mlp", 1, "synthetic", s, base_width=32, epochs=1), tmp_path, "cpu", progress=False)
        for s in (0, 1)
    ]
    from lewc.training import checkpoints

    for tag, path in zip("ab", paths, strict=True):
        model, meta = checkpoints.load(path)
        torch.save(model.state_dict(), tmp_path / f"{tag}.pth")
    argv = ["--arch", f"mlp:width={meta.width},base_width={meta.base_width}", "--dataset", "synthetic"]
    argv += ["--ckpt-a", str(tmp_path / "a.pth"), "--ckpt-b", str(tmp_path / "b.pth"), "--align", "none"]
    argv += _cuda_args(tmp_path) + ["--out", str(tmp_path / "out")]
    with device_context():
        code, _, err = run_cli(verify.main, argv, capsys)
    assert code in (0, None), err


def test_verify_pair_on_cuda(tmp_path, device_context):
    from test_api import Net, fit, make_data

    import lewc

    train_data, test_data = make_data(600, 0), make_data(200, 1)
    a, b = fit(Net(), train_data, 0, epochs=2), fit(Net(), train_data, 1, epochs=2)
    with device_context():
        rep = lewc.verify_pair(
            a, b, train=train_data, test=test_data, lams=(0, 0.5, 1), align=("none",), controls=True, device="cuda"
        )
    assert rep is not None


def test_the_cost_gate_proceeds_on_an_accelerator(tmp_path, caplog):
    """The card's ResNet-20 ×32 pair costs hours by the FLOP estimate: refused on the CPU without
    --allow-slow, told and allowed on a GPU."""
    import logging

    from lewc.core.errors import LewcError
    from lewc.pipeline.endpoints import plan_pair

    cfgs = [default_config("resnet20", 32, "cifar10", s) for s in (0, 1)]
    with pytest.raises(LewcError, match="allow-slow"):
        plan_pair(cfgs, tmp_path, torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger="lewc.pipeline.endpoints"):
        assert plan_pair(cfgs, tmp_path, torch.device("cuda")) == cfgs
    assert "by a FLOP estimate" in caplog.text


def test_gpu_run_script_is_prepared(tmp_path):
    """benchmarks/gpu_run.sh: three steps with their own limits summing to at most 9 minutes."""
    import os
    import re
    import subprocess
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "gpu_run.sh"
    env = {**os.environ, "OUT": str(tmp_path / "gpu_run_out")}  # nothing written into the working tree
    run = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, check=True, env=env)
    out = run.stdout
    limits = [int(s) for s in re.findall(r"≤ (\d+)s\]", out)]
    assert len(limits) == 3 and sum(limits) <= 540 and "--device cuda" in out and "--align none,weights" in out


def test_out_of_memory_is_exit_2_with_the_fix(capsys, monkeypatch):
    from lewc.core.errors import cli_main

    @cli_main
    def main():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 74.30 GiB")

    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--batch-size-eval" in err and len(err.strip().splitlines()) == 1


def test_training_precision_is_part_of_the_config_and_the_checkpoint_name():
    fp32 = default_config("mlp", 1, "synthetic", 0)
    bf16 = default_config("mlp", 1, "synthetic", 0, precision="bf16")
    assert "precision" not in fp32.as_dict() and bf16.as_dict()["precision"] == "bf16"  # old names unchanged
    assert fp32.name != bf16.name
    from lewc.training.recipe import TrainConfig

    assert TrainConfig.from_dict(bf16.as_dict()) == bf16
