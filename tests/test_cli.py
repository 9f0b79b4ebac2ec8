"""The ``lewc`` command: subcommands dispatch to the existing mains, lazily; one meaning per flag."""

import subprocess
import sys

import pytest
from cli_runner import run_cli

import lewc
from lewc import cli


def test_importing_the_dispatcher_loads_no_driver():
    code = "import sys, lewc.cli; print(sorted(m for m in sys.modules if m.startswith(('lewc.commands', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_of_lewc_and_of_every_subcommand(capsys):
    code, out, _ = run_cli(cli.main, ["--version"], capsys)
    assert code == 0 and out.strip() == f"lewc {lewc.__version__}"
    for name in ("verify", "train", "pair", "sweep", "study", "figs"):
        code, out, err = run_cli(cli.main, [name, "--version"], capsys)
        assert code == 0 and f"lewc {lewc.__version__}" in out, (name, err)


def test_subcommands_run_the_same_main_as_python_m(capsys, isolated_data_home):
    from lewc.commands import train

    argv = ["--model", "mlp", "--width", "3", "--seed", "5", "--dry-run"]
    _, direct, _ = run_cli(train.main, argv, capsys)
    code, via_lewc, _ = run_cli(cli.main, ["train", *argv], capsys)
    assert code == 0 and via_lewc == direct and direct.strip().endswith(".safetensors")
    code, out, _ = run_cli(cli.main, ["pair", "--model", "mlp", "--width", "3", "--seeds", "0,1", "--dry-run"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "unknown subcommand 'nope'"),
        (["pair", "--model", "mlp", "--width", "1", "--seeds", "0", "1"], "unrecognized arguments: 1"),
        (["pair", "--model", "mlp", "--width", "1", "--seeds", "3,3"], "must differ"),
        (["train", "--model", "mlp", "--width", "1", "--threads", "0"], "--threads must be a positive integer"),
    ],
)
def test_bad_subcommands_and_flags_are_one_line_exit_2(argv, message, capsys):
    code, _, err = run_cli(cli.main, argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_every_subcommand_is_a_module_of_the_installed_package():
    import importlib

    for name, (module, _) in cli.COMMANDS.items():
        assert module.startswith("lewc."), name
        assert callable(importlib.import_module(module).main), name


def test_the_console_script_is_declared():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["lewc"] == "lewc.cli:main" and project["requires-python"] == ">=3.11"
