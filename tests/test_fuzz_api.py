"""Issue 32: ``lewc.verify_pair``'s contract under fuzzing — every call returns a report or raises
``LewcError`` in one sentence, never another exception type.

Hypothesis draws the models (fp16/bf16/fp32/fp64, tied or shared parameters, buffers, BatchNorm, the
meta device, integer parameters), the data (empty, one example, misshapen, non-finite, fp16/fp64/int
inputs, label types and shapes, tensors / Dataset / DataLoader and broken batch layouts) and the
arguments (devices, λ grids, alignments, counts).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_api import Net, fit, make_data
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import lewc
from lewc.core.errors import LewcError


class Tied(Net):
    def __init__(self):
        super().__init__(hidden=24)
        self.l1 = nn.Linear(24, 24)
        self.l2 = nn.Linear(24, 24)
        self.l2.weight = self.l1.weight  # one tensor under two names


class Shared(Net):
    """The same module applied twice (one name, two calls)."""

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        return self.l3(F.relu(self.l2(F.relu(self.l2(F.relu(self.l1(x)))))))


class WithBuffers(Net):
    def __init__(self):
        super().__init__()
        self.register_buffer("unused_scale", torch.tensor(1.0))
        self.register_buffer("steps", torch.tensor(3))


class WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.bn, self.l2 = nn.Linear(24, 48), nn.BatchNorm1d(48), nn.Linear(48, 5)

    def forward(self, x):
        return self.l2(F.relu(self.bn(self.l1(x))))


KINDS = {"plain": Net, "tied": Tied, "shared": Shared, "buffers": WithBuffers, "norm": WithNorm}


@pytest.fixture(scope="module")
def zoo():
    """Two trained models of each kind (fit in a few seconds on the 5-class problem)."""
    train = make_data(600, 0)
    out = {}
    for name, cls in KINDS.items():
        pair = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            pair.append(fit(cls(), train, seed, 3).eval())
        out[name] = pair
    return out


class Items(Dataset):
    def __init__(self, x, y, layout):
        self.x, self.y, self.layout = x, y, layout

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.layout == "triple":
            return self.x[i], self.y[i], 0
        if self.layout == "dict":
            return {"x": self.x[i], "y": self.y[i]}
        return self.x[i], self.y[i]


def wrap(x, y, form, batch):
    if form == "tensors":
        return (x, y)
    if form == "list":
        return [x, y]
    if form == "tensor_dataset":
        return TensorDataset(x, y)
    if form == "loader":
        return DataLoader(TensorDataset(x, y), batch_size=batch)
    if form == "loader_column_labels":
        return DataLoader(TensorDataset(x, y.reshape(-1, 1)), batch_size=batch)
    if form in ("triple", "dict"):
        return Items(x, y, form)
    if form == "dict_loader":
        return DataLoader(Items(x, y, "dict"), batch_size=batch)
    return x  # inputs alone


def data(n: int, seed: int, width: int, x_dtype, y_kind: str, nonfinite: bool):
    x, y = make_data(max(n, 1), seed)
    x, y = x[:n], y[:n]
    if width != 24:
        x = torch.randn(n, width) if width > 0 else torch.randn(n)
    if nonfinite and n:
        x = x.clone()
        x.view(-1)[0] = float("nan")
    x = x.to(x_dtype) if x_dtype.is_floating_point else (x * 10).to(x_dtype)
    labels = {
        "int64": y,
        "int32": y.int(),
        "uint8": y.to(torch.uint8),
        "float": y.float(),
        "bool": y.bool(),
        "out_of_range": y + 7,
        "negative": y - 3,
        "2d": y.reshape(-1, 1) if n else y,
    }[y_kind]
    return x, labels


FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def model_variant(zoo, kind: str, dtype, where: str, index: int):
    model = copy.deepcopy(zoo[kind][index]).to(dtype)
    if where == "meta":
        model = model.to("meta")
    elif where == "int_param":
        model.l1.weight = nn.Parameter(model.l1.weight.data.round().to(torch.int32), requires_grad=False)
    elif where == "complex_buffer":
        model.register_buffer("phase", torch.ones(2, dtype=torch.complex64))
    elif where == "training_mode":
        model.train()
    return model


# (valid choices, faulty ones) per argument: a "clean" example draws only valid ones (it must verify or be
# refused for a reason of the models themselves), any other draws from both.
CHOICES = {
    "kind": (["plain", "shared", "buffers", "norm"], ["tied"]),
    "where": (["plain", "training_mode"], ["meta", "int_param", "complex_buffer"]),
    "n_train": ([300], [0, 1, 5]),
    "n_test": ([60, 10], [0, 1, 9]),
    "width": ([24], [20, 0]),
    "x_dtype": (FLOATS, [torch.int64]),
    "y_kind": (["int64", "int32", "uint8"], ["float", "bool", "out_of_range", "negative", "2d"]),
    "nonfinite": ([False], [True]),
    "form": (
        ["tensors", "list", "tensor_dataset", "loader", "loader_column_labels"],
        ["triple", "dict", "dict_loader", "x"],
    ),
    "batch": ([1, 7, 64], []),
    "device": ([None, "cpu", torch.device("cpu")], ["meta", "cuda:7", "banana", 3, "mps"]),
    "lams": ([(0, 0.5, 1), (0.0, 0.25, 0.5, 1.0)], [(0, 1), (0.5,), "0,0.5,1", (0, 0.5, 1, float("nan")), (0, "x", 1)]),
    "align": (["none", ("none",), ("none", "weights")], ["bogus", 7]),
    "allow_chance": ([False, True], []),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clean=st.booleans(), dtype_a=st.sampled_from(FLOATS), dtype_b=st.sampled_from(FLOATS), draw=st.data())
def test_verify_pair_returns_a_report_or_raises_lewc_error_in_one_sentence(zoo, clean, dtype_a, dtype_b, draw):
    arg = {
        k: draw.draw(st.sampled_from(ok if clean or not bad else ok + bad), label=k) for k, (ok, bad) in CHOICES.items()
    }
    a = model_variant(zoo, arg["kind"], dtype_a, "plain", 0)
    b = model_variant(zoo, arg["kind"], dtype_b, arg["where"], 1)
    x_kw = (arg["width"], arg["x_dtype"])
    train = wrap(*data(arg["n_train"], 0, *x_kw, arg["y_kind"], arg["nonfinite"]), arg["form"], arg["batch"])
    test = wrap(*data(arg["n_test"], 1, *x_kw, "int64", False), arg["form"], arg["batch"])
    before = {k: v.clone() for k, v in zoo[arg["kind"]][0].state_dict().items()}
    try:
        rep = lewc.verify_pair(
            a,
            b,
            train=train,
            test=test,
            lams=arg["lams"],
            align=arg["align"],
            controls=False,
            device=arg["device"],
            allow_chance=arg["allow_chance"],
            bn_images=8,
            batch_size=64,
        )
    except LewcError as err:
        text = str(err)
        event("refused")
        assert text and "\n" not in text and "Traceback" not in text, text
        assert not clean or "at chance" in text or "absurd" in text, text  # valid input: refused only on merit
    else:
        event("verified")
        assert set(rep.verdicts) and all(v in ("PASS", "FAIL", "INCONCLUSIVE") for v in rep.verdicts.values())
        assert all(isinstance(v, float) for v in rep.barriers.values())
    after = zoo[arg["kind"]][0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's models are never changed


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_floating_precision_is_verified_in_float32(zoo, dtype):
    """fp64 models with fp64 data (valid input) work, and so do fp16 and bf16 ones; the precision is recorded."""
    a, b = (copy.deepcopy(m).to(dtype) for m in zoo["plain"])
    (xtr, ytr), (xte, yte) = make_data(300, 0), make_data(60, 1)
    rep = lewc.verify_pair(
        a, b, train=(xtr.to(dtype), ytr), test=(xte.to(dtype), yte), lams=(0, 0.5, 1), align="none", controls=False
    )
    assert rep.report()["pair"]["a"]["dtype"] == str(dtype).removeprefix("torch.")
    assert a.l1.weight.dtype == dtype  # the caller's module is untouched


def test_tied_weights_are_refused_by_name_and_shared_modules_work(zoo):
    (xtr, ytr), (xte, yte) = make_data(300, 0), make_data(60, 1)
    kw = dict(train=(xtr, ytr), test=(xte, yte), lams=(0, 0.5, 1), align=("none", "weights"), controls=False)
    with pytest.raises(LewcError, match=r"model_a ties l1\.weight and l2\.weight"):
        lewc.verify_pair(*zoo["tied"], **kw)
    assert set(lewc.verify_pair(*zoo["shared"], **kw).verdicts)
