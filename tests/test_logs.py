"""Logs that read well in a file: one plain line per stage, λ-pass and epoch; -q; --threads; TensorBoard."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli

from lewc import verify
from lewc.commands import train as train_cli
from lewc.training import checkpoints

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (lewc|experiments|paper_figs)[\w.]* (DEBUG|INFO|WARNING|ERROR) \S")


def test_a_redirected_verify_log_has_one_plain_line_per_stage(trained_pair, tmp_path):
    """``python -m lewc.verify > log 2>&1``: no carriage returns, every stage and λ-pass on its own line."""
    out, log = tmp_path / "out", tmp_path / "log"
    cmd = [sys.executable, "-m", "lewc.verify", "--ckpt-a", str(trained_pair[0]), "--ckpt-b", str(trained_pair[1])]
    cmd += ["--lams", "0,0.5,1", "--n-test", "200", "--out", str(out)]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text
    logged = [line for line in text.splitlines() if LINE.match(line)]
    stage = re.compile(r" INFO (load|align|sweep|controls|write)[\w ]*: ")
    stages = {m.group(1) for line in logged if (m := stage.search(line))}
    assert stages == {"load", "align", "sweep", "controls", "write"}, logged
    assert sum(" INFO write: " in line for line in logged) == 1 and sum(" INFO load: " in line for line in logged) == 1
    passes = [line for line in logged if re.search(r"sweep [\w ]+: λ [\d.]+ acc [\d.]+ loss [\d.]+$", line)]
    assert len(passes) == 3 * 4  # three λ for each of: no alignment, weight matching, two controls
    status = [line for line in text.splitlines() if line and not LINE.match(line)]
    assert status[-1] == str(out / "report.json")  # stdout keeps the real output: the table and the path
    assert not any("INFO" in line for line in status)


def test_quiet_keeps_warnings_only_and_stdout_is_unchanged(trained_pair, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--ckpt-a", str(trained_pair[0]), "--ckpt-b", str(trained_pair[1]), "--no-controls", "--out", str(out)]
    argv += ["--lams", "0,0.5,1", "--n-test", "100", "--align", "none"]
    code, stdout, err = run_cli(verify.main, argv, capsys)
    assert code == 0 and "INFO write: " in err and all(LINE.match(line) for line in err.strip().splitlines())
    code, quiet_stdout, err = run_cli(verify.main, argv + ["-q"], capsys)
    assert code == 0 and err == "" and quiet_stdout == stdout


def test_training_logs_a_line_per_epoch_and_tensorboard_reads_the_same_numbers(tmp_path, capsys):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    threads = torch.get_num_threads()
    board = tmp_path / "tb"
    argv = ["--model", "mlp", "--width", "1", "--dataset", "synthetic", "--epochs", "2", "--device", "cpu"]
    argv += ["--ckpt-dir", str(tmp_path / "ckpt"), "--tensorboard", str(board), "--threads", "1"]
    try:
        code, out, err = run_cli(train_cli.main, argv, capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    epochs = re.findall(r"INFO epoch (\d)/2 loss ([\d.]+) acc ([\d.]+) lr ([\d.e-]+) ([\d.]+) s$", err, re.M)
    assert [e[0] for e in epochs] == ["1", "2"]
    meta = checkpoints.read_meta(out.strip().splitlines()[-1])
    assert meta["threads"] == 1  # --threads is what the checkpoint records (determinism depends on it)
    for (_, loss, acc, _, _), row in zip(epochs, meta["history"], strict=True):
        assert float(loss) == pytest.approx(row["train_loss"], abs=1e-4)
        assert float(acc) == pytest.approx(row["train_acc"], abs=1e-4)
    runs = list(board.iterdir())
    assert [r.name for r in runs] == [Path(meta["weights_file"]).stem]
    acc = event_accumulator.EventAccumulator(str(runs[0]))
    acc.Reload()
    assert {"train/loss", "train/acc", "lr", "images_per_s", "test/acc", "test/loss"} <= set(acc.Tags()["scalars"])
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2]
    assert [e.value for e in losses] == pytest.approx([r["train_loss"] for r in meta["history"]], rel=1e-6)
    assert acc.Scalars("test/acc")[-1].value == pytest.approx(meta["test_acc"], rel=1e-6)
    assert acc.Scalars("lr")[-1].value == pytest.approx(0.0, abs=1e-12)  # linear decay ends at 0


@pytest.mark.parametrize("module", ["lewc.verify", "lewc.commands.train", "lewc.commands.study", "lewc.commands.figs"])
def test_every_command_has_version_and_threads(module, capsys):
    import importlib

    import lewc

    main = importlib.import_module(module).main
    code, out, _ = run_cli(main, ["--version"], capsys)
    assert code == 0 and f"lewc {lewc.__version__}" in out
    code, _, err = run_cli(main, ["--threads", "x"], capsys)
    assert code == 2 and "--threads" in err and len(err.strip().splitlines()) == 1
