"""``lewc.verify_pair``: any two PyTorch models of one architecture, verified from Python.

The models are traced with ``torch.fx`` (``lewc.models.traced``), deep-copied (the caller's modules
are never touched: no ``.eval()``, no ``.to()``, no BN statistics written) and run through the same
pipeline as ``python -m lewc.verify``: one λ sweep per alignment, the controls, the claims.

Data is used as given: ``train`` and ``test`` are ``(x, y)`` tensors, a ``torch.utils.data.Dataset``
of ``(input, label)`` items or a ``DataLoader`` of ``(inputs, labels)`` batches, already normalised the
way the models expect (lewc applies no mean/std and no augmentation). ``test`` is evaluated whole, in
the order given. The calibration split (temperature fits, ``loss_*_cal``) is carved from ``train``
deterministically: ``n_calib`` = min(5,000, ⌊len(train)/10⌋) examples chosen by lewc's fixed split seed;
the rest of ``train`` serves BatchNorm re-estimation (only when the model has BatchNorm) and
activation matching.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import xarray as xr
from torch import nn

from lewc.core.conventions import BN_IMAGES, N_CALIB
from lewc.core.device import resolve_device
from lewc.core.errors import LewcError
from lewc.core.io import first_line as _first_line
from lewc.core.logs import quiet_warnings
from lewc.core.validate import check_bool, check_int
from lewc.models.common import CapturingModel
from lewc.models.traced import TracedModel, graph_signature, state_sha256
from lewc.pipeline.endpoints import check_distinct
from lewc.pipeline.folders import check_out, run_provenance
from lewc.pipeline.pair import PairResult, RunSettings, analyse_pair, report_dict, write_folder
from lewc.pipeline.request import MIN_TEST_IMAGES, analysis_options, check_batch_size
from lewc.reporting import report as _report
from lewc.reporting import results as results_io
from lewc.reporting.results import for_alignment
from lewc.stats.claims import Claim
from lewc.sweep.merge import Pair
from lewc.training.checkpoints import CheckpointMeta
from lewc.training.data import SPLIT_SEED, DatasetInfo, FloatDeviceDataset, Split, calib_indices
from lewc.training.recipe import MAX_COUNT

API_COMMAND = "lewc.verify_pair(...)"


@dataclass(frozen=True)
class ClaimResult:
    """One claim: its verdict, the statistic's value and 95% interval, the threshold, the controls' verdicts."""

    id: str
    verdict: str
    value: float
    interval: tuple[float, float]
    threshold: float
    direction: str
    units: str
    note: str
    controls: dict[str, str] = field(default_factory=dict)  # control name → its verdict on this claim


@dataclass
class PairReport:
    """What ``verify_pair`` found. ``save`` writes the folder the command line writes."""

    result: PairResult
    command: str = API_COMMAND

    @property
    def results(self) -> xr.Dataset:
        """The results Dataset (``align`` dimension: none, weights, …), as written to results.nc."""
        return self.result.results

    @property
    def controls(self) -> dict[str, xr.Dataset]:
        return self.result.controls

    @property
    def absent_controls(self) -> dict[str, str]:
        """Controls that could not be built, with the reason (e.g. residual graphs: no positive control)."""
        return dict(self.result.absent_controls)

    @property
    def verdicts(self) -> dict[str, str]:
        """Claim id → "PASS" / "FAIL" / "INCONCLUSIVE"."""
        return {c.id: c.verdict for c in self.result.claims}

    @property
    def claims(self) -> dict[str, ClaimResult]:
        by_control = {name: {c.id: c for c in cs} for name, cs in self.result.control_claims.items()}
        return {c.id: _claim_result(c, by_control) for c in self.result.claims}

    @property
    def barriers(self) -> dict[str, float]:
        """Barrier name → value without alignment (keys as in report.json: ``acc_mid`` in pp, ``loss_mid_raw``,
        ``loss_mid_cal``, ``acc_max``, …); ``acc_mid`` = mean endpoint accuracy − merged accuracy at λ = ½."""
        res = for_alignment(self.results)
        return {n: float(results_io.barrier(res, n)) for n in results_io.BARRIER_NAMES}

    @property
    def barrier_intervals(self) -> dict[str, tuple[float, float]]:
        res = for_alignment(self.results)
        return {n: tuple(float(v) for v in results_io.barrier_ci(res, n).values) for n in results_io.BARRIER_NAMES}

    def report(self) -> dict:
        """report.json's content (without the figure files, which only ``save`` draws)."""
        return report_dict(self.result, self.command, [])

    def to_json(self) -> str:
        return _report.dumps(self.report())

    def save(self, folder: str | Path) -> Path:
        """Publish the folder ``python -m lewc.verify`` writes (results.nc, controls, figures, report.md/json)."""
        folder = check_out(folder)
        write_folder(folder, self.result, self.command)
        return folder


def _claim_result(c: Claim, by_control: dict[str, dict[str, Claim]]) -> ClaimResult:
    controls = {name: cs[c.id].verdict for name, cs in by_control.items() if c.id in cs}
    lo, hi = (c.ci + [float("nan")] * 2)[:2]
    return ClaimResult(c.id, c.verdict, c.value, (lo, hi), c.threshold, c.direction, c.units, c.note, controls)


# --- inputs ----------------------------------------------------------------------------------------------


def as_tensors(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from tensors, a Dataset of (input, label) items or a DataLoader of batches, on the CPU."""
    from torch.utils.data import DataLoader, Dataset

    try:
        if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            x, y = data
        elif isinstance(data, DataLoader):
            batches = [(torch.as_tensor(bx), torch.as_tensor(by)) for bx, by in data]
            if not batches:
                raise LewcError(f"{what}: the DataLoader yields no batches")
            x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1].reshape(-1) for b in batches])
        elif isinstance(data, Dataset):
            items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
            if not items:
                raise LewcError(f"{what}: the Dataset is empty")
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
            y = torch.as_tensor([int(it[1]) for it in items])
        else:
            raise LewcError(
                f"{what} must be (x, y) tensors, a torch Dataset of (input, label) items or a DataLoader, "
                f"got {type(data).__name__}"
            )
    except (TypeError, IndexError, KeyError, AttributeError, ValueError) as err:
        if isinstance(err, LewcError):
            raise
        raise LewcError(f"{what}: items must be (input, label) pairs ({type(err).__name__}: {err})") from None
    x, y = x.detach().cpu(), y.detach().cpu()
    if x.ndim < 2 or len(x) == 0:
        raise LewcError(f"{what}: inputs must be a non-empty batch (N, …), got shape {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise LewcError(f"{what}: {len(x)} inputs but labels of shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise LewcError(f"{what}: labels must be integer class indices, got {y.dtype}")
    if not x.is_floating_point():
        raise LewcError(f"{what}: inputs must be floating point (already normalised), got {x.dtype}")
    x = x.float()  # lewc analyses in float32, whatever the models' and the data's precision
    if not bool(torch.isfinite(x).all()):
        raise LewcError(f"{what}: inputs contain NaN or infinite values (or values beyond float32's range)")
    return x, y.long()


def _check_labels(y: torch.Tensor, num_classes: int, what: str) -> None:
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise LewcError(
            f"{what} labels span [{lo}, {hi}], outside the models' {num_classes} classes [0, {num_classes - 1}]"
        )


def _check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    """Same tensors (names, shapes, kinds) in the same order; otherwise name the first that differs.

    Floating precisions may differ (both copies are analysed in float32); integer vs floating may not."""
    sa, sb = model_a.state_dict(), model_b.state_dict()
    for name in list(sa) + [k for k in sb if k not in sa]:
        if name not in sb:
            raise LewcError(f"the two models are different architectures: tensor {name} is only in model_a")
        if name not in sa:
            raise LewcError(f"the two models are different architectures: tensor {name} is only in model_b")
        a, b = sa[name], sb[name]
        if a.shape != b.shape or a.is_floating_point() != b.is_floating_point():
            raise LewcError(
                f"the two models are different architectures: tensor {name} is {tuple(a.shape)} {a.dtype} in "
                f"model_a but {tuple(b.shape)} {b.dtype} in model_b"
            )


def _num_classes(model: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        out = model(example)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or not out.is_floating_point():
        raise LewcError(f"{type(model).__name__} must return (batch, classes) floating-point logits")
    if out.shape[1] < 2:
        raise LewcError(f"{type(model).__name__} returns {out.shape[1]} logit(s) per example; a classifier has ≥ 2")
    return int(out.shape[1])


def private_copy(model: nn.Module, tag: str) -> nn.Module:
    """A float32 CPU copy of ``model`` (the caller's module is never touched), after refusing by name what
    lewc cannot merge: tied parameters, tensors without values (``meta``), integer, complex or sparse weights.

    fp16/bf16 weights become float32 exactly; float64 ones are rounded to float32 (the analysis's precision;
    the original dtype is recorded in the endpoint's description)."""
    if not isinstance(model, nn.Module):
        raise LewcError(f"{tag} must be a torch.nn.Module, got {type(model).__name__}")
    seen: dict[int, str] = {}
    tensors = [(n, t, True) for n, t in model.named_parameters(remove_duplicate=False)]
    tensors += [(n, t, False) for n, t in model.named_buffers(remove_duplicate=False)]
    for name, t, is_param in tensors:
        if id(t) in seen:
            raise LewcError(
                f"{tag} ties {seen[id(t)]} and {name} (one tensor under two names); lewc merges untied weights "
                "only: untie them (e.g. clone one) to verify this model"
            )
        seen[id(t)] = name
        if t.is_meta:
            raise LewcError(f"{tag}: tensor {name} is on the meta device (no values); load its weights first")
        if t.layout != torch.strided:
            raise LewcError(f"{tag}: tensor {name} has layout {t.layout}; lewc merges dense weights only")
        if t.is_complex() or (is_param and not t.is_floating_point()):
            raise LewcError(f"{tag}: parameter {name} is {t.dtype}; lewc merges real floating-point weights only")
    try:
        clone = copy.deepcopy(model)
    except Exception as err:  # noqa: BLE001 - a user's module may hold anything that refuses to be copied
        raise LewcError(f"{tag} cannot be copied ({type(err).__name__}: {_first_line(err)})") from None
    return clone.to(device="cpu", dtype=torch.float32)


def model_dtype(model: nn.Module) -> str:
    kinds = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()})
    return ",".join(kinds) or "none"


def adapt(model: nn.Module, example: torch.Tensor) -> CapturingModel:
    """A private copy of ``model`` with lewc's capture protocol: lewc's own families as they are, any
    other module through its traced graph."""
    if not isinstance(model, nn.Module):
        raise LewcError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, CapturingModel):
        return copy.deepcopy(model).eval()
    return TracedModel(model, example)


def endpoint_meta(model: CapturingModel, source: nn.Module, tag: str, info: DatasetInfo) -> CheckpointMeta:
    """The sidecar-like description reports show for an endpoint that lewc did not train (an unchecked record:
    its seed is the tag, it has no norm or bias of a lewc family; ``source`` and ``dtype`` are extra fields)."""
    return CheckpointMeta.record(
        model=type(source).__name__,
        width=1,
        base_width=None,
        depth=None,
        norm=None,
        bias=None,
        num_classes=info.num_classes,
        in_shape=list(info.in_shape),
        seed=tag,
        dataset=info.name,
        sha256=state_sha256(source),
        source="lewc.verify_pair",
        parameters=sum(p.numel() for p in source.parameters()),
        dtype=model_dtype(source),  # as given; the analysis runs in float32
    )


def check_splits(x_train: torch.Tensor, x_test: torch.Tensor) -> None:
    """Train and test inputs of one shape, and enough test examples for the bootstrap intervals."""
    if tuple(x_train.shape[1:]) != tuple(x_test.shape[1:]):
        raise LewcError(f"train inputs are {tuple(x_train.shape[1:])} but test inputs {tuple(x_test.shape[1:])}")
    if len(x_test) < MIN_TEST_IMAGES:
        raise LewcError(f"test has {len(x_test)} examples; bootstrap intervals need at least {MIN_TEST_IMAGES}")


def device_dataset(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    device: torch.device,
    n_calib: int | None = None,
    name: str = "tensors",
) -> FloatDeviceDataset:
    """The splits on ``device``: calib carved from train (seeded, see module docstring), test as given."""
    (xtr, ytr), (xte, yte) = train, test
    check_splits(xtr, xte)
    if n_calib is None:
        n_calib = min(N_CALIB, len(xtr) // 10)
    if len(xtr) < 2 or not 1 <= n_calib < len(xtr):
        raise LewcError(f"train has {len(xtr)} examples; a calibration split of {n_calib} needs at least {n_calib + 1}")
    tr, ca = calib_indices(len(xtr), n_calib, SPLIT_SEED)
    info = DatasetInfo(name, tuple(xtr.shape[1:]), num_classes, (0.0,), (1.0,), False, "given by the caller")

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(x.to(device), y.to(device))

    tr_t, ca_t = torch.as_tensor(tr), torch.as_tensor(ca)
    return FloatDeviceDataset(info, split(xtr[tr_t], ytr[tr_t]), split(xtr[ca_t], ytr[ca_t]), split(xte, yte), device)


# --- the call ----------------------------------------------------------------------------------------------


def verify_pair(
    model_a: nn.Module,
    model_b: nn.Module,
    *,
    train,
    test,
    lams: Sequence[float] | None = None,
    align: Sequence[str] | str = ("none", "weights"),
    controls: bool = True,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    n_calib: int | None = None,
    bn_images: int = BN_IMAGES,
    batch_size: int = 500,
    progress: bool = False,
    allow_chance: bool = False,
) -> PairReport:
    """Verify LMC / LEWC for two models of one architecture (see the module docstring for the data).

    Returns a ``PairReport``; with ``out`` the folder is also written there. Bad input raises
    ``lewc.LewcError`` (a ``ValueError``) with one sentence, and nothing else: models of any floating
    precision (analysed in float32), on any device, with buffers or shared modules, are verified or
    refused by name; tied parameters, tensors on ``meta``, integer weights, empty or misshapen data,
    absurd weights or logits and chance-level endpoints are refused (``allow_chance=True`` analyses
    the last anyway, recorded under ``admission``). ``model_a`` and ``model_b`` are not changed.
    Library warnings raised during the call become lewc DEBUG log lines (``lewc.core.logs.quiet_warnings``).
    """
    with quiet_warnings():
        return _verify_pair(
            model_a,
            model_b,
            train=train,
            test=test,
            lams=lams,
            align=align,
            controls=controls,
            out=out,
            device=device,
            n_calib=n_calib,
            bn_images=bn_images,
            batch_size=batch_size,
            progress=progress,
            allow_chance=allow_chance,
        )


def _prepare(model_a: nn.Module, model_b: nn.Module, example: torch.Tensor) -> tuple[CapturingModel, CapturingModel]:
    """Private float32 copies of both models, adapted to lewc's capture protocol and checked to be one graph."""
    copies = {tag: private_copy(m, tag) for tag, m in (("model_a", model_a), ("model_b", model_b))}
    adapted = {}
    for tag, m in copies.items():
        try:
            adapted[tag] = adapt(m, example)
            _num_classes(adapted[tag], example)
        except LewcError as err:
            raise LewcError(f"{tag}: {err}") from None
        except Exception as err:  # noqa: BLE001 - a user's forward can raise anything on the given inputs
            raise LewcError(
                f"{tag} cannot run on the given inputs of shape {tuple(example.shape[1:])} "
                f"({type(err).__name__}: {_first_line(err)})"
            ) from None
    adapted_a, adapted_b = adapted["model_a"], adapted["model_b"]
    if isinstance(adapted_a, TracedModel):
        sig_a, sig_b = graph_signature(adapted_a.net), graph_signature(adapted_b.net)
        for i, (x, y) in enumerate(zip(sig_a, sig_b, strict=False)):
            if x != y:
                raise LewcError(
                    f"the two models are different architectures: op {i} is {x} in model_a but {y} in model_b"
                )
        if len(sig_a) != len(sig_b):
            raise LewcError(f"the two models are different architectures: {len(sig_a)} vs {len(sig_b)} ops")
    return adapted_a, adapted_b


def _verify_pair(
    model_a,
    model_b,
    *,
    train,
    test,
    lams,
    align,
    controls,
    out,
    device,
    n_calib,
    bn_images,
    batch_size,
    progress,
    allow_chance,
) -> PairReport:
    for tag, m in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(m, nn.Module):
            raise LewcError(f"{tag} must be a torch.nn.Module, got {type(m).__name__}")
    if model_a is model_b:
        raise LewcError("model_a and model_b are the same object; the negative control already merges A with itself")
    _check_same_architecture(model_a, model_b)
    options = analysis_options(lams, None, bn_images, controls, align)  # the checks every request passes
    for what, flag in (("progress", progress), ("allow_chance", allow_chance)):
        check_bool(flag, what)
    check_batch_size(batch_size, "batch_size")
    if n_calib is not None:
        check_int(n_calib, "n_calib", 1, MAX_COUNT)
    if out is not None:
        out = check_out(out)
    if device is not None and not isinstance(device, str | torch.device):
        raise LewcError(f"device must be a string or torch.device, got {type(device).__name__}")
    dev = resolve_device(None if device is None else str(device))
    train_t, test_t = as_tensors(train, "train"), as_tensors(test, "test")
    check_splits(train_t[0], test_t[0])  # before the models are traced on the test inputs
    example = test_t[0][:2]
    adapted_a, adapted_b = _prepare(model_a, model_b, example)
    num_classes = _num_classes(adapted_a, example)
    for what, (_, y) in (("train", train_t), ("test", test_t)):
        _check_labels(y, num_classes, what)
    ds = device_dataset(train_t, test_t, num_classes, dev, n_calib)
    meta_a = endpoint_meta(adapted_a, model_a, "A", ds.info)
    meta_b = endpoint_meta(adapted_b, model_b, "B", ds.info)
    check_distinct(meta_a, meta_b, "model_a and model_b")
    pair = Pair(adapted_a.to(dev), adapted_b.to(dev), meta_a, meta_b)
    layers = json.dumps([s.name for s in pair.layers])
    provenance = run_provenance(API_COMMAND, options, dev, ["A", "B"], layers=layers)
    settings = RunSettings(batch_size_eval=batch_size, progress=progress, align_cache=None, allow_chance=allow_chance)
    result = analyse_pair(pair, ds, options, settings, dev, provenance)
    rep = PairReport(result)
    if out is not None:
        rep.save(out)
    return rep
