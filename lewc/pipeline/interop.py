"""Checkpoints lewc did not write: plain state dicts plus an architecture named on the command line.

``--arch`` names the architecture either as a lewc family with its options (``mlp:width=16,depth=3``;
the keys are ``models.build``'s: width, base_width, depth, norm, bias) or as a factory
``package.module:callable`` whose keyword arguments come from ``--arch-kwargs k=v,…``
(``torchvision.models:resnet18`` with ``num_classes=10``). The weights are a state dict in a
``.pt``/``.pth`` file (read with ``torch.load(weights_only=True)``: tensors only, never arbitrary
pickles) or a ``.safetensors`` file with no lewc sidecar. Foreign modules are traced
(``lewc.models.traced``); endpoint accuracies are measured on the evaluated test images, never copied.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lewc.core.errors import LewcError
from lewc.core.io import sha256_file
from lewc.models import build, family_names, get_family
from lewc.models.common import CapturingModel
from lewc.models.traced import TracedModel
from lewc.pipeline.admission import check_floating_kind, check_weights
from lewc.training.checkpoints import CheckpointMeta

STATE_SUFFIXES = (".pt", ".pth", ".safetensors")
FAMILY_KEYS = ("width", "base_width", "depth", "norm", "bias")


@dataclass(frozen=True)
class ArchSpec:
    """An architecture named on the command line: a lewc family or a ``module:factory`` with kwargs."""

    text: str
    family: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.family or self.factory.rsplit(":", 1)[-1]


def parse_value(text: str) -> Any:
    """``10`` → 10, ``0.5`` → 0.5, ``true``/``false`` → bool, ``none`` → None, anything else a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_kwargs(text: str | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise LewcError(f"{what}: {item!r} is not key=value")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_arch(text: str, kwargs_text: str | None = None) -> ArchSpec:
    """``mlp:width=16`` (a lewc family) or ``torchvision.models:resnet18`` (+ ``--arch-kwargs``)."""
    head, _, tail = text.partition(":")
    if head in family_names():
        if kwargs_text:
            raise LewcError("--arch-kwargs is for module:factory; give a family's options as mlp:width=16")
        kwargs = parse_kwargs(tail, f"--arch {text}")
        bad = sorted(set(kwargs) - set(FAMILY_KEYS))
        if bad:
            raise LewcError(f"--arch {text}: unknown option(s) {bad} for a lewc family; use {', '.join(FAMILY_KEYS)}")
        return ArchSpec(text, family=head, kwargs=kwargs)
    if not tail:
        raise LewcError(
            f"--arch {text!r} is neither a lewc family ({', '.join(family_names())}) nor package.module:factory"
        )
    return ArchSpec(text, factory=text, kwargs=parse_kwargs(kwargs_text, "--arch-kwargs"))


def build_arch(arch: ArchSpec, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    """An uninitialised module of ``arch`` (lewc families get the dataset's classes and input shape)."""
    if arch.family is not None:
        kw = dict(arch.kwargs)
        return build(arch.family, kw.pop("width", 1), num_classes, in_shape, **kw)
    module_name, _, attr = arch.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise LewcError(f"--arch {arch.text}: cannot import {attr} from {module_name} ({err})") from None
    try:
        model = factory(**arch.kwargs)
    except TypeError as err:
        raise LewcError(f"--arch {arch.text}: the factory rejected {arch.kwargs} ({err})") from None
    if not isinstance(model, nn.Module):
        raise LewcError(f"--arch {arch.text} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.pt``/``.pth`` (``weights_only``) or ``.safetensors``; ``{"state_dict": …}`` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise LewcError(f"checkpoint {path} does not exist")
    if path.suffix not in STATE_SUFFIXES:
        raise LewcError(f"checkpoint {path}: with --arch, give a {'/'.join(STATE_SUFFIXES)} state dict")
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            state = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/safetensors raise many types for a bad file
        raise LewcError(f"checkpoint {path} cannot be read as a state dict ({str(err).splitlines()[0]})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LewcError(f"checkpoint {path} is not a state dict of tensors")
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """``model`` with ``state`` loaded strictly; the first mismatching tensor is named in one line."""
    expected = model.state_dict()
    for name in list(expected) + [k for k in state if k not in expected]:
        if name not in state:
            raise LewcError(f"checkpoint {path} does not fit the architecture: tensor {name} is missing")
        if name not in expected:
            raise LewcError(f"checkpoint {path} does not fit the architecture: unexpected tensor {name}")
        if state[name].shape != expected[name].shape:
            raise LewcError(
                f"checkpoint {path}: tensor {name} is {tuple(state[name].shape)}, the architecture has "
                f"{tuple(expected[name].shape)}"
            )
        check_floating_kind(name, state[name], expected[name], f"checkpoint {path}")
        if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
            raise LewcError(f"checkpoint {path}: tensor {name} contains NaN or infinite values")
    model.load_state_dict(state)
    check_weights(model, f"checkpoint {path}")  # after the cast to the architecture's dtypes: finite, plausible
    return model.eval()


def family_fields(arch: ArchSpec) -> dict[str, Any]:
    """The architecture fields of a sidecar, resolved (so the positive control can rebuild a family at 2×)."""
    if arch.family is None:
        return {"width": 1, "base_width": None, "depth": None, "norm": None, "bias": None}
    fam, kw = get_family(arch.family), arch.kwargs
    return {
        "width": int(kw.get("width", 1)),
        "base_width": kw.get("base_width") or fam.base_width,
        "depth": kw.get("depth", fam.default_depth),
        "norm": kw.get("norm") or fam.default_norm,
        "bias": bool(kw.get("bias", True)),
    }


def foreign_endpoint(
    arch: ArchSpec, path: Path, tag: str, dataset: str, num_classes: int, in_shape: tuple[int, ...]
) -> tuple[CapturingModel, CheckpointMeta]:
    """(model with lewc's capture protocol, sidecar-like meta) for one plain checkpoint."""
    model = load_into(build_arch(arch, num_classes, in_shape), load_state_file(path), path)
    if not isinstance(model, CapturingModel):
        model = TracedModel(model, torch.zeros(2, *in_shape))
    meta = CheckpointMeta.record(
        model=arch.label,
        arch=arch.text,
        arch_kwargs=arch.kwargs,
        **family_fields(arch),
        num_classes=num_classes,
        in_shape=list(in_shape),
        seed=tag,
        dataset=dataset,
        sha256=sha256_file(path),
        source=str(path),
    )
    return model, meta
