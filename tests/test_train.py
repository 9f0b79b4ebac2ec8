"""Trainer: determinism, resumption, bad input, and (slow) SIGKILL and torchrun runs."""

import os
import signal
import subprocess
import sys
import time

import pytest

from lewc.commands import train as train_mod
from lewc.training import checkpoints
from lewc.training import train as train_lib
from lewc.training.recipe import default_config


def cfg(seed=0, epochs=2, **kw):
    return default_config("mlp", 1, "synthetic", seed, base_width=32, epochs=epochs, **kw)


def sha(path):
    return checkpoints.read_meta(path)["sha256"]


def test_same_seed_same_weights_and_different_seed_different_weights(tmp_path, synthetic):
    a = train_lib.train(cfg(0), tmp_path / "a", "cpu", progress=False, dataset=synthetic)
    b = train_lib.train(cfg(0), tmp_path / "b", "cpu", progress=False, dataset=synthetic)
    c = train_lib.train(cfg(1), tmp_path / "c", "cpu", progress=False, dataset=synthetic)
    assert sha(a) == sha(b) != sha(c)
    meta = checkpoints.read_meta(a)
    assert meta["test_acc"] > 0.3  # the synthetic classes are learnable; chance is 0.1
    assert meta["train_config"]["wd"] == 3e-3 and len(meta["history"]) == 2


def test_interrupted_run_resumes_to_bit_identical_weights(tmp_path, synthetic):
    full = train_lib.train(cfg(epochs=3), tmp_path / "full", "cpu", progress=False, dataset=synthetic)
    snap = train_lib.train(
        cfg(epochs=3), tmp_path / "cut", "cpu", progress=False, dataset=synthetic, stop_after_epoch=1
    )
    assert snap.name.endswith(".snapshot.pt") and not list((tmp_path / "cut").glob("*.json"))
    resumed = train_lib.train(cfg(epochs=3), tmp_path / "cut", "cpu", progress=False, dataset=synthetic)
    assert sha(resumed) == sha(full)
    assert not snap.exists()


def test_finished_checkpoint_is_reused(tmp_path, synthetic):
    a = train_lib.train(cfg(), tmp_path, "cpu", progress=False, dataset=synthetic)
    mtime = a.stat().st_mtime_ns
    assert train_lib.train(cfg(), tmp_path, "cpu", progress=False, dataset=synthetic) == a
    assert a.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "transformer", "--width", "1"], "unknown model"),
        (["--model", "mlp", "--width", "0"], "width must be a positive integer"),
        (["--model", "mlp", "--width", "1", "--lr", "-0.1"], "learning rate must be positive"),
        (
            ["--model", "mlp", "--width", "1", "--dataset", "mnist", "--data-root", "/nonexistent"],
            "dataset mnist not found",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, monkeypatch):
    from lewc.training import datasets

    monkeypatch.setattr(datasets, "_download", lambda *a: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(SystemExit) as exc:
        train_mod.main(argv + ["--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def run_cli(args, env, **kw):
    return subprocess.run(
        [sys.executable, "-m", "lewc.commands.train", *args], env=env, capture_output=True, text=True, **kw
    )


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_matches_uninterrupted(tmp_path):
    env = dict(os.environ, LEWC_DATA=str(tmp_path))
    base = ["--model", "mlp", "--width", "4", "--base-width", "32", "--dataset", "synthetic", "--epochs", "6"]
    base += ["--quiet", "--device", "cpu"]
    ref = run_cli(base + ["--ckpt-dir", str(tmp_path / "ref")], env)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "lewc.commands.train", *base, "--ckpt-dir", str(tmp_path / "cut")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not list((tmp_path / "cut").glob("*.snapshot.pt")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "cut").glob("*.json")), "killed too late to test resumption"
    again = run_cli(base + ["--ckpt-dir", str(tmp_path / "cut")], env)
    assert again.returncode == 0, again.stderr
    assert sha(ref.stdout.strip().splitlines()[-1]) == sha(again.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_writes_one_comparable_checkpoint(tmp_path):
    env = dict(os.environ, LEWC_DATA=str(tmp_path), OMP_NUM_THREADS="1")
    base = ["--model", "mlp", "--width", "2", "--base-width", "32", "--dataset", "synthetic", "--epochs", "3"]
    base += ["--quiet", "--device", "cpu"]
    single = run_cli(base + ["--ckpt-dir", str(tmp_path / "single")], env)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "lewc.commands.train",
            *base,
            "--ckpt-dir",
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    written = list((tmp_path / "ddp").glob("*.json"))
    assert len(written) == 1
    a, b = checkpoints.read_meta(single.stdout.strip().splitlines()[-1]), checkpoints.read_meta(written[0])
    assert b["world_size"] == 2
    assert abs(a["test_acc"] - b["test_acc"]) <= 0.01


def test_schedule_and_inputs_are_identity_but_keep_old_names():
    """The two later recipe fields change the checkpoint's name only when they leave their default."""
    from lewc.training.recipe import default_config
    from lewc.training.train import lr_factor

    base = default_config("mlp", 1, "synthetic", 0)
    assert "schedule" not in base.as_dict() and "inputs" not in base.as_dict()
    constant = default_config("mlp", 1, "synthetic", 0, schedule="constant")
    raw = default_config("mlp", 1, "synthetic", 0, inputs="raw")
    assert len({base.name, constant.name, raw.name}) == 3
    assert constant.as_dict()["schedule"] == "constant"
    assert [lr_factor(s, 100, 10, "constant") for s in (9, 50, 99)] == [1.0, 1.0, 1.0]
    assert lr_factor(99, 100, 10, "linear") < 0.05


def test_raw_inputs_are_unstandardised():
    from lewc.training.data import load_dataset

    ds = load_dataset("synthetic", "cpu", inputs="raw")
    x, _ = next(ds.batches("test", 64))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize(("every", "saves"), [(1, 3), (2, 2), (5, 1)])
def test_snapshots_every_n_epochs(tmp_path, synthetic, monkeypatch, every, saves):
    """A snapshot every ``snapshot_every`` epochs, and at the last one (a kill before the checkpoint
    is written loses no training)."""
    import torch

    real, calls = torch.save, []
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (calls.append(obj.get("epoch")), real(obj, f, *a, **k)))
    cfg = default_config("mlp", 1, "synthetic", 0, base_width=8, epochs=3)
    train_lib.train(cfg, tmp_path, "cpu", progress=False, dataset=synthetic, snapshot_every=every)
    assert len(calls) == saves and calls[-1] == 3
