"""``python -m lewc.verify`` end to end, its bad-input contract, sweeps and paper_figs."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
from cli_runner import run_cli

from lewc import verify
from lewc.core.io import sha256_file
from lewc.training import checkpoints
from lewc.training.recipe import default_config
from lewc.training.train import train

REQUIRED_CLAIMS = {
    "lmc_accuracy",
    "lmc_loss_calibrated",
    "lewc_weighting",
    "lewc_magnitude",
    "weak_additivity",
    "reciprocal_orthogonality",
    "ensemble_equivalence",
}
LEWC_CLAIMS = (
    "lewc_weighting",
    "lewc_magnitude",
    "weak_additivity",
    "reciprocal_orthogonality",
    "ensemble_equivalence",
)


def run(argv, capsys):
    return run_cli(verify.main, argv, capsys)


def quick_args(pair) -> list[str]:
    """The pair, quiet, without controls: what most end-to-end tests of verify start from."""
    return ["--ckpt-a", str(pair[0]), "--ckpt-b", str(pair[1]), "--quiet", "--no-controls"]


def test_verify_a_pair_writes_a_complete_report(tmp_path, trained_pair, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(
        [
            "--ckpt-a",
            str(trained_pair[0]),
            "--ckpt-b",
            str(trained_pair[1]),
            "--out",
            str(out),
            "--lams",
            "0,0.25,0.5,0.75,1",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    assert stdout.strip().splitlines()[-1] == str(out / "report.json")
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "lewc.report/2"
    assert rep["lams"] == [0, 0.25, 0.5, 0.75, 1]
    assert rep["pair"]["a"]["sha256"] == sha256_file(trained_pair[0])
    assert set(rep["metrics"]) >= {"acc", "loss", "loss_cal", "beta"}
    claimed = rep["pair"]["a"]["unverified_sidecar_claims"]["test_acc"]  # the sidecar's own number, nested
    assert rep["metrics"]["acc"][0] == pytest.approx(100 * claimed, abs=1e-7)  # λ = 0 is A, in %
    for key in ("acc_mid", "acc_max", "loss_mid_raw", "loss_max_raw", "loss_mid_cal", "loss_max_cal"):
        bar = rep["barriers"][key]
        assert bar["ci"][0] <= bar["value"] <= bar["ci"][1]
    assert rep["barriers"]["loss_mid_cal"]["value"] <= rep["barriers"]["loss_mid_raw"]["value"] + 1e-9
    assert {c["id"] for c in rep["claims"]} >= REQUIRED_CLAIMS
    assert all(c["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") for c in rep["claims"])
    layer = rep["layers"][-1]
    assert {
        "name",
        "depth",
        "coef_a",
        "coef_a_ci",
        "r2",
        "cos_lewc",
        "cos_llfc",
        "rel_err_lewc",
        "k_coord",
        "k_gram",
        "weak_additivity",
        "reciprocal_orthogonality",
    } <= set(layer)
    assert len(rep["ensemble"]["lewc"]["agreement"]) == 5
    for name in rep["files"]["figures"] + ["results.nc", "report.md"]:
        assert (out / name).stat().st_size > 0
    assert "![accuracy_loss](accuracy_loss.png)" in (out / "report.md").read_text()
    # the controls: exact LEWC passes every LEWC claim; exact LLFC (A with itself) fails the magnitude
    positive = {c["id"]: c for c in rep["controls"]["positive"]["claims"]}
    negative = {c["id"]: c for c in rep["controls"]["negative"]["claims"]}
    assert all(positive[cid]["verdict"] == "PASS" for cid in LEWC_CLAIMS), positive
    assert negative["lewc_magnitude"]["verdict"] == "FAIL"
    assert (
        negative["lewc_weighting"]["verdict"] == "INCONCLUSIVE" and "degenerate" in negative["lewc_weighting"]["note"]
    )
    assert (out / "control_positive.nc").is_file() and not list(out.parent.glob(".*tmp*"))
    check_outputs(out, rep)


def check_outputs(out: Path, rep: dict) -> None:
    """report.json valid against its schema, summary.csv tidy, results.nc small, documented, self-sufficient."""
    import jsonschema
    import pandas as pd

    from lewc.pipeline.pair import evaluate_verdicts
    from lewc.reporting import report
    from lewc.reporting.results import SAMPLE_VARIABLES, open_results

    jsonschema.validate(rep, report.schema())
    frame = pd.read_csv(out / "summary.csv")
    assert list(frame.columns) == ["kind", "name", "align", "value", "ci_lo", "ci_hi", "units"] + [
        "threshold",
        "direction",
        "verdict",
    ]
    claims = frame[frame["kind"] == "claim"].set_index(["name", "align"])
    for c in rep["claims"]:
        align = "none-weights" if c["id"] == "permutation_gap" else "none"
        row = claims.loc[(c["id"], align)]
        assert row.verdict == c["verdict"] and row.ci_lo == pytest.approx(c["ci"][0], abs=1e-9)
    barriers = frame[(frame["kind"] == "barrier") & (frame["align"] == "none")].set_index("name")
    assert set(barriers.units) == {"pp", "nats"}
    for name, bar in rep["barriers"].items():
        assert barriers.loc[name, "value"] == pytest.approx(bar["value"], abs=1e-9)
    with open_results(out / "results.nc") as res:
        assert not set(SAMPLE_VARIABLES) & set(res.variables)  # those live in samples.nc, on request
        for name, var in res.variables.items():
            assert {"long_name", "units", "description"} <= set(var.attrs), name
            assert " or " not in var.attrs["units"], name
        assert res["barrier_acc"].attrs["units"] == "pp" and res["acc"].attrs["units"] == "%"
        # the claims from results.nc alone are those of the report (stored replicates, no per-image data)
        again = {c.id: c for c in evaluate_verdicts([res.load()])}
    for c in rep["claims"]:
        assert again[c["id"]].verdict == c["verdict"]
        assert again[c["id"]].ci == pytest.approx(c["ci"], abs=1e-9), c["id"]
    # one interval per statistic: the acc_mid barrier and lmc_accuracy are the same bootstrap
    lmc = next(c for c in rep["claims"] if c["id"] == "lmc_accuracy")
    assert rep["barriers"]["acc_mid"]["ci"] == pytest.approx(lmc["ci"], abs=1e-9)


def bad(tmp_path, trained_pair, **change):
    args = {
        "--ckpt-a": str(trained_pair[0]),
        "--ckpt-b": str(trained_pair[1]),
        "--out": str(tmp_path / "out"),
        "--quiet": None,
    } | change
    return [x for k, v in args.items() for x in ([k] if v is None else [k, v])]


def corrupt_copy(tmp_path, src, how):
    dst = tmp_path / f"{how}.safetensors"
    dst.write_bytes(src.read_bytes())
    checkpoints.sidecar_path(dst).write_text(checkpoints.sidecar_path(src).read_text())
    if how == "flipped":
        raw = bytearray(dst.read_bytes())
        raw[-3] ^= 0xFF
        dst.write_bytes(bytes(raw))
    elif how == "nan":
        state = safetensors.torch.load_file(str(dst))
        state["head.weight"][0, 0] = float("nan")
        safetensors.torch.save_file(state, str(dst))
        meta = json.loads(checkpoints.sidecar_path(dst).read_text())
        meta["sha256"] = sha256_file(dst)
        checkpoints.sidecar_path(dst).write_text(json.dumps(meta))
    return str(dst)


BAD_FLAGS = {
    "lam_outside": {"--lams": "0,0.5,1.5"},
    "no_endpoint": {"--lams": "0,0.5,0.9"},
    "no_half": {"--lams": "0,0.4,1"},
    "nan_lam": {"--lams": "0,nan,0.5,1"},
    "empty_lams": {"--lams": ","},
    "n_test_1": {"--n-test": "1"},
    "bn_images_0": {"--bn-images": "0"},
    "bn_images_negative": {"--bn-images": "-1"},
    "bn_images_1": {"--bn-images": "1"},
    "batch_0": {"--batch-size-eval": "0"},
    "batch_negative": {"--batch-size-eval": "-1"},
    "device_mps": {"--device": "mps"},
    "device_meta": {"--device": "meta"},
    "recipe_flag_ignored": {"--wd": "1e-4"},
    "unknown_alignment": {"--align": "none,weight"},
    "alignment_twice": {"--align": "weights,weights"},
}


@pytest.mark.parametrize(
    "case", [*BAD_FLAGS, "wider_b", "corrupt", "nan", "same_checkpoint", "pt_file", "out_is_file", "out_under_file"]
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, trained_pair, synthetic, capsys):
    change = BAD_FLAGS.get(case, {})
    if case == "same_checkpoint":
        change = {"--ckpt-b": str(trained_pair[0])}
    if case == "pt_file":
        (tmp_path / "model.pt").write_bytes(b"not a pickle we would ever load")
        change = {"--ckpt-b": str(tmp_path / "model.pt")}
    if case in ("out_is_file", "out_under_file"):
        (tmp_path / "blocker").write_text("x")
        target = tmp_path / "blocker" if case == "out_is_file" else tmp_path / "blocker" / "sub"
        args = bad(tmp_path, trained_pair)
        args[args.index("--out") + 1] = str(target)
        code, _, stderr = run(args, capsys)
        assert code == 2 and len(stderr.strip().splitlines()) == 1 and (tmp_path / "blocker").read_text() == "x"
        return
    if case == "wider_b":
        wide = train(
            default_config("mlp", 3, "synthetic", 1, base_width=32, epochs=1),
            tmp_path / "w",
            "cpu",
            progress=False,
            dataset=synthetic,
        )
        change = {"--ckpt-b": str(wide)}
    if case in ("corrupt", "nan"):
        change = {"--ckpt-b": corrupt_copy(tmp_path, trained_pair[1], "flipped" if case == "corrupt" else "nan")}
    code, stdout, stderr = run(bad(tmp_path, trained_pair, **change), capsys)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error:")
    assert not (tmp_path / "out").exists()


def test_missing_paper_scale_checkpoints_without_training(tmp_path, capsys):
    code, _, stderr = run(["--model", "resnet20", "--width", "32", "--dataset", "cifar10", "--no-train"], capsys)
    assert code == 2
    assert "missing checkpoint" in stderr and "lewc train" in stderr and len(stderr.strip().splitlines()) == 1


def test_expensive_cpu_training_needs_allow_slow(tmp_path, capsys):
    code, _, stderr = run(["--model", "resnet20", "--width", "32", "--dataset", "cifar10", "--device", "cpu"], capsys)
    assert code == 2 and "--allow-slow" in stderr


def test_interrupted_verify_leaves_no_report(tmp_path, trained_pair, capsys, monkeypatch):
    from lewc.reporting import plots

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "pair_figures", interrupt)
    code, _, _ = run(bad(tmp_path, trained_pair), capsys)
    assert code == 130
    out = tmp_path / "out"
    assert not (out / "report.json").exists() and not (out / "results.nc").exists()
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_width_sweep_and_paper_figures(tmp_path, isolated_data_home, synthetic, capsys):
    for w in (1, 2):
        for s in range(4):
            train(
                default_config("mlp", w, "synthetic", s, base_width=32, epochs=2),
                isolated_data_home / "checkpoints",
                "cpu",
                progress=False,
                dataset=synthetic,
            )
    code, stdout, stderr = run(
        [
            "--dataset",
            "synthetic",
            "--widths",
            "1,2",
            "--seeds",
            "0,1,2,3",
            "--epochs",
            "2",
            "--base-width",
            "32",
            "--lams",
            "0,0.5,1",
            "--n-test",
            "300",
            "--no-train",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, stderr
    report_path = Path(stdout.strip().splitlines()[-1])
    summary = json.loads(report_path.read_text())
    assert summary["schema"] == "lewc.sweep-report/3" and summary["widths"] == [1, 2] and len(summary["pairs"]) == 2
    from lewc.reporting.results import STUDY_SCHEMA, open_results

    # one product for every width sweep: the study's study.nc over width × pair, with its figures and study.md
    study = open_results(report_path.with_name("study.nc"), STUDY_SCHEMA).load()
    assert dict(study.barrier.sizes) == {"width": 2, "pair": 2, "align": 2, "barrier_name": 3}
    assert list(study.align.values) == ["none", "weights"] and (study.error.values == "").all()
    for key, pair_report in summary["pair_reports"].items():  # each pair's numbers, as its own report has them
        w, p = int(key[1 : key.index("_")]), int(key[key.index("_p") + 2 :])
        rep = json.loads(Path(pair_report).read_text())
        cell = study.barrier.sel(width=w, pair=p, align="none")
        assert float(cell.sel(barrier_name="acc_mid")) == pytest.approx(rep["barriers"]["acc_mid"]["value"], abs=1e-9)
    spec = json.loads(study.attrs["spec"])
    assert spec["dataset"] == "synthetic" and spec["overrides"]["epochs"] == 2 and spec["seeds"] == [0, 1, 2, 3]
    for stem in ("study_barrier_vs_width", "study_beta_vs_width"):
        assert (report_path.parent / f"{stem}.png").is_file()
    assert (
        "# Width sweep: width 1 = MLP ×1 (3×32), width 2 = MLP ×2 (3×64)"
        in report_path.with_name("study.md").read_text()
    )
    assert not list(report_path.parent.glob("sweep.nc"))
    gap = {c["id"]: c for c in summary["claims_over_pairs"]["1"]}["permutation_gap"]
    assert gap["n_pairs"] == 2 and len(gap["per_pair"]) == 2
    from lewc.commands.figs import main as figs_main

    figs_main(["--out", str(tmp_path / "figs")])
    index = (tmp_path / "figs" / "index.md").read_text()
    assert "barrier_vs_width" in index and "python -m lewc.verify" in index
    assert len(list((tmp_path / "figs").glob("*.png"))) >= 9


def test_two_analyses_of_one_pair_leave_two_folders_and_a_rerun_reuses(tmp_path, trained_pair, capsys):
    base = quick_args(trained_pair)
    code1, out1, _ = run(base + ["--lams", "0,0.5,1", "--n-test", "200"], capsys)
    code2, out2, _ = run(base + ["--lams", "0,0.25,0.5,0.75,1", "--n-test", "200"], capsys)
    assert code1 == code2 == 0
    first, second = out1.strip().splitlines()[-1], out2.strip().splitlines()[-1]
    assert first != second
    before = (tmp_path / "x").exists() or open(first).read()
    loud = [a for a in base if a != "--quiet"]  # -q/--quiet keeps warnings only; "reusing" is an INFO line
    code3, out3, err3 = run(loud + ["--lams", "0,0.5,1", "--n-test", "200"], capsys)
    assert code3 == 0 and out3.strip().splitlines()[-1] == first and "reusing" in err3
    assert open(first).read() == before


def test_keep_samples_writes_the_per_image_data_that_reproduces_the_stored_claims(tmp_path, trained_pair, capsys):
    import xarray as xr

    from lewc.reporting.results import SAMPLE_VARIABLES, open_results
    from lewc.stats.claims import evaluate_claims

    out = tmp_path / "kept"
    code, _, err = run(quick_args(trained_pair) + ["--n-test", "200", "--keep-samples", "--out", str(out)], capsys)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["files"]["samples"] == ["samples.nc"]
    res, samples = open_results(out / "results.nc").load(), open_results(out / "samples.nc").load()
    assert {"gram", "act", "wa_terms", "ro_terms", "logits_test"} <= set(samples.data_vars) <= set(SAMPLE_VARIABLES)
    claim_vars = [v for v in res.data_vars if v.startswith(("claim_", "permutation_gap"))]
    raw = xr.merge([res.drop_vars(claim_vars + ["claim", "replicate"], errors="ignore"), samples], compat="override")
    stored = {c["id"]: c for c in rep["alignments"]["none"]["claims"] or rep["claims"]}
    for c in evaluate_claims(raw.sel(align="none", drop=True)):  # redrawn from the per-image data
        assert c.verdict == stored[c.id]["verdict"]
        assert c.ci == pytest.approx(stored[c.id]["ci"], abs=1e-9), c.id


def test_paper_figs_ignores_a_killed_runs_leftovers(tmp_path, trained_pair, isolated_data_home, capsys):
    code, out, _ = run(quick_args(trained_pair) + ["--n-test", "200"], capsys)
    assert code == 0
    folder = Path(out.strip().splitlines()[-1]).parent
    debris = folder.parent / f".lewc-tmp-{folder.name}-killed"
    debris.mkdir()
    (debris / "results.nc").write_bytes((folder / "results.nc").read_bytes()[:1000])  # half-written
    from lewc.commands.figs import collect_results

    found = collect_results(isolated_data_home / "results")
    assert found == [folder / "results.nc"]


@pytest.mark.parametrize("kind", ["foreign", "garbage", "foreign_study"])
def test_paper_figs_refuses_foreign_files_in_one_line(tmp_path, kind):
    """A netCDF file lewc did not write (or not netCDF at all) is exit 2 with the file named."""
    import xarray as xr

    from lewc.commands.figs import main as figs_main

    folder = tmp_path / "results" / "someone_else"
    folder.mkdir(parents=True)
    name = "study.nc" if kind == "foreign_study" else "results.nc"
    if kind == "garbage":
        (folder / name).write_bytes(b"not a netCDF file at all")
    else:
        xr.Dataset({"barrier": ("lam", np.zeros(3))}, attrs={"schema": "other/1"}).to_netcdf(folder / name)
    with pytest.raises(SystemExit) as exit_info:
        figs_main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "figs")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "figs").exists()


def test_alignments_side_by_side_and_the_random_control(tmp_path, trained_pair, isolated_data_home, capsys):
    """--align stores every alignment along ``align``; no alignment changes B's function (the λ = 1 end)."""
    from lewc.reporting.results import for_alignment, open_results

    argv = ["--n-test", "300", "--lams", "0,0.25,0.5,0.75,1", "--align", "random,weights,activations"]
    code, out, err = run(quick_args(trained_pair) + argv, capsys)
    assert code == 0, err
    report_path = Path(out.strip().splitlines()[-1])
    res = open_results(report_path.with_name("results.nc")).load()
    assert list(res.align.values) == ["none", "random", "weights", "activations"]
    plain = for_alignment(res)
    ends = dict(lam=[0.0, 1.0], split="test")
    for method in ("random", "weights", "activations"):
        moved = for_alignment(res, method)
        np.testing.assert_allclose(moved.loss.sel(**ends).values, plain.loss.sel(**ends).values, rtol=1e-5)
        np.testing.assert_allclose(moved.acc.sel(**ends).values, plain.acc.sel(**ends).values, atol=150 / 300)
    # a random permutation moves the interior of the path (it is a different merge), not its ends
    assert not np.allclose(for_alignment(res, "random").loss.sel(lam=0.5).values, plain.loss.sel(lam=0.5).values)
    rep = json.loads(report_path.read_text())
    assert set(rep["alignments"]) == {"none", "random", "weights", "activations"}
    info = rep["alignments"]["weights"]["alignment"]
    assert info["method"] == "weights" and info["objective_after"] >= info["objective_before"]
    assert "permutation_gap" in {c["id"] for c in rep["claims"]}
    aligned = sorted((isolated_data_home / "checkpoints" / "aligned").glob("*_weights_s0.json"))
    assert len(aligned) == 1 and json.loads(aligned[0].read_text())["alignment"]["permutations"]
    assert "Permutations side by side" in report_path.with_name("report.md").read_text()
    assert report_path.with_name("path.png").is_file()  # every alignment on one path figure


def test_a_permuted_copy_of_a_is_the_exact_needed_permutation_control(
    tmp_path, trained_pair, isolated_data_home, capsys
):
    """B = A with its units shuffled: weight matching must undo it exactly (aligned barrier 0), so the
    whole unaligned barrier is the gap and permutation_gap FAILs — the rival holding exactly."""
    from lewc import align

    model_a, meta_a = checkpoints.load(trained_pair[0])
    shuffled_state, _ = align.align("random", model_a, model_a, tuple(meta_a.in_shape), seed=11)
    # a sidecar agrees with its own recipe; save replaces A's sha256, schema, file name and time
    meta_b = dataclasses.replace(meta_a, seed=99, train_config=meta_a.train_config | {"seed": 99})
    path_b = checkpoints.save(align.aligned_model(model_a, shuffled_state), tmp_path / "shuffled", meta_b)
    argv = ["--ckpt-a", str(trained_pair[0]), "--ckpt-b", str(path_b), "--quiet", "--no-controls"]
    code, out, err = run(argv + ["--n-test", "300", "--lams", "0,0.25,0.5,0.75,1"], capsys)
    assert code == 0, err
    rep = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    aligned = rep["alignments"]["weights"]["barriers"]
    assert aligned["acc_mid"]["value"] == 0.0 and abs(aligned["loss_mid_cal"]["value"]) < 1e-9
    gap = {c["id"]: c for c in rep["claims"]}["permutation_gap"]
    unaligned = rep["alignments"]["none"]["barriers"]["loss_mid_cal"]["value"]
    assert gap["value"] == pytest.approx(unaligned, abs=1e-9) and gap["verdict"] == "FAIL"


def test_selecting_an_alignment_leaves_the_stacked_results_untouched():
    """for_alignment(·, "weights") names the aligned B in its slice only, never in the stacked Dataset."""
    import xarray as xr

    from lewc.reporting.results import for_alignment, stack_alignments

    def one(sha_b):
        return xr.Dataset({"x": ("lam", np.zeros(2))}, attrs={"sha256_a": "a", "sha256_b": sha_b, "sidecar_b": sha_b})

    stacked = stack_alignments({"none": one("b"), "weights": one("b-aligned")})
    assert for_alignment(stacked, "weights").attrs["sha256_b"] == "b-aligned"
    assert stacked.attrs["sha256_b"] == "b" and for_alignment(stacked).attrs["sha256_b"] == "b"
