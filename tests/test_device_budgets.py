"""The device run's budgets without a GPU (issue 31): BN re-estimation without host syncs, syncs and
device→host bytes per λ, fit-or-fail-early memory planning, and a compute batch that changes no number.

Runs on the CPU-backed stand-in for CUDA (tests/fakecuda.py), whose counters are exact.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fakecuda import FakeCuda

from lewc.models import build
from lewc.sweep import batchnorm
from lewc.sweep.merge import Pair
from lewc.training.checkpoints import CheckpointMeta
from lewc.training.data import DeviceDataset, Split, dataset_info

IN_SHAPE = (3, 32, 32)


def cifar_shaped(n_train: int, n_test: int, device="cpu", seed: int = 0) -> DeviceDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, *IN_SHAPE), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    train = Split(x[:n_train].to(device), y[:n_train].to(device))
    test = Split(x[n_train:].to(device), y[n_train:].to(device))
    return DeviceDataset(dataset_info("cifar10"), train, test, test, torch.device(device))


def meta(seed: int, width: int = 1, base_width: int = 2) -> CheckpointMeta:
    return CheckpointMeta.record(
        model="resnet20",
        width=width,
        base_width=base_width,
        depth=None,
        norm="bn",
        bias=True,
        num_classes=10,
        in_shape=list(IN_SHAPE),
        dataset="cifar10",
        seed=seed,
        sha256=f"{seed:064x}",
    )


def bn_pair(device="cpu", base_width: int = 2) -> Pair:
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build("resnet20", 1, 10, IN_SHAPE, base_width=base_width)
        with torch.no_grad():  # non-trivial running statistics and affine parameters
            for mod in m.modules():
                if batchnorm.is_bn(mod):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.2, 0.2)
        models.append(m.to(device).eval())
    return Pair(models[0], models[1], meta(0, base_width=base_width), meta(1, base_width=base_width))


def reference_reestimate(pair: Pair, state: dict, images: torch.Tensor, ds, batch_size: int) -> dict:
    """Before issue 31: torch's cumulative average (momentum None), one host sync per BN layer and batch."""
    from torch.func import functional_call

    tmpl = copy.deepcopy(pair.template).train()
    for m in tmpl.modules():
        if batchnorm.is_bn(m):
            m.momentum = None
    new = dict(state)
    for name, m in tmpl.named_modules():
        if batchnorm.is_bn(m):
            new[f"{name}.running_mean"] = torch.zeros_like(state[f"{name}.running_mean"])
            new[f"{name}.running_var"] = torch.ones_like(state[f"{name}.running_var"])
            new[f"{name}.num_batches_tracked"] = torch.zeros_like(state[f"{name}.num_batches_tracked"])
    usable = (len(images) // batch_size) * batch_size or len(images)
    with torch.no_grad():
        for start in range(0, usable, batch_size):
            functional_call(tmpl, new, (ds.normalize(images[start : start + batch_size]),))
    return new


@pytest.mark.parametrize("lam,n_images,batch", [(0.5, 700, 100), (0.3, 250, 500), (0.0, 520, 130)])
def test_bn_reestimation_gives_todays_statistics(lam, n_images, batch):
    """Property: the sync-free re-estimation is torch's cumulative average (running mean, unbiased
    running variance, batch count) to 1e-6 relative on a BN ResNet, for any number of batches."""
    ds = cifar_shaped(n_images, 10)
    pair = bn_pair()
    state = pair.state_at(lam)
    images = batchnorm.reestimation_images(ds, n_images)
    got = batchnorm.reestimate(pair, state, images, ds, batch)
    want = reference_reestimate(pair, state, images, ds, batch)
    names = [k for k in want if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    n_bn = sum(batchnorm.is_bn(m) for m in pair.template.modules())
    assert n_bn == 21 and len(names) == 3 * n_bn  # 19 in the blocks' path, 2 in projection shortcuts
    for k in names:
        if k.endswith("num_batches_tracked"):
            assert int(got[k]) == int(want[k]) == max(1, n_images // batch)
        else:
            torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-6 * float(want[k].abs().max()))
    # the template's BN modules are left as they were (cumulative-average mode)
    assert all(m.momentum is None for m in batchnorm.bn_templates(pair).modules() if batchnorm.is_bn(m))


def test_bn_reestimation_makes_no_host_sync():
    """Four batches through 21 BN layers: torch's momentum=None reads num_batches_tracked back 84 times;
    the re-estimation reads nothing back."""
    with FakeCuda() as fc:
        ds = cifar_shaped(400, 10, "cuda")
        pair = bn_pair("cuda")
        state = pair.state_at(0.5)
        images = batchnorm.reestimation_images(ds, 400)
        before = fc.syncs, fc.d2h_bytes
        new = batchnorm.reestimate(pair, state, images, ds, 100)
        assert (fc.syncs, fc.d2h_bytes) == before
        ref_syncs = fc.syncs
        reference_reestimate(pair, state, images, ds, 100)
        n_bn = sum(batchnorm.is_bn(m) for m in pair.template.modules())
        assert fc.syncs - ref_syncs == 4 * n_bn == 84  # what the harness would have caught
    counts = {int(t) for k, t in new.items() if k.endswith("num_batches_tracked")}  # the harness is closed
    assert counts == {4}


def test_a_smaller_compute_batch_changes_no_number(monkeypatch):
    """The compute batch (--batch-size-eval) is decoupled from the batches that define statistics: BN
    re-estimation's batches and the blocks whose first rows the conditions use. Logits, Gram terms, the
    conditions' images and sums, and the sampled coordinates agree across compute batches."""
    import numpy as np

    from lewc.sweep import capture
    from lewc.sweep.path import SweepOptions, sweep

    # few condition rows per block (16 of each block of 64), so a compute batch not aligned with the
    # blocks would pick other images
    monkeypatch.setattr(capture, "CONDITION_COORDINATES", 2**15)
    ds = cifar_shaped(300, 160)
    pair = bn_pair()
    results = {}
    for batch in (64, 24, 7, 200):
        opt = SweepOptions(
            n_test=160,
            bn_images=300,
            bn_batch=100,
            condition_batch=64,
            batch_size=batch,
            progress=False,
            vectorize="no",
        )
        results[batch] = sweep(pair, ds, [0.0, 0.5, 1.0], opt)
    ref = results[64]
    assert ref.layer_stats.condition_rows_per_batch == 16
    assert ref.layer_stats.condition_image_index == [*range(16), *range(64, 80), *range(128, 144)]
    for batch, res in results.items():
        s, r = res.layer_stats, ref.layer_stats
        assert s.condition_image_index == r.condition_image_index, batch
        torch.testing.assert_close(res.logits["test"], ref.logits["test"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(res.logits["calib"], ref.logits["calib"], rtol=1e-5, atol=1e-5)
        for name in ("gram", "wa", "ro", "wa_null", "ro_null"):
            a, b = getattr(s, name), getattr(r, name)
            assert a.shape == b.shape, (batch, name)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()), err_msg=f"{batch} {name}")
        # float32 convolutions round differently at other batch sizes (oneDNN picks kernels by shape)
        np.testing.assert_allclose(s.act, r.act, rtol=1e-5, atol=1e-4)


# --- memory: fit, or fail early in one line -------------------------------------------------------------


def headline_configs():
    from lewc.training.recipe import default_config

    return [default_config("resnet20", 32, "cifar10", s) for s in (0, 1)]


def test_the_memory_plan_chooses_a_compute_batch_that_fits():
    from lewc.pipeline import memplan
    from lewc.pipeline.request import analysis_options

    options = analysis_options()
    cfgs = headline_configs()
    c = cfgs[0]
    meta = {"model": "resnet20", "width": 32, "num_classes": 10, "in_shape": IN_SHAPE, "norm": c.norm}
    build = memplan.builder_from_meta(
        CheckpointMeta.record(**meta, bias=c.bias, base_width=c.base_width, depth=c.depth)
    )
    from lewc.sweep.memory import plan_run

    cifar = 60_000 * (3 * 32 * 32 + 8)  # the dataset on the device: uint8 images and int64 labels
    full = plan_run(build, IN_SHAPE, 500, 11, True, ("none", "weights"), cifar)
    small = plan_run(build, IN_SHAPE, 125, 11, True, ("none", "weights"), cifar)
    assert small.peak < full.peak and {"positive control", "negative control", "sweep weights"} <= set(full.phases)
    # the 2× wide control sweeps at its own, smaller compute batch, within the main sweeps' peak (at one
    # batch for all, it was the largest phase)
    assert full.batch_for("positive control") < 500 and full.phases["positive control"] <= full.phases["sweep"]
    total = int((small.peak + full.peak) / 2 / 0.9)
    with FakeCuda(total_bytes=total):
        batch = memplan.check_configs(cfgs, options, torch.device("cuda"), 500)
    assert (
        125 <= batch < 500
        and plan_run(build, IN_SHAPE, batch, 11, True, ("none", "weights"), cifar).peak <= 0.9 * total
    )
    with FakeCuda(total_bytes=100 * 2**30):  # fits: nothing changes
        assert memplan.check_configs(cfgs, options, torch.device("cuda"), 500) == 500
    assert memplan.check_configs(cfgs, options, torch.device("cpu"), 500) == 500  # no check on the CPU


def test_a_run_that_cannot_fit_exits_2_in_one_line_before_training(tmp_path, capsys, monkeypatch):
    from cli_runner import run_cli

    from lewc import verify

    monkeypatch.setenv("LEWC_DATA", str(tmp_path / "data"))
    argv = ["--model", "resnet20", "--width", "32", "--dataset", "cifar10", "--device", "cuda", "--quiet"]
    with FakeCuda(total_bytes=2 * 2**30) as fc:
        code, out, err = run_cli(verify.main, argv + ["--ckpt-dir", str(tmp_path / "ckpt")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--width" in err and "GiB" in err and fc.peak_bytes < 2**20  # nothing of the run was put on the device
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").rglob("*.safetensors"))


# --- the results key -----------------------------------------------------------------------------------


def test_the_results_key_names_the_device_and_keeps_the_cpu_folders():
    """A GPU analysis differs from a CPU one in float rounding: its folder has its own key; the CPU's keys
    are the ones computed before the device was part of the options (existing folders keep their names)."""
    import hashlib
    import json

    from lewc.pipeline.request import analysis_options
    from lewc.reporting.results import RESULTS_SCHEMA

    for opts in (analysis_options(), analysis_options([0, 0.5, 1], 100, 32, False, "none")):
        legacy = {"lams": opts.lams, "n_test": opts.n_test, "bn_images": opts.bn_images}
        legacy |= {"controls": opts.controls, "align": opts.align}
        blob = json.dumps({"schema": RESULTS_SCHEMA, **legacy}, sort_keys=True)
        key = hashlib.sha256(blob.encode()).hexdigest()[:8]
        assert opts.key() == opts.on("cpu").key() == opts.on(torch.device("cpu")).key() == key
        cuda = opts.on(torch.device("cuda", 0))
        assert cuda.key() != key and cuda.key() == opts.on("cuda:1").key() and cuda.device == "cuda"


# --- host syncs and device→host bytes per λ -------------------------------------------------------------

SETUP_SYNCS = 4  # per sweep, whatever its size: e.g. the positive control's composition probe (allclose)


def needed_copies(res, batch: int, condition_batch: int = 500) -> tuple[int, int]:
    """(syncs, bytes) that a sweep must bring to the host, copy by copy: the labels once; per calib compute
    batch its logits (all λ in one copy); per test compute batch its logits and Gram terms (all λ), the
    sampled coordinates where the batch has sampled images, and where it has condition images the weak
    additivity sums, their null spread and per layer the reciprocal-orthogonality sums (and their null
    spread on the first ``NULL_IMAGES``). Nothing per λ, per BN layer or per BN batch."""
    from lewc.sweep.capture import GRAM_TERMS, NULL_IMAGES, NULL_SHUFFLES, RO_TERMS, WA_TERMS
    from lewc.sweep.path import compute_chunks

    st = res.layer_stats
    n_lam, n_layer = len(res.lams), len(st.depths)
    n_test, n_calib, classes = res.logits["test"].shape[1], res.logits["calib"].shape[1], res.logits["test"].shape[2]
    syncs, nbytes = 2, 8 * (n_test + n_calib)  # labels
    for start in range(0, n_calib, batch):
        syncs, nbytes = syncs + 1, nbytes + 4 * n_lam * min(batch, n_calib - start) * classes
    cond = st.condition_image_index
    sampled = set(st.sample_image_index.tolist())
    for start, stop in compute_chunks(n_test, condition_batch, batch):
        n = stop - start
        syncs, nbytes = syncs + 2, nbytes + 4 * n_lam * n * classes + 8 * n_lam * n_layer * n * len(GRAM_TERMS)
        picked = sum(i in sampled for i in range(start, stop))
        if picked:
            syncs, nbytes = syncs + 1, nbytes + 4 * n_lam * n_layer * picked * st.sample_units
        rows = sum(start <= i < stop for i in cond)
        if rows:
            syncs += 2 + n_layer
            nbytes += 8 * n_lam * n_layer * rows * len(WA_TERMS) + 8 * n_layer * NULL_SHUFFLES * 3
            nbytes += 8 * n_layer * rows * len(RO_TERMS)
            if any(start <= i < stop for i in cond[:NULL_IMAGES]):
                syncs, nbytes = syncs + n_layer, nbytes + 8 * n_layer * NULL_SHUFFLES * 2
    return syncs, nbytes


class SweepCounter:
    """Wraps ``lewc.pipeline.analysis.sweep`` to count each sweep's syncs and device→host bytes."""

    def __init__(self, monkeypatch, fc: FakeCuda):
        import lewc.pipeline.analysis as analysis

        self.fc, self.rows, real = fc, [], analysis.sweep

        def counted(pair, ds, lams, options=None):
            s0, b0 = fc.syncs, fc.d2h_bytes
            res = real(pair, ds, lams, options)
            # the exact positive control checks its composition once (lewc.sweep.blocks.matches_wide), at
            # every λ, with two syncs: the exponents' norms (3 float64 per compared tensor: the logits and each
            # layer's input, pre-activation and output) and one bool for all comparisons
            composed = getattr(pair.model_a, "lewc_block_source", None) is not None
            syncs, probe_bytes = (2, 3 * 8 * (1 + 3 * len(pair.layers)) + 1) if composed else (0, 0)
            self.rows.append((res, options.batch_size, fc.syncs - s0 - syncs, fc.d2h_bytes - b0 - probe_bytes))
            return res

        monkeypatch.setattr(analysis, "sweep", counted)

    def check(self, n_sweeps: int, reestimation_bytes: int = 0) -> list[dict]:
        """Every sweep within its budget per λ; returns the measured numbers per λ. ``reestimation_bytes``:
        a BN network's re-estimation images come to the host once per sweep (measured, not per λ), to be
        augmented with a CPU generator (the same crops and flips on any device: lewc.sweep.batchnorm)."""
        assert len(self.rows) == n_sweeps
        out = []
        for res, batch, syncs, nbytes in self.rows:
            n_lam = len(res.lams)
            need_syncs, need_bytes = needed_copies(res, batch)
            need_bytes += reestimation_bytes
            per = {"syncs_per_lam": syncs / n_lam, "d2h_bytes_per_lam": nbytes / n_lam}
            assert syncs <= need_syncs + SETUP_SYNCS, (per, need_syncs / n_lam)
            assert nbytes <= 1.01 * need_bytes + 64 * SETUP_SYNCS, (per, need_bytes / n_lam)
            out.append(per)
        return out


def _verify_argv(tmp_path) -> list[str]:
    # 5 compute batches of the test split, so that a per-batch sync would exceed the budget
    return ["--device", "cuda", "--lams", "0,0.5,1", "--n-test", "100", "--batch-size-eval", "20", "--quiet"]


def test_verify_an_mlp_within_its_sync_budget(tmp_path, capsys, monkeypatch):
    from cli_runner import run_cli

    from lewc import verify

    monkeypatch.setenv("LEWC_DATA", str(tmp_path / "data"))
    argv = ["--model", "mlp", "--width", "1", "--base-width", "16", "--dataset", "synthetic", "--epochs", "1"]
    argv += _verify_argv(tmp_path) + ["--align", "none,weights", "--out", str(tmp_path / "out")]
    with FakeCuda() as fc:
        counter = SweepCounter(monkeypatch, fc)
        code, _, err = run_cli(verify.main, argv, capsys)
    assert code in (0, None), err
    counter.check(4)  # none, weights, positive and negative controls


def test_verify_a_bn_resnet_within_its_sync_budget(tmp_path, capsys, monkeypatch):
    """Two BN batches per λ (1,000 BN images): torch's momentum=None would add 2 × 21 syncs per λ."""
    from cli_runner import run_cli

    from lewc import verify

    monkeypatch.setenv("LEWC_DATA", str(tmp_path / "data"))
    for tag, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        torch.save(build("resnet20", 1, 10, (3, 16, 16), base_width=2).state_dict(), tmp_path / f"{tag}.pth")
    argv = ["--arch", "resnet20:width=1,base_width=2", "--dataset", "synthetic", "--align", "none", "--allow-chance"]
    argv += ["--ckpt-a", str(tmp_path / "a.pth"), "--ckpt-b", str(tmp_path / "b.pth"), "--bn-images", "1000"]
    argv += _verify_argv(tmp_path) + ["--out", str(tmp_path / "out")]
    with FakeCuda() as fc:
        counter = SweepCounter(monkeypatch, fc)
        code, _, err = run_cli(verify.main, argv, capsys)
    assert code in (0, None), err
    # none and both controls: a headroom of SETUP_SYNCS per sweep, where BN would add 42 per λ; the 1,000
    # uint8 re-estimation images (3×16×16) come to the host once per sweep
    counter.check(3, reestimation_bytes=1000 * 3 * 16 * 16)
