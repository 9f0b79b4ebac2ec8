"""Issue 32: one admission gate for weights on every path, measured numbers only, quiet runs, --out that
stays in its folder."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_runner import run_cli
from test_api import Net, fit, make_data
from test_reliability import QUICK, copy_pair, edit_sidecar, pair_args, replace_weights

import lewc
from lewc import verify
from lewc.core.errors import LewcError
from lewc.pipeline.folders import TMP_PREFIX, check_out, clean_stale
from lewc.training import checkpoints


def run(argv, capsys):
    return run_cli(verify.main, argv, capsys)


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1


def plain_state_dicts(tmp_path, trained_pair, transform_b=None, suffix=".pth"):
    """The session's pair as sidecar-less state dicts (``--arch``), B optionally transformed."""
    paths = []
    for tag, path in zip("ab", trained_pair, strict=True):
        model, meta = checkpoints.load(path)
        state = model.state_dict()
        if tag == "b" and transform_b is not None:
            state = {k: transform_b(k, v) for k, v in state.items()}
        out = tmp_path / f"{tag}{suffix}"
        if suffix == ".safetensors":
            safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(out))
        else:
            torch.save(state, out)
        paths.append(out)
    arch = f"mlp:width={meta.width},base_width={meta.base_width}"
    return ["--arch", arch, "--dataset", "synthetic", "--ckpt-a", str(paths[0]), "--ckpt-b", str(paths[1])]


# --- item 1: the gate --------------------------------------------------------------------------------------


def test_an_integer_state_dict_is_refused_naming_file_and_tensor(tmp_path, trained_pair, capsys):
    argv = plain_state_dicts(tmp_path, trained_pair, lambda k, v: (v * 100).to(torch.int32))
    code, _, err = run(argv + QUICK + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2 and one_line(err), err
    assert "b.pth" in err and "tensor linears.0.weight is torch.int32" in err
    assert not (tmp_path / "out").exists()


def test_a_safetensors_header_lying_about_the_dtype_is_refused_naming_the_file(tmp_path, trained_pair, capsys):
    argv = plain_state_dicts(tmp_path, trained_pair, suffix=".safetensors")
    path = Path(argv[-1])
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    for key, entry in header.items():
        if key != "__metadata__":
            entry["dtype"] = "I32"  # same width as F32: the bytes read as integers
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    code, _, err = run(argv + QUICK + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2 and one_line(err) and "b.safetensors" in err and "int32" in err, err
    assert not (tmp_path / "out").exists()


def test_absurd_finite_weights_are_refused_on_every_path(tmp_path, trained_pair, capsys, api_pair, api_data):
    huge = lambda k, v: v * 1e30  # noqa: E731 - finite in float32
    argv = plain_state_dicts(tmp_path, trained_pair, huge)
    code, _, err = run(argv + QUICK + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2 and one_line(err) and "b.pth" in err and "absurd" in err, err
    pair = copy_pair(tmp_path, trained_pair)
    replace_weights(pair[1], huge)
    code, _, err = run(pair_args(pair) + QUICK + ["--out", str(tmp_path / "out2")], capsys)
    assert code == 2 and one_line(err) and "absurd" in err and pair[1].name in err, err
    a, b = api_pair
    b_huge = Net()
    b_huge.load_state_dict({k: v * 1e30 for k, v in b.state_dict().items()})
    with pytest.raises(LewcError, match="model_b.*absurd"):
        lewc.verify_pair(a, b_huge, train=api_data[0], test=api_data[1], **FAST)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


FAST = dict(lams=(0, 0.5, 1), align="none", controls=False)


def test_chance_level_endpoints_are_refused_on_every_path_unless_opted_in(tmp_path, trained_pair, capsys, api_data):
    torch.manual_seed(3)
    a, b = Net(), Net()  # untrained: at chance on the 5-class problem
    with pytest.raises(LewcError, match="at chance.*allow_chance"):
        lewc.verify_pair(a, b, train=api_data[0], test=api_data[1], **FAST)
    rep = lewc.verify_pair(a, b, train=api_data[0], test=api_data[1], allow_chance=True, **FAST)
    assert rep.report()["admission"]["allow_chance"] is True and rep.report()["admission"]["at_chance"]
    capsys.readouterr()  # the opted-in run's at-chance warnings
    argv = plain_state_dicts(tmp_path, trained_pair, lambda k, v: torch.zeros_like(v))  # B: one class
    code, _, err = run(argv + QUICK + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2 and one_line(err) and "at chance" in err and "b.pth" in err, err
    assert not (tmp_path / "out").exists()
    pair = copy_pair(tmp_path, trained_pair)
    replace_weights(pair[1], lambda k, v: torch.zeros_like(v))
    code, out, err = run(pair_args(pair) + QUICK + ["--out", str(tmp_path / "ok"), "--allow-chance"], capsys)
    assert code == 0, err
    admission = json.loads((tmp_path / "ok" / "report.json").read_text())["admission"]
    assert admission["allow_chance"] is True and admission["at_chance"] == ["B"]


# --- item 5: only measured numbers are facts -----------------------------------------------------------------


def test_a_sidecars_own_numbers_are_nested_as_unverified(tmp_path, trained_pair, capsys):
    pair = copy_pair(tmp_path, trained_pair)
    edit_sidecar(pair[1], test_acc=0.999, test_loss=0.001)
    code, out, err = run(pair_args(pair) + QUICK + ["--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    for end in ("a", "b"):
        assert not {"test_acc", "train_acc", "test_loss", "train_loss", "history"} & set(rep["pair"][end])
    assert rep["pair"]["b"]["unverified_sidecar_claims"]["test_acc"] == 0.999
    assert rep["endpoint_test_acc"]["b"] < 99.0  # the measured one, in %
    assert "0.999" not in (tmp_path / "out" / "report.md").read_text()


# --- item 6: quiet -------------------------------------------------------------------------------------------


def test_the_api_and_quiet_runs_print_no_library_warnings(tmp_path, trained_pair, capfd, api_pair, api_data):
    a, b = api_pair
    lewc.verify_pair(a, b, train=api_data[0], test=api_data[1], **FAST)
    assert capfd.readouterr().err == ""
    code, _, err = run_cli(verify.main, pair_args(trained_pair) + QUICK + ["--out", str(tmp_path / "o")], capfd)
    assert code == 0 and err == "", err


def test_quiet_warnings_turn_library_warnings_into_debug_lines(caplog):
    import warnings

    import numpy as np

    from lewc.core.logs import quiet_warnings

    caplog.set_level("DEBUG", logger="lewc")
    with quiet_warnings():
        np.nanmax(np.array([np.nan]))
        np.nanmax(np.array([np.nan]))
        warnings.warn("from a test module", UserWarning, stacklevel=1)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [lvl for lvl, m in lines if "All-NaN" in m] == ["DEBUG"]  # once, as a debug line


# --- item 4: outputs stay in their folder -------------------------------------------------------------------


def test_out_through_a_symlink_writes_into_the_target_and_leaves_no_debris(tmp_path, trained_pair, capsys):
    target = tmp_path / "real"
    target.mkdir()
    (target / "old.txt").write_text("previous run")
    parent = tmp_path / "user"
    parent.mkdir()
    link = parent / "link"
    link.symlink_to(target)
    code, out, err = run(pair_args(trained_pair) + QUICK + ["--out", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and (target / "report.json").is_file() and not (target / "old.txt").exists()
    assert Path(out.strip().splitlines()[-1]).is_file()
    assert sorted(p.name for p in parent.iterdir()) == ["link"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no lock, no temp
    dangling = parent / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    code, _, err = run(pair_args(trained_pair) + QUICK + ["--out", str(dangling)], capsys)
    assert code == 2 and one_line(err) and "does not exist" in err and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "tab\there", "esc\x1b[31m", "bidi\u202eevil", "nul\x7f"])
def test_control_characters_in_paths_are_refused(name, tmp_path, trained_pair, capsys):
    code, _, err = run(pair_args(trained_pair) + QUICK + ["--out", str(tmp_path / name)], capsys)
    assert code == 2 and one_line(err) and "control character" in err, err
    assert list(tmp_path.iterdir()) == [tmp_path / "data"] or not any(p.name != "data" for p in tmp_path.iterdir())
    with pytest.raises(LewcError, match="control character"):
        check_out(tmp_path / name)
    code, _, err = run(["--ckpt-a", str(tmp_path / name), "--ckpt-b", str(trained_pair[1])] + QUICK, capsys)
    assert code == 2 and one_line(err) and "--ckpt-a" in err and "control character" in err, err


def test_cleanup_removes_every_stale_temp_of_a_dead_owner_links_included(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    import socket

    tag = f"pid{proc.pid}@{socket.gethostname()}"
    (tmp_path / "target").mkdir()
    link = tmp_path / f"{TMP_PREFIX}old-out-{tag}-abc123"
    link.symlink_to(tmp_path / "target")
    dangling = tmp_path / f"{TMP_PREFIX}old-x-{tag}-def456"
    dangling.symlink_to(tmp_path / "gone")
    file = tmp_path / f"{TMP_PREFIX}y-{tag}-ghi789"
    file.write_text("debris")
    live = tmp_path / f"{TMP_PREFIX}z-pid{os.getpid()}@{socket.gethostname()}-jkl012"
    live.symlink_to(tmp_path / "target")
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["target", live.name])
    assert (tmp_path / "target").is_dir()  # a link is removed, never followed


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_data():
    return make_data(600, 0), make_data(200, 1)


@pytest.fixture(scope="module")
def api_pair(api_data):
    torch.manual_seed(0)
    a = fit(Net(), api_data[0], 0, 3)
    torch.manual_seed(1)
    b = fit(Net(), api_data[0], 1, 3)
    return a, b
