"""Checkpoints: ``NAME.safetensors`` (the weights) plus ``NAME.json`` (everything needed to rebuild).

Never pickle: safetensors stores tensors only, and the sidecar is plain JSON. ``save`` writes the
weights first and the sidecar last, both atomically, so a sidecar's presence means a finished
checkpoint. ``load`` rebuilds the model from the sidecar and checks the sha256 and every tensor's
name, shape and dtype before a single number is used.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

import lewc
from lewc.core.errors import LewcError
from lewc.core.io import atomic_path, sha256_file, write_json_atomic
from lewc.models import CapturingModel, build

SIDECAR_SCHEMA = "lewc.checkpoint/1"
ARCH_KEYS = ("model", "width", "base_width", "depth", "norm", "bias", "num_classes", "in_shape")


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def weights_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".safetensors")


def architecture(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a sidecar that fixes the architecture (what two endpoints must share)."""
    return {k: meta.get(k) for k in ARCH_KEYS}


def build_from_meta(meta: dict[str, Any]) -> CapturingModel:
    """Rebuild an (uninitialised) model from a sidecar's architecture fields."""
    return build(
        meta["model"],
        int(meta["width"]),
        int(meta["num_classes"]),
        tuple(meta["in_shape"]),
        norm=meta["norm"],
        bias=bool(meta["bias"]),
        base_width=meta.get("base_width"),
        depth=meta.get("depth"),
    )


def save(model: torch.nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write weights and sidecar atomically; returns the path of the ``.safetensors`` file.

    ``meta`` must hold the architecture keys (``ARCH_KEYS``); versions, time and the weights' sha256
    are added here.
    """
    missing = [k for k in ARCH_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise LewcError(f"refusing to save a checkpoint with non-finite values in {name}")
    wpath = weights_path(path)
    with atomic_path(wpath) as tmp:
        try:
            safetensors.torch.save_file(state, str(tmp))
        except Exception as err:  # noqa: BLE001 - safetensors reports a full disk as its own error type
            if "I/O error" not in str(err):
                raise
            raise LewcError(f"cannot write {wpath} ({str(err).splitlines()[0]}); free space and rerun") from None
    full = dict(meta)
    full.update(
        {
            "schema": SIDECAR_SCHEMA,
            "weights_file": wpath.name,
            "sha256": sha256_file(wpath),
            "lewc_version": lewc.__version__,
            "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )
    write_json_atomic(sidecar_path(wpath), full)
    return wpath


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and sanity-check a sidecar (one-line errors for missing or corrupt ones)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise LewcError(f"checkpoint sidecar {side} is missing (was the checkpoint written by lewc?)")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LewcError(f"checkpoint sidecar {side} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SIDECAR_SCHEMA:
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise LewcError(f"checkpoint sidecar {side} has an unknown schema {schema!r}")
    return meta


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CapturingModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint, verify it, and return ``(model in eval mode, metadata)``."""
    wpath = weights_path(path)
    meta = read_meta(wpath)
    if not wpath.is_file():
        raise LewcError(f"checkpoint weights {wpath} are missing")
    digest = sha256_file(wpath)
    if digest != meta.get("sha256"):
        raise LewcError(f"checkpoint {wpath} does not match its sidecar's sha256 (corrupt or replaced file)")
    try:
        state = safetensors.torch.load_file(str(wpath), device="cpu")
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise LewcError(f"checkpoint {wpath} cannot be read ({str(err).splitlines()[0]})") from None
    try:
        model = build_from_meta(meta)
    except KeyError as err:
        raise LewcError(f"checkpoint sidecar {sidecar_path(wpath)} lacks field {err}") from None
    except (ValueError, TypeError) as err:
        side = sidecar_path(wpath)
        raise LewcError(f"checkpoint sidecar {side} has a malformed architecture field ({err})") from None
    for key in ("seed", "dataset"):
        if key not in meta:
            raise LewcError(f"checkpoint sidecar {sidecar_path(wpath)} lacks field '{key}'")
    if isinstance(meta.get("train_config"), dict):
        from lewc.training.recipe import TrainConfig

        TrainConfig.from_dict(meta["train_config"])  # unknown or missing keys are one-line errors
    expected = model.state_dict()
    extra = sorted(set(state) - set(expected))
    absent = sorted(set(expected) - set(state))
    if extra or absent:
        raise LewcError(
            f"checkpoint {wpath} does not fit {meta['model']} ×{meta['width']}: "
            f"unexpected tensors {extra[:3]}, missing tensors {absent[:3]}"
        )
    for name, ref in expected.items():
        got = state[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise LewcError(
                f"checkpoint {wpath}: tensor {name} has shape {tuple(got.shape)} {got.dtype}, "
                f"expected {tuple(ref.shape)} {ref.dtype}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise LewcError(f"checkpoint {wpath}: tensor {name} contains NaN or infinite values")
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops_per_image(model: CapturingModel, in_shape: tuple[int, ...]) -> float:
    """Forward FLOPs (2 × multiply-adds) of one image, by ``torch.utils.flop_counter`` (for cost estimates).

    Works on the meta device too (only shapes are needed). On the MLP, VGG and ResNet families it
    equals the former hand count over Conv2d/Linear weights exactly; normalisation and activations
    count as 0 in both.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *in_shape, device=next(model.parameters()).device))
    return float(counter.get_total_flops())
