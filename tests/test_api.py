"""``lewc.verify_pair`` on models lewc has never seen: the numbers, the untouched models, the refusals."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lewc
from lewc.align.methods import spec_for
from lewc.models.traced import TracedModel
from lewc.pipeline.api import as_tensors

LAMS = (0.0, 0.25, 0.5, 0.75, 1.0)


class Net(nn.Module):
    """Names and layout of a user's notebook: l1/l2/l3, functional ReLU, a view, no ``capture``."""

    def __init__(self, hidden: int = 48, act=F.relu):
        super().__init__()
        self.l1 = nn.Linear(24, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, 5)
        self.act = act

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        return self.l3(self.act(self.l2(self.act(self.l1(x)))))


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy linear 5-class problem (labels 10% random, so calibration has a finite optimum)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(24, 5, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, 24, generator=gen)
    y = (x @ w).argmax(1)
    flip = torch.rand(n, generator=gen) < 0.1
    return x, torch.where(flip, torch.randint(0, 5, (n,), generator=gen), y)


def fit(model: nn.Module, data, seed: int, epochs: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        for i in range(0, len(x), 100):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
            opt.step()
    return model


@pytest.fixture(scope="module")
def data():
    return make_data(1000, 0), make_data(300, 1)


@pytest.fixture(scope="module")
def models(data):
    train, _ = data
    torch.manual_seed(0)
    a = fit(Net(), train, 0)
    torch.manual_seed(1)
    b = fit(Net(), train, 1)
    a.train()  # left in training mode on purpose: verify_pair must not switch it
    b.eval()
    return a, b


def snapshot(model: nn.Module):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def accuracy(model: nn.Module, x, y) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).double().mean())


def test_accuracy_barrier_is_the_users_own_computation_and_models_are_untouched(models, data, caplog):
    a, b = models
    train, (x, y) = data
    before = [snapshot(a), snapshot(b)]
    caplog.set_level("WARNING", logger="lewc.pipeline.pair")
    rep = lewc.verify_pair(a, b, train=train, test=(x, y), lams=LAMS, align=("none",), controls=False, device="cpu")
    for model, (state, flags) in zip((a, b), before, strict=True):
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        assert [m.training for m in model.modules()] == flags
    # the caller's own computation, on copies, with the plain mean of the weights
    acc_a, acc_b = accuracy(copy.deepcopy(a), x, y), accuracy(copy.deepcopy(b), x, y)
    mid = copy.deepcopy(a)
    mid.load_state_dict({k: (v + b.state_dict()[k]) / 2 for k, v in a.state_dict().items()})
    own = 100 * ((acc_a + acc_b) / 2 - accuracy(mid, x, y))
    res = rep.results.sel(align="none", split="test")
    assert float(res.acc.sel(lam=0.0)) == pytest.approx(100 * acc_a, abs=1e-10)  # accuracy in %
    assert float(res.acc.sel(lam=1.0)) == pytest.approx(100 * acc_b, abs=1e-10)
    # torch.lerp and (a + b)/2 may differ in the last bit: at most one image may flip
    assert abs(rep.barriers["acc_mid"] - own) <= 100 / len(y) + 1e-9
    assert set(rep.verdicts) >= {"lmc_accuracy", "lewc_weighting", "weak_additivity"}
    assert set(rep.verdicts.values()) <= {"PASS", "FAIL", "INCONCLUSIVE"}
    assert rep.claims["lmc_accuracy"].value == pytest.approx(rep.barriers["acc_mid"])
    assert [int(d) for d in rep.results.depth.values] == [1, 2, 3]  # ℓ from the graph: l1, l2, logits
    assert rep.results.attrs["n_test"] == len(y)  # the test set as given, whole
    assert not [r for r in caplog.records if "at chance" in r.getMessage()]  # trained endpoints: no warning


def test_two_architectures_are_refused_in_one_line_naming_the_tensor(models, data):
    a, _ = models
    train, test = data
    with pytest.raises(ValueError) as err:
        lewc.verify_pair(a, Net(hidden=32), train=train, test=test)
    assert "\n" not in str(err.value) and "l1.weight" in str(err.value)
    assert isinstance(err.value, lewc.LewcError)
    with pytest.raises(ValueError, match="gelu") as err:  # same tensors, another op
        lewc.verify_pair(a, Net(act=F.gelu), train=train, test=test)
    assert "\n" not in str(err.value)


def test_untraceable_model_and_bad_labels_are_one_line_errors(models, data):
    class Branchy(Net):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot follow it
                return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))
            return self.l3(self.l1(x))

    a, b = models
    train, (x, y) = data
    with pytest.raises(lewc.LewcError, match=r"cannot trace Branchy at test_api.py:\d+ \(if x.sum\(\) > 0:\)") as err:
        lewc.verify_pair(Branchy(), Branchy(), train=train, test=(x, y))
    assert "\n" not in str(err.value)
    with pytest.raises(lewc.LewcError, match=r"test labels span \[0, 7\], outside the models' 5 classes \[0, 4\]"):
        lewc.verify_pair(a, b, train=train, test=(x, torch.where(y == 0, 0, 7)))
    with pytest.raises(lewc.LewcError, match="must be integer class indices"):
        lewc.verify_pair(a, b, train=train, test=(x, y.float()))


def test_messages_name_parameters_as_the_users_model_does_not_the_traced_wrapper(models, data):
    """The traced adapter keeps the user's module as ``net``; no message shows that prefix (issue 32)."""

    class Scaled(Net):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(48))

        def forward(self, x):
            return self.l3(F.relu(self.l2(F.relu(self.l1(x)) * self.scale)))

    a, b = models
    train, test = data
    huge = Net()
    huge.load_state_dict({k: v * 1e30 for k, v in b.state_dict().items()})
    with pytest.raises(lewc.LewcError) as err:  # the admission gate names the tensor
        lewc.verify_pair(a, huge, train=train, test=test, lams=(0, 0.5, 1), align="none", controls=False)
    assert "tensor l1.weight has RMS" in str(err.value) and "net." not in str(err.value), err.value
    sa, sb = Scaled(), Scaled()
    sa.load_state_dict(a.state_dict(), strict=False)
    sb.load_state_dict(b.state_dict(), strict=False)
    with pytest.raises(lewc.LewcError) as err:  # weight matching's groups cannot follow a tensor attribute
        lewc.verify_pair(sa, sb, train=train, test=test, lams=(0, 0.5, 1), align="weights", controls=False)
    assert "a tensor attribute (scale)" in str(err.value) and "net" not in str(err.value), err.value


def test_dataset_and_dataloader_give_the_same_tensors(data):
    from torch.utils.data import DataLoader, TensorDataset

    x, y = data[1]
    for given_ in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=64)):
        gx, gy = as_tensors(given_, "test")
        assert torch.equal(gx, x) and torch.equal(gy, y)


class Chain(nn.Module):
    """Flatten, GELU/SiLU/LeakyReLU as modules: the ops ``align.spec_for`` used to reject."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), copy.deepcopy(act), nn.MaxPool2d(2))
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.act = copy.deepcopy(act)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.act(self.fc(self.flat(self.features(x)))))


@settings(max_examples=6, deadline=None)
@given(act=st.sampled_from([nn.ReLU(), nn.GELU(), nn.SiLU(), nn.LeakyReLU(0.2)]), seed=st.integers(0, 2**16))
def test_permutation_groups_of_flatten_and_any_activation_are_symmetries(act, seed):
    torch.manual_seed(seed)
    model = TracedModel(Chain(act), torch.zeros(2, 3, 8, 8))
    spec = spec_for(model, (3, 8, 8))
    assert spec.group_sizes == [8, 16]
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n) for n in spec.group_sizes]
    moved = copy.deepcopy(model)
    moved.load_state_dict(spec.apply(model.state_dict(), perms))
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(moved(x), model(x), rtol=1e-5, atol=1e-5)
        assert not torch.equal(moved.state_dict()["net.fc.weight"], model.state_dict()["net.fc.weight"])


def test_gelu_model_says_weak_additivity_is_outside_its_theory_and_controls_are_built(data):
    train, test = data
    a = fit(Net(hidden=32, act=F.gelu), train, 0, epochs=2)
    b = fit(Net(hidden=32, act=F.gelu), train, 1, epochs=2)
    rep = lewc.verify_pair(a, b, train=train, test=test, lams=LAMS, align=("none",), device="cpu")
    assert rep.verdicts["weak_additivity"] == "INCONCLUSIVE"
    assert "stated for ReLU" in rep.claims["weak_additivity"].note
    assert set(rep.controls) == {"positive", "negative"}  # a plain chain: the 2× wide embedding is generic
    assert "approximate LEWC: a non-ReLU hidden activation" in rep.controls["positive"].attrs["control_note"]


def test_relu_chain_positive_control_is_exact_lewc_and_save_writes_the_cli_folder(models, data, tmp_path):
    a, b = models
    train, test = data
    rep = lewc.verify_pair(a, b, train=train, test=test, lams=LAMS, align=("none", "weights"), out=tmp_path / "f")
    assert rep.controls["positive"].attrs["control_note"].startswith("exact LEWC")
    assert rep.claims["lewc_weighting"].controls["positive"] == "PASS"
    assert "permutation_gap" in rep.verdicts
    saved = json.loads((tmp_path / "f" / "report.json").read_text())
    assert {c["id"]: c["verdict"] for c in saved["claims"]} == rep.verdicts
    assert saved["barriers"]["acc_mid"]["value"] == pytest.approx(rep.barriers["acc_mid"])
    assert (tmp_path / "f" / "results.nc").is_file() and saved["files"]["figures"]
    assert json.loads(rep.to_json())["claims"] == saved["claims"]


def test_residual_resnet18_from_torchvision_traces_aligns_and_verifies(caplog):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    a, b = (torchvision.models.resnet18(num_classes=10) for _ in range(2))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 16, 16, generator=gen)  # small images keep ResNet-18's forward cheap
    y = torch.randint(0, 10, (40,), generator=gen)
    caplog.set_level("WARNING", logger="lewc.pipeline.pair")
    rep = lewc.verify_pair(  # activation matching: one assignment per group (weight matching takes minutes here)
        a,
        b,
        train=(x, y),
        test=(x[:12], y[:12]),
        lams=(0, 0.5, 1),
        align=("none", "activations"),
        bn_images=12,
        batch_size=20,
        device="cpu",
        allow_chance=True,  # random initialisations: refused without the opt-in (test_admission.py)
    )
    assert rep.results.sizes["layer"] == 18 and int(rep.results.depth.max()) == 18
    assert rep.results.attrs["bn_reestimated"] == 1
    assert list(rep.results.align.values) == ["none", "activations"]
    assert "adds or concatenates" in rep.absent_controls["positive"]
    assert "negative" in rep.controls
    assert np.isfinite(rep.barriers["acc_mid"])
    # random initialisations on random labels: analysed only with the opt-in, said to be at chance, recorded
    chance = [r.getMessage() for r in caplog.records if "at chance" in r.getMessage()]
    assert len(chance) == 2 and chance[0].startswith("endpoint A reaches") and "12 test images" in chance[0]
    admission = json.loads(rep.results.attrs["admission"])
    assert admission["allow_chance"] and admission["at_chance"] == ["A", "B"]
    assert rep.report()["admission"] == admission


def test_cli_verifies_two_plain_torchvision_state_dicts(tmp_path, capsys):
    """``--arch torchvision.models:resnet18``: a torch.save'd .pt and a sidecar-less .safetensors."""
    torchvision = pytest.importorskip("torchvision")
    import safetensors.torch
    from cli_runner import run_cli

    from lewc import verify

    torch.manual_seed(0)
    a, b = (torchvision.models.resnet18(num_classes=10) for _ in range(2))
    torch.save(a.state_dict(), tmp_path / "a.pt")
    safetensors.torch.save_file({k: v.contiguous() for k, v in b.state_dict().items()}, str(tmp_path / "b.safetensors"))
    argv = ["--arch", "torchvision.models:resnet18", "--arch-kwargs", "num_classes=10", "--dataset", "synthetic"]
    argv += ["--ckpt-a", str(tmp_path / "a.pt"), "--ckpt-b", str(tmp_path / "b.safetensors"), "--lams", "0,0.5,1"]
    argv += ["--n-test", "20", "--bn-images", "20", "--align", "none,random", "--no-controls", "--quiet"]
    code, _, err = run_cli(verify.main, argv + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "at chance" in err and "a.pt" in err and not (tmp_path / "out").exists()  # untrained
    argv += ["--allow-chance"]
    code, out, err = run_cli(verify.main, argv + ["--out", str(tmp_path / "out")], capsys)
    assert code in (0, None), err
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["pair"]["a"]["model"] == "resnet18" and rep["dataset"] == "synthetic" and rep["bn_reestimated"]
    assert rep["admission"]["allow_chance"] and rep["admission"]["at_chance"]
    assert len(rep["layers"]) == 18 and "endpoint test accuracy" in out and "nan" not in out.splitlines()[0]
    # a random permutation is a symmetry: B's endpoint is the same function, so its accuracy is unchanged
    from lewc.reporting.results import open_results

    acc_b = open_results(tmp_path / "out" / "results.nc").acc.sel(split="test", lam=1.0)
    assert float(acc_b.sel(align="random")) == pytest.approx(float(acc_b.sel(align="none")), abs=1e-12)
    code, _, err = run_cli(verify.main, argv[:4] + ["--ckpt-a", str(tmp_path / "a.pt")], capsys)
    assert code == 2 and "go together" in err


def test_cli_reads_a_lewc_family_from_a_plain_state_dict(tmp_path, capsys, trained_pair):
    from cli_runner import run_cli

    from lewc import verify
    from lewc.training import checkpoints

    for tag, path in zip("ab", trained_pair, strict=True):
        model, meta = checkpoints.load(path)
        torch.save(model.state_dict(), tmp_path / f"{tag}.pth")
    arch = f"mlp:width={meta.width},base_width={meta.base_width}"
    argv = ["--arch", arch, "--ckpt-a", str(tmp_path / "a.pth"), "--ckpt-b", str(tmp_path / "b.pth"), "--quiet"]
    argv += ["--dataset", "synthetic", "--lams", "0,0.5,1", "--n-test", "100", "--align", "none"]
    code, _, err = run_cli(verify.main, argv + ["--out", str(tmp_path / "out")], capsys)
    assert code in (0, None), err
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["controls"]["positive"]["note"].startswith("exact LEWC")  # the family is rebuilt at 2× width
    bad = ["--arch", "mlp:width=3", *argv[2:]]
    code, _, err = run_cli(verify.main, bad + ["--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "tensor linears.0.weight is" in err and len(err.strip().splitlines()) == 1
