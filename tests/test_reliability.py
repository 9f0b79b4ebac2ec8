"""Issue 23's red-team cases: results keyed by content, sidecars that cannot lie, no path escapes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_runner import run_cli

from lewc import verify
from lewc.core.errors import LewcError
from lewc.core.io import sha256_file
from lewc.pipeline.endpoints import chance_threshold
from lewc.pipeline.folders import TMP_PREFIX, clean_stale
from lewc.training import checkpoints

QUICK = ["--quiet", "--no-controls", "--align", "none", "--lams", "0,0.5,1", "--n-test", "200"]
LOUD = QUICK[1:]  # the same without -q: the INFO lines ("reusing …") are what these tests read


def run(argv, capsys):
    return run_cli(verify.main, argv, capsys)


def copy_pair(tmp_path, pair):
    """A private copy of the session's trained pair (tests here edit checkpoints)."""
    out = []
    for src in pair:
        dst = tmp_path / "ckpt" / src.name
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(src.read_bytes())
        checkpoints.sidecar_path(dst).write_text(checkpoints.sidecar_path(src).read_text())
        out.append(dst)
    return out


def edit_sidecar(path, **fields):
    side = checkpoints.sidecar_path(path)
    meta = json.loads(side.read_text())
    meta.update(fields)
    side.write_text(json.dumps(meta))
    return meta


def replace_weights(path, transform):
    """Other weights under the same name and recipe: the sidecar's sha256 follows (as a retrain would)."""
    state = safetensors.torch.load_file(str(path))
    safetensors.torch.save_file({k: transform(k, v) for k, v in state.items()}, str(path))
    edit_sidecar(path, sha256=sha256_file(path))


def pair_args(pair):
    return ["--ckpt-a", str(pair[0]), "--ckpt-b", str(pair[1])]


def test_a_replaced_checkpoint_never_reuses_the_old_analysis(tmp_path, trained_pair, capsys):
    pair = copy_pair(tmp_path, trained_pair)
    code, out1, err1 = run(pair_args(pair) + QUICK, capsys)
    assert code == 0, err1
    code, out2, err2 = run(pair_args(pair) + LOUD, capsys)
    sha_a, sha_b = (checkpoints.read_meta(p)["sha256"] for p in pair)
    assert code == 0 and out2.strip().splitlines()[-1] == out1.strip().splitlines()[-1]
    reuse = [line for line in err2.splitlines() if " INFO reusing " in line]
    assert reuse and sha_a[:16] in reuse[0] and sha_b[:16] in reuse[0], err2
    replace_weights(pair[1], lambda k, v: v * 0.9 if k.endswith("weight") else v)
    code, out3, err3 = run(pair_args(pair) + LOUD, capsys)
    assert code == 0 and "reusing" not in err3, err3
    first, third = Path(out1.strip().splitlines()[-1]), Path(out3.strip().splitlines()[-1])
    assert first != third and first.is_file() and third.is_file()
    new_sha = checkpoints.read_meta(pair[1])["sha256"]
    assert json.loads(third.read_text())["pair"]["b"]["sha256"] == new_sha
    assert new_sha[:8] in third.parent.name and sha_b[:8] in first.parent.name


def test_chance_level_endpoints_are_refused_and_nothing_is_written(tmp_path, trained_pair, capsys):
    pair = copy_pair(tmp_path, trained_pair)
    replace_weights(pair[1], lambda k, v: torch.zeros_like(v))  # B predicts one class: 10 % here
    code, _, err = run(pair_args(pair) + QUICK + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "at chance" in err and "claims" in err, err
    assert not (tmp_path / "out").exists()


def test_the_chance_rule():
    assert chance_threshold(10, 10_000) == pytest.approx(0.15)  # 5 pp dominate on a full test set
    assert chance_threshold(10, 100) == pytest.approx(0.1 + 3 * (0.09 / 100) ** 0.5)  # 3 s.e. on a small one
    assert chance_threshold(100, 10_000) == pytest.approx(0.06)


def test_a_lying_sidecar_accuracy_is_a_loud_warning_and_the_measured_one_is_printed(tmp_path, trained_pair, capsys):
    pair = copy_pair(tmp_path, trained_pair)
    edit_sidecar(pair[1], test_acc=0.2)
    code, out, err = run(pair_args(pair) + QUICK, capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warning) == 1 and "0.2000" in warning[0] and "measured" in warning[0], err
    rep = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    measured = rep["endpoint_test_acc"]["b"]
    assert measured == rep["metrics"]["acc"][-1] and measured > 50  # accuracy in %
    assert f"{measured:.2f} %" in out.splitlines()[0] and "0.2000" not in out


SIDECAR_CASES = {
    "seed_escapes": ({"seed": "0/../../../escape"}, "field 'seed' must be an integer"),
    "width_5001_digits": ({"width": "WIDE"}, "not valid JSON"),
    "width_1e30": ({"width": 10**30}, "field 'width' must be in"),
    "dataset_vs_shape": ({"dataset": "fashion-mnist"}, "names dataset fashion-mnist"),
    "dataset_escapes": ({"dataset": "../x"}, "plain name"),
    "accuracy_above_1": ({"test_acc": 1.5}, "field 'test_acc' must be in"),
    "bias_string": ({"bias": "yes"}, "true or false"),
    "recipe_disagrees": ({"train_config": "TC"}, "train_config says"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_CASES))
def test_sidecar_fields_are_validated_one_line_exit_2(case, tmp_path, trained_pair, capsys):
    pair = copy_pair(tmp_path, trained_pair)
    change, message = SIDECAR_CASES[case]
    meta = json.loads(checkpoints.sidecar_path(pair[1]).read_text())
    if change.get("train_config") == "TC":
        change = {"train_config": meta["train_config"] | {"width": meta["width"] + 1}}
    side = checkpoints.sidecar_path(pair[1])
    edit_sidecar(pair[1], **change)
    if change.get("width") == "WIDE":
        side.write_text(side.read_text().replace('"WIDE"', "9" * 5001))
    results = Path(os.environ["LEWC_DATA"]) / "results"
    code, _, err = run(pair_args(pair) + QUICK, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not results.exists() and not (tmp_path.parent / "escape").exists()


def test_a_sidecar_naming_a_fixed_depth_family_does_not_mention_a_flag(tmp_path, trained_pair, capsys):
    pair = copy_pair(tmp_path, trained_pair)
    meta = json.loads(checkpoints.sidecar_path(pair[1]).read_text())
    edit_sidecar(pair[1], model="vgg11", train_config=meta["train_config"] | {"model": "vgg11"})
    code, _, err = run(pair_args(pair) + QUICK, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--depth" not in err and "vgg11" in err, err


@pytest.mark.parametrize("kind", ["symlink_loop", "directory", "broken_symlink"])
def test_odd_checkpoint_paths_get_their_own_message(kind, tmp_path, trained_pair, capsys):
    path = tmp_path / "x.safetensors"
    if kind == "symlink_loop":
        path.symlink_to(path)
        expected = "symlink loop"
    elif kind == "directory":
        path.mkdir()
        expected = "is a directory"
    else:
        path.symlink_to(tmp_path / "nowhere.safetensors")
        expected = "broken symlink"
    code, _, err = run(["--ckpt-a", str(trained_pair[0]), "--ckpt-b", str(path)] + QUICK, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


ABSURD = [["--width", "1000000000"], ["--widths", "1," + "9" * 20], ["--epochs", "10000000000"], ["--seeds", "0,-1"]]


@pytest.mark.parametrize("flags", ABSURD)
def test_absurd_sizes_are_range_errors(flags, capsys):
    code, _, err = run(flags + ["--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (Path(os.environ["LEWC_DATA"]) / "checkpoints").exists()


def test_n_test_above_the_test_set_is_all_of_it_and_named_so(tmp_path, trained_pair, capsys):
    base = pair_args(trained_pair) + ["--no-controls", "--align", "none", "--lams", "0,0.5,1"]
    code, out1, err1 = run(base + ["--n-test", "1000000"], capsys)
    assert code == 0 and "exceeds the 1000 test images" in err1, err1
    code, out2, err2 = run(base, capsys)
    assert code == 0 and "reusing" in err2 and out2.strip().splitlines()[-1] == out1.strip().splitlines()[-1]
    rep = json.loads(Path(out1.strip().splitlines()[-1]).read_text())
    assert rep["split_sizes"]["test"] == 1000


def test_debris_of_dead_runs_is_cleaned_and_of_live_runs_kept(tmp_path):
    import socket

    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = {
        "dead": f"{TMP_PREFIX}r-pid{dead.stdout.strip()}@{host}-abc123",
        "dead_earlier_version": f".tmp-r-pid{dead.stdout.strip()}@{host}-abc123",
        "alive": f"{TMP_PREFIX}r-pid{os.getpid()}@{host}-abc123",
        "other_host": f"{TMP_PREFIX}r-pid1@elsewhere.example-abc123",
        "unparsed_fresh": f"{TMP_PREFIX}r-killed",
        "users_own": ".tmp-r-killed",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    os.utime(tmp_path / names["users_own"], (0, 0))  # old, but not named as lewc's: kept
    clean_stale(tmp_path)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names["alive"], names["other_host"], names["unparsed_fresh"], names["users_own"]}


def test_a_failed_download_leaves_no_dataset_folder(isolated_data_home, monkeypatch):
    import torchvision.datasets as tvd

    from lewc.training.data import load_dataset

    class Offline:
        def __init__(self, root, train=True, download=False):
            (Path(root) / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)  # what torchvision does first
            raise OSError("network unreachable")

    monkeypatch.setattr(tvd, "MNIST", Offline)
    with pytest.raises(LewcError, match="download failed"):
        load_dataset("mnist")
    assert not (isolated_data_home / "datasets" / "MNIST").exists()
