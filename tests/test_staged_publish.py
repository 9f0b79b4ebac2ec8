"""The main results are published before optional work can fail, and the positive control sweeps within the
main sweeps' memory (issue 31).

A verify run publishes its folder twice: the main results (every alignment's sweep and the claims, the
report's ``controls_status`` "pending"), then the same folder with the controls. A control that fails
leaves the main folder published, its report naming the failed control in one line, and fails the run; a
rerun with the same options reuses the main results and only runs the controls.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pytest
import torch
from cli_runner import run_cli
from fakecuda import FakeCuda

from lewc import verify
from lewc.pipeline import memplan
from lewc.pipeline import pair as pair_module
from lewc.reporting import report
from lewc.sweep.memory import MIN_COMPUTE_BATCH, plan_run
from lewc.training.checkpoints import CheckpointMeta
from lewc.training.recipe import default_config

ARGS = ["--lams", "0,0.5,1", "--n-test", "200", "--align", "none"]
IN_SHAPE = (3, 32, 32)
CIFAR_BYTES = 60_000 * (3 * 32 * 32 + 8)  # the dataset on the device: uint8 images and int64 labels


def pair_args(pair) -> list[str]:
    return ["--ckpt-a", str(pair[0]), "--ckpt-b", str(pair[1]), *ARGS]


def failing_in(monkeypatch, control: str, error: BaseException) -> list[str]:
    """``analyze`` raising ``error`` in ``control``'s sweep; returns the list of sweeps begun."""
    real, begun = pair_module.analyze, []

    def analyze(pair, ds, lams, options, provenance):
        begun.append(provenance.get("control", "main"))
        if provenance.get("control") == control:
            raise error
        return real(pair, ds, lams, options, provenance)

    monkeypatch.setattr(pair_module, "analyze", analyze)
    return begun


def the_folder(data_home: Path) -> Path:
    (folder,) = [p for p in (data_home / "results").iterdir() if not p.name.startswith(".")]
    return folder


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failed_control_leaves_the_main_results_published_and_a_rerun_completes_them(
    tmp_path, trained_pair, capsys, monkeypatch, isolated_data_home
):
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 74.30 GiB")
    with monkeypatch.context() as m:
        begun = failing_in(m, "positive", oom)
        code, out, err = run_cli(verify.main, pair_args(trained_pair) + ["--quiet"], capsys)
    # out of memory in a control: exit 2, one line with the fix, naming the published folder
    assert code == 2 and begun == ["main", "positive"], (code, begun, err)
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the device ran out of memory in the positive control")
    assert "--batch-size-eval" in line and "published in" in line
    folder = the_folder(isolated_data_home)
    rep = json.loads((folder / "report.json").read_text())
    jsonschema.validate(rep, report.schema())
    assert rep["controls_status"].startswith("failed: the positive control: OutOfMemoryError: CUDA out of memory")
    assert len(rep["controls_status"].splitlines()) == 1
    assert rep["controls"] == {} and rep["files"]["controls"] == {}
    assert {c["id"] for c in rep["claims"]} >= {"lewc_weighting", "lewc_magnitude"}
    assert (folder / "results.nc").is_file() and (folder / "summary.csv").is_file()
    assert all((folder / f).is_file() for f in rep["files"]["figures"])
    assert "controls: failed: the positive control" in (folder / "report.md").read_text()
    main_nc, main_claims = digest(folder / "results.nc"), rep["claims"]

    # the rerun: the main results reused as they are, only the controls run
    with monkeypatch.context() as m:
        begun = failing_in(m, "none", RuntimeError("never"))
        code, out, err = run_cli(verify.main, pair_args(trained_pair), capsys)
    assert code == 0 and begun == ["positive", "negative"], (code, begun, err)
    assert "completing" in err
    rep = json.loads((folder / "report.json").read_text())
    jsonschema.validate(rep, report.schema())
    assert rep["controls_status"] == "complete" and set(rep["controls"]) == {"positive", "negative"}
    assert rep["controls"]["positive"]["note"].startswith("exact LEWC") and rep["controls"]["positive"]["claims"]
    assert rep["files"]["controls"] == {"positive": "control_positive.nc", "negative": "control_negative.nc"}
    assert all((folder / f).is_file() for f in [*rep["files"]["controls"].values(), *rep["files"]["figures"]])
    assert digest(folder / "results.nc") == main_nc and rep["claims"] == main_claims
    assert "controls: " not in (folder / "report.md").read_text()
    completed = rep

    # a complete folder is reused: nothing runs
    with monkeypatch.context() as m:
        begun = failing_in(m, "none", RuntimeError("never"))
        code, out, err = run_cli(verify.main, pair_args(trained_pair), capsys)
    assert code == 0 and begun == [] and "reusing" in err
    assert json.loads((folder / "report.json").read_text()) == completed

    # the completed folder says what one uninterrupted run says
    once_argv = pair_args(trained_pair) + ["--quiet", "--out", str(tmp_path / "once")]
    code, out, err = run_cli(verify.main, once_argv, capsys)
    assert code == 0, err
    once = json.loads((tmp_path / "once" / "report.json").read_text())
    for key in set(once) - {"command"}:
        assert once[key] == completed[key], key


def test_an_interrupted_or_failing_control_keeps_the_main_folder(trained_pair, capsys, monkeypatch, isolated_data_home):
    """Ctrl-C during the controls leaves the main folder with its controls pending (exit 130); a control
    that is a one-line error (``LewcError``) fails the run with exit 2 naming it; a bug stays exit 1."""
    from lewc.core.errors import LewcError

    with monkeypatch.context() as m:
        failing_in(m, "negative", KeyboardInterrupt())
        code, _, _ = run_cli(verify.main, pair_args(trained_pair) + ["--quiet"], capsys)
    assert code == 130
    folder = the_folder(isolated_data_home)
    rep = json.loads((folder / "report.json").read_text())
    assert rep["controls_status"].startswith("pending") and rep["claims"] and rep["controls"] == {}

    with monkeypatch.context() as m:
        failing_in(m, "negative", LewcError("no room"))
        code, _, err = run_cli(verify.main, pair_args(trained_pair) + ["--quiet"], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: the negative control failed"), err
    rep = json.loads((folder / "report.json").read_text())
    assert rep["controls_status"].startswith("failed: the negative control: LewcError: no room")

    with monkeypatch.context() as m:
        failing_in(m, "positive", ValueError("a bug"))
        code, _, err = run_cli(verify.main, pair_args(trained_pair) + ["--quiet"], capsys)
    assert code == 1 and "ValueError: a bug" in err
    rep = json.loads((folder / "report.json").read_text())
    assert rep["controls_status"].startswith("failed: the positive control: ValueError: a bug") and rep["claims"]


# --- the positive control within the main sweeps' memory -------------------------------------------------


def headline_builder():
    c = default_config("resnet20", 32, "cifar10", 0)
    meta = {"model": "resnet20", "width": 32, "num_classes": 10, "in_shape": IN_SHAPE, "norm": c.norm}
    return memplan.builder_from_meta(CheckpointMeta.record(**meta, bias=c.bias, base_width=c.base_width, depth=c.depth))


@pytest.mark.parametrize("align", [("none",), ("none", "weights")])
def test_the_positive_control_at_resnet20_x32_sweeps_within_the_main_sweeps_memory(align):
    """lewc.sweep.memory's estimate (meta device, nothing allocated) of the headline run at compute batch 500:
    the 2× wide control gets the largest compute batch whose peak is within the main sweep's."""
    build = headline_builder()
    plan = plan_run(build, IN_SHAPE, 500, 11, True, align, CIFAR_BYTES)
    batch = plan.batch_for("positive control")
    assert MIN_COMPUTE_BATCH <= batch < 500 and plan.batch_for("sweep") == plan.compute_batch == 500
    assert plan.phases["positive control"] <= plan.phases["sweep"]
    assert plan.phase != "positive control"
    # the largest such batch: at twice it, the control would not fit within the main sweep
    at_one_batch = plan_run(build, IN_SHAPE, 500, 11, True, align, CIFAR_BYTES, fit_controls=False)
    assert at_one_batch.phases["positive control"] > plan.phases["sweep"]  # before: the run's peak
    twice = plan_run(build, IN_SHAPE, 2 * batch, 11, True, align, CIFAR_BYTES, fit_controls=False)
    assert twice.phases["positive control"] > plan.phases["sweep"]
    assert f"positive control at compute batch {batch}" in plan.describe()


def test_a_fake_cuda_run_sweeps_each_control_at_its_planned_compute_batch(tmp_path, trained_pair, capsys, monkeypatch):
    """On the CPU-backed stand-in for CUDA, the sweeps run at the batches the memory plan chose."""
    planned, swept = {}, {}
    real_plan, real_analyze = pair_module.compute_batches_for, pair_module.analyze

    def compute_batches_for(*args):
        planned.update(real_plan(*args))
        return dict(planned)

    def analyze(pair, ds, lams, options, provenance):
        swept[provenance.get("control", provenance.get("alignment", "none"))] = options.batch_size
        return real_analyze(pair, ds, lams, options, provenance)

    monkeypatch.setattr(pair_module, "compute_batches_for", compute_batches_for)
    monkeypatch.setattr(pair_module, "analyze", analyze)
    argv = pair_args(trained_pair) + ["--device", "cuda", "--batch-size-eval", "40", "--quiet"]
    with FakeCuda():
        code, _, err = run_cli(verify.main, [*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert swept == {"none": planned["main"], "positive": planned["positive"], "negative": planned["negative"]}
    assert planned["positive"] < planned["main"] == 40  # the tiny 2× control fits the main peak at no batch: 16
