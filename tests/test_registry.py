"""One home per concept: families are registered specs, train and verify name the same checkpoint,
and the library never reaches into ``experiments``."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from cli_runner import run_cli

from lewc import verify
from lewc.commands import train as train_cli
from lewc.core.errors import LewcError
from lewc.models import family_names, get_family
from lewc.pipeline.endpoints import checkpoint_folder
from lewc.reporting.results import for_alignment
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
    """Every command lives in the installed package: nothing in lewc imports, names or shells out to the
    repository's ``experiments/`` (specs and scripts only) or a driver outside the package."""
    for path in LEWC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in ("experiments", "paper_figs") for n in names), f"{path} imports them"
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert not any(s.startswith(("experiments.", "paper_figs")) for s in strings), f"{path} names them"
        assert '"-m", "experiments' not in path.read_text(), f"{path} shells out to experiments"


# the command lines and the shared flag declarations they use; argparse and sys.argv stop here
CLI_MODULES = {"verify.py", "cli.py", "core/errors.py", "core/logs.py", "training/recipe.py"}


def test_no_namespace_or_argv_below_the_command_lines():
    """The packages take typed arguments: only the CLIs (and the flag declarations they share) see argparse."""
    for path in LEWC.rglob("*.py"):
        if str(path.relative_to(LEWC)) in CLI_MODULES or path.parent.name == "commands":
            continue
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "argparse" not in imported, f"{path} imports argparse"
        attributes = {
            (n.value.id, n.attr)
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
        }
        assert ("sys", "argv") not in attributes, f"{path} reads sys.argv"


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


# Every extension point below is one file in tests/ plus one registration there, run through verify.
TINY_RUN = ["--width", "1", "--base-width", "8", "--epochs", "1", "--lams", "0,0.25,0.5,0.75,1", "--quiet"]


def test_a_dataset_added_in_one_file_trains_and_verifies_end_to_end(tmp_path, capsys):
    import toy_dataset  # noqa: F401  (registers "tiny")

    from lewc.training.data import dataset_names, get_dataset, unregister_dataset

    try:
        assert "tiny" in dataset_names() and get_dataset("tiny").n_calib == 50
        out = tmp_path / "tiny"
        argv = ["--model", "mlp", "--dataset", "tiny", "--align", "none", "--n-test", "100", "--out", str(out)]
        code, _, err = run_cli(verify.main, argv + TINY_RUN + ["--epochs", "10"], capsys)
        assert code in (0, None), err
        rep = json.loads((out / "report.json").read_text())
        assert rep["dataset"] == "tiny" and rep["split_sizes"]["calib"] == 50
        assert rep["split_sizes"]["test"] == 100
    finally:
        unregister_dataset("tiny")
    with pytest.raises(LewcError, match=r"^unknown dataset 'tiny'; choose one of .*synthetic"):
        default_config("mlp", 1, "tiny", 0)


def test_a_claim_added_in_one_file_is_evaluated_and_reported(tmp_path, capsys, toy_claim):
    from lewc.stats.claims import claim_ids, get_claim, unregister_claim

    try:
        assert get_claim("endpoints_agree") is toy_claim.ENDPOINTS_AGREE
        out = tmp_path / "claim"
        argv = ["--model", "mlp", "--dataset", "synthetic", "--align", "none", "--n-test", "100", "--out", str(out)]
        code, _, err = run_cli(verify.main, argv + TINY_RUN, capsys)
        assert code in (0, None), err
        rep = json.loads((out / "report.json").read_text())
        claim = {c["id"]: c for c in rep["claims"]}["endpoints_agree"]
        acc = rep["endpoint_test_acc"]
        assert claim["value"] == pytest.approx(abs(acc["a"] - acc["b"]), abs=1e-6)  # both in %
        assert claim["verdict"] == "PASS" and claim["ci"][0] <= claim["value"] <= claim["ci"][1]
        assert "endpoints_agree" in rep["claim_specs"]
    finally:
        unregister_claim("endpoints_agree")
    assert "endpoints_agree" not in claim_ids()
    with pytest.raises(LewcError, match=r"^unknown claim 'endpoints_agree'; choose one of lmc_accuracy"):
        get_claim("endpoints_agree")


def test_an_alignment_method_added_in_one_file_is_swept_and_reported(tmp_path, capsys):
    import toy_alignment  # noqa: F401  (registers "reverse")

    from lewc.align.methods import check_methods, method_names, unregister_method

    try:
        assert check_methods("none,reverse") == ["none", "reverse"]
        out = tmp_path / "align"
        argv = ["--model", "mlp", "--dataset", "synthetic", "--align", "none,reverse", "--no-controls"]
        argv += ["--n-test", "100", "--out", str(out), "--keep-samples"]  # per-image correctness: samples.nc
        code, _, err = run_cli(verify.main, argv + TINY_RUN, capsys)
        assert code in (0, None), err
        rep = json.loads((out / "report.json").read_text())
        assert set(rep["alignments"]) == {"none", "reverse"}
        assert rep["alignments"]["reverse"]["alignment"]["method"] == "reverse"
        # a permutation of B's units leaves B's function unchanged (λ = 1), but not the path between
        with xr.open_dataset(out / "samples.nc") as res:
            none, rev = for_alignment(res, "none"), for_alignment(res, "reverse")
            np.testing.assert_array_equal(rev["correct"].sel(lam=1.0), none["correct"].sel(lam=1.0))
            np.testing.assert_array_equal(rev["correct"].sel(lam=0.0), none["correct"].sel(lam=0.0))
            assert not np.array_equal(rev["correct"].sel(lam=0.5), none["correct"].sel(lam=0.5))
    finally:
        unregister_method("reverse")
    assert "reverse" not in method_names()
    with pytest.raises(LewcError, match=r"^unknown alignment \['reverse'\]; choose from none, weights"):
        check_methods("reverse")


def test_a_family_builder_is_keyword_only_so_a_swapped_argument_fails_loudly(isolated_data_home):
    """``build`` calls a family's builder by name: a positional builder is refused when registered, and a
    registered builder called positionally (``width`` and ``base_width`` swapped unnoticed) raises."""
    from lewc.models import ModelFamily, build, register_family

    family = get_family("mlp")
    with pytest.raises(TypeError, match="positional"):
        family.builder((1, 8, 8), 4, 8, 1, 3, "none", True)  # width ↔ base_width: cannot be written at all
    model = build("mlp", 2, 4, (1, 8, 8), base_width=8)
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)][:3] == [16, 16, 16]

    positional = lambda in_shape, num_classes, width, base_width, depth, norm, bias: None  # noqa: E731
    with pytest.raises(ValueError, match=r"^model family 'bad': the builder's parameters \['in_shape'.*keyword-only"):
        register_family(ModelFamily(name="bad", builder=positional, default_dataset="synthetic", base_width=8))
    partial = lambda *, in_shape, num_classes, width, depth, norm, bias: None  # noqa: E731  (no base_width)
    with pytest.raises(ValueError, match=r"lacks \['base_width'\]"):
        register_family(ModelFamily(name="bad", builder=partial, default_dataset="synthetic", base_width=8))
    assert "bad" not in family_names()


def test_one_generic_registry_behind_every_extension_point():
    """Models, datasets, claims and alignment methods share ``lewc.core.registry.Registry``: the same
    register / get / names / unregister, the same one-line error naming the known records."""
    from lewc.align.methods import METHODS, methods_help
    from lewc.core.registry import Registry
    from lewc.models.registry import FAMILIES
    from lewc.stats.claims import CLAIMS, claim_ids, get_claim
    from lewc.training.data import DATASETS

    for registry, name in ((FAMILIES, "mlp"), (DATASETS, "synthetic"), (CLAIMS, "lmc_accuracy"), (METHODS, "weights")):
        assert isinstance(registry, Registry) and name in registry and registry.get(name) in registry.values()
        with pytest.raises(LewcError, match=rf"^unknown {registry.kind} 'nope'; choose (one of|from) .*{name}"):
            registry.get("nope")
    # the decorator form (torchvision's register_model): the function becomes the record's, named after it
    toy: Registry = Registry("toy", key=lambda r: r[0], make=lambda f, *, name=None: (name or f.__name__, f))

    @toy.register()
    def first():
        return 1

    assert toy.names() == ["first"] and toy.get("first")[1] is first
    toy.register(("first", first))  # the same record again: a no-op (a module imported twice)
    with pytest.raises(ValueError, match="^toy 'first' is already registered"):
        toy.register(("first", print))
    toy.unregister("first")
    assert toy.names() == [] and "first" not in toy
    # --align's help is generated from the registry: every method is listed with its description
    for method in METHODS.values():
        assert f"{method.name} = {method.description}" in methods_help()
    help_text = verify.build_parser().format_help()
    assert "random_direction" in " ".join(help_text.split())
    # permutation_gap is a registered claim like the others, compared between two alignments
    gap = get_claim("permutation_gap")
    assert gap.compares == "weights" and "permutation_gap" in claim_ids()
    assert "permutation_gap" not in claim_ids(per_alignment=True)
