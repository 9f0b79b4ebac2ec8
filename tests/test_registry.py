"""One home per concept: families are registered specs, train and verify name the same checkpoint,
and the library never reaches into ``experiments``."""

import ast
import json
from pathlib import Path

import pytest
from cli_runner import run_cli

from experiments import train as train_cli
from lewc import verify
from lewc.models import family_names, get_family
from lewc.pipeline.endpoints import checkpoint_folder
from lewc.training.recipe import default_config

LEWC = Path(__file__).resolve().parents[1] / "lewc"


@pytest.mark.parametrize("family", ["mlp", "vgg11", "vgg16", "resnet20"])
def test_train_and_verify_resolve_the_same_checkpoint_for_every_family(family, capsys, isolated_data_home):
    train_cli.main(["--model", family, "--width", "32", "--seed", "0", "--dry-run"])
    trained = Path(capsys.readouterr().out.strip().splitlines()[-1])
    args = verify.build_parser().parse_args(["--model", family, "--width", "32"])
    looked_up = verify.config_from_args(args, 32, 0).checkpoint_path(checkpoint_folder(args.ckpt_dir))
    assert trained == looked_up
    assert default_config(family, 32, None, 0).dataset == get_family(family).default_dataset
    assert not trained.exists()  # --dry-run trains nothing


def test_the_library_never_imports_experiments():
    """No import statement anywhere in lewc; only the ``lewc`` dispatcher (lewc/cli.py) names the drivers,
    as strings it imports lazily when their subcommand runs."""
    for path in LEWC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in ("experiments", "paper_figs") for n in names), f"{path} imports them"
            if path.name != "cli.py" or path.parent != LEWC:
                strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                assert not any(s.startswith(("experiments.", "paper_figs.")) for s in strings), f"{path} names them"
        assert '"-m", "experiments' not in path.read_text(), f"{path} shells out to experiments"


def test_a_family_added_in_one_file_runs_through_verify_end_to_end(tmp_path, capsys, isolated_data_home):
    import toy_family  # noqa: F401  (registers "toy")

    from lewc.models.registry import unregister_family

    try:
        assert "toy" in family_names()
        out = tmp_path / "toy"
        argv = ["--model", "toy", "--width", "1", "--epochs", "1", "--lams", "0,0.25,0.5,0.75,1", "--quiet"]
        code, _, err = run_cli(verify.main, argv + ["--n-test", "200", "--out", str(out)], capsys)
        assert code in (0, None), err
        rep = json.loads((out / "report.json").read_text())
        assert rep["pair"]["a"]["model"] == "toy" and rep["dataset"] == "synthetic"
        assert [layer["depth"] for layer in rep["layers"]] == [1, 2, 3]
        positive = {c["id"]: c["verdict"] for c in rep["controls"]["positive"]["claims"]}
        assert positive["lewc_weighting"] == "PASS" and positive["lewc_magnitude"] == "PASS"
    finally:
        unregister_family("toy")
