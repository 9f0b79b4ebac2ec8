"""Checkpoints: ``NAME.safetensors`` (the weights) plus ``NAME.json`` (everything needed to rebuild).

Never pickle: safetensors stores tensors only, and the sidecar is plain JSON. ``save`` writes the
weights first and the sidecar last, both atomically, so a sidecar's presence means a finished
checkpoint. ``load`` rebuilds the model from the sidecar and checks the sha256 and every tensor's
name, shape and dtype before a single number is used.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from lewc.core.errors import LewcError
from lewc.core.io import atomic_path, sha256_file, write_json_atomic
from lewc.core.limits import LIMITS, check_limit
from lewc.core.validate import check_bool, check_number, check_plain_name, check_str, short
from lewc.core.version import __version__
from lewc.models import CapturingModel, build
from lewc.models.common import NORMS
from lewc.training.data import dataset_info
from lewc.training.recipe import TrainConfig

SIDECAR_SCHEMA = "lewc.checkpoint/1"
ARCH_KEYS = ("model", "width", "base_width", "depth", "norm", "bias", "num_classes", "in_shape")


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def weights_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".safetensors")


def architecture(meta: CheckpointMeta) -> dict[str, Any]:
    """The part of a sidecar that fixes the architecture (what two endpoints must share)."""
    return {k: getattr(meta, k) for k in ARCH_KEYS}


def build_from_meta(meta: CheckpointMeta) -> CapturingModel:
    """Rebuild an (uninitialised) model from a sidecar's architecture fields."""
    return build(
        meta.model,
        int(meta.width),
        int(meta.num_classes),
        tuple(meta.in_shape),
        norm=meta.norm,
        bias=bool(meta.bias),
        base_width=meta.base_width,
        depth=meta.depth,
    )


# the fields ``save`` writes for the weights it writes: a record derived from another checkpoint's
# (an aligned B) loses its own, and the new ones follow the record's fields, as they always have
SAVED_KEYS = ("schema", "weights_file", "sha256", "created")


def save(model: torch.nn.Module, path: str | os.PathLike, meta: CheckpointMeta) -> Path:
    """Write weights and sidecar atomically; returns the path of the ``.safetensors`` file.

    ``meta`` must hold the architecture fields (``ARCH_KEYS``); versions, time and the weights' sha256
    are added here (the record's own ``SAVED_KEYS`` are replaced: they described other weights).
    """
    fields = {k: v for k, v in meta.to_dict().items() if k not in SAVED_KEYS}
    missing = [k for k in ARCH_KEYS if k not in fields]
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
    full = dict(fields)
    full.update(
        {
            "schema": SIDECAR_SCHEMA,
            "weights_file": wpath.name,
            "sha256": sha256_file(wpath),
            "lewc_version": __version__,
            "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )
    write_json_atomic(sidecar_path(wpath), full)
    return wpath


def check_file(path: Path, what: str) -> None:
    """A regular file at ``path``, or a one-line error saying what is there instead."""
    if path.is_file():
        return
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop this way
            raise LewcError(f"{what} {path} is a symlink loop") from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise LewcError(f"{what} {path} is a symlink loop") from None
            raise LewcError(f"{what} {path} is a broken symlink (its target does not exist)") from None
    if path.is_dir():
        raise LewcError(f"{what} {path} is a directory, not a file")
    if path.exists():
        raise LewcError(f"{what} {path} is not a regular file")
    raise LewcError(f"{what} {path} does not exist")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sidecar's JSON object and validate every field by type and range (one-line errors,
    ``SIDECAR_FIELDS``): the low-level reader behind ``read_checkpoint_meta``, the one callers use."""
    side = sidecar_path(path)
    if not side.exists() and not side.is_symlink():
        raise LewcError(f"checkpoint sidecar {side} is missing (was the checkpoint written by lewc?)")
    check_file(side, "checkpoint sidecar")
    if side.stat().st_size > MAX_SIDECAR_BYTES:
        raise LewcError(f"checkpoint sidecar {side} is {side.stat().st_size} bytes; a sidecar is at most 64 MiB")
    try:
        meta = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # ValueError: also ints over 4,300 digits
        raise LewcError(f"checkpoint sidecar {side} is not valid JSON ({short_error(err)})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SIDECAR_SCHEMA:
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise LewcError(f"checkpoint sidecar {side} has an unknown schema {short(schema)}")
    try:
        validate_meta(meta)
    except LewcError as err:
        raise LewcError(f"checkpoint sidecar {side}: {err}") from None
    return meta


def read_checkpoint_meta(path: str | os.PathLike) -> CheckpointMeta:
    """A checkpoint's sidecar as a validated ``CheckpointMeta`` (one-line errors naming the sidecar)."""
    meta = read_meta(path)
    return CheckpointMeta.from_dict(meta)


def short_error(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --- the sidecar's schema: every field a number, name or path depends on, by type and range -----------

MAX_SIDECAR_BYTES = 64 << 20
MAX_SEED = LIMITS["seed"][1]
SHA256 = re.compile(r"[0-9a-f]{64}")


def _opt(check):
    return lambda v, what: None if v is None else check(v, what)


def _in_shape(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        raise LewcError(f"{what} must be a list of 1 to 4 positive integers, got {short(value)}")
    return [check_limit(v, "in_shape", f"{what}[{i}]") for i, v in enumerate(value)]


def _sha256(value: Any, what: str) -> str:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise LewcError(f"{what} must be 64 lowercase hex digits, got {short(value)}")
    return value


def _norm(value: Any, what: str) -> str:
    if value not in NORMS:
        raise LewcError(f"{what} must be one of {', '.join(NORMS)}, got {short(value)}")
    return value


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise LewcError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise LewcError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _fraction(value: Any, what: str) -> float:
    return check_number(value, what, 0.0, 1.0)


def _nonneg(value: Any, what: str) -> float:
    return check_number(value, what, 0.0, 1e300)


def _limit(name: str):
    """The check of a size against its range in ``lewc.core.limits`` (shared with ``TrainConfig``)."""
    return lambda v, what: check_limit(v, name, what)


def _meta_field(check, required: bool = False):
    """A ``CheckpointMeta`` field with its check(value, what) (``required``: no default)."""
    if required:
        return field(metadata={"check": check})
    return field(default=None, metadata={"check": _opt(check)})


def _str(v, what):
    return check_str(v, what)


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's sidecar, typed: the record is its own schema (each field carries its check, sizes
    use the ranges of ``lewc.core.limits`` that ``TrainConfig`` also uses).

    ``from_dict`` validates a sidecar's JSON object by type and range (one-line ``LewcError``s, naming the
    field) and ``to_dict`` gives back exactly that object: the format on disk does not change. Unknown
    fields (later versions may add some) are kept in ``extra``, never used; ``keys`` is the sidecar's own
    field order, so a record read and written again is the same JSON.

    ``record`` builds one in memory without the sidecar checks, for what is no lewc checkpoint (yet): the
    endpoints of foreign state dicts or modules (``seed`` is then the endpoint's tag, ``norm`` and ``bias``
    may be None), the controls' wide pairs, a recipe's architecture before training. Derived records are
    ``dataclasses.replace`` of another; ``to_dict`` keeps the original's field order and appends new ones.
    """

    model: str = _meta_field(check_plain_name, required=True)
    width: int = _meta_field(_limit("width"), required=True)
    norm: str | None = _meta_field(lambda v, what: _norm(v, what), required=True)  # None: a foreign endpoint
    bias: bool | None = _meta_field(check_bool, required=True)  # None: a foreign endpoint
    num_classes: int = _meta_field(_limit("num_classes"), required=True)
    in_shape: list = _meta_field(lambda v, what: _in_shape(v, what), required=True)
    dataset: str = _meta_field(check_plain_name, required=True)
    seed: int | str = _meta_field(_limit("seed"), required=True)  # str: a foreign endpoint's tag ("A", "B")
    sha256: str = _meta_field(lambda v, what: _sha256(v, what), required=True)
    base_width: int | None = _meta_field(_limit("base_width"))
    depth: int | None = _meta_field(_limit("depth"))
    weights_file: str | None = _meta_field(check_plain_name)
    train_config: dict | None = _meta_field(lambda v, what: _dict(v, what))
    alignment: dict | None = _meta_field(lambda v, what: _dict(v, what))
    history: list | None = _meta_field(lambda v, what: _list(v, what))
    test_acc: float | None = _meta_field(lambda v, what: _fraction(v, what))
    train_acc: float | None = _meta_field(lambda v, what: _fraction(v, what))
    test_loss: float | None = _meta_field(lambda v, what: _nonneg(v, what))
    train_loss: float | None = _meta_field(lambda v, what: _nonneg(v, what))
    epochs: int | None = _meta_field(_limit("epochs"))
    world_size: int | None = _meta_field(_limit("world_size"))
    threads: int | None = _meta_field(_limit("threads"))
    parameters: int | None = _meta_field(_limit("parameters"))
    bf16_autocast: bool | None = _meta_field(check_bool)
    lewc_version: str | None = _meta_field(_str)
    torch_version: str | None = _meta_field(_str)
    created: str | None = _meta_field(_str)
    device: str | None = _meta_field(_str)
    optimizer: str | None = _meta_field(_str)
    schedule: str | None = _meta_field(_str)
    determinism: str | None = _meta_field(_str)
    schema: str | None = SIDECAR_SCHEMA  # None: a record built in memory (``record``) and never saved
    extra: dict = field(default_factory=dict, compare=False)  # unknown fields, verbatim
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)  # the sidecar's field order

    @classmethod
    def from_dict(cls, meta: dict[str, Any]) -> CheckpointMeta:
        """Validate a sidecar's object (``validate_meta``) and return it as a record."""
        if not isinstance(meta, dict):
            raise LewcError(f"a sidecar must be a JSON object, got {type(meta).__name__}")
        validate_meta(meta)
        return cls.record(**meta)

    @classmethod
    def record(cls, /, **fields: Any) -> CheckpointMeta:
        """A record of exactly ``fields``, unchecked (see the class docstring): unknown names go to ``extra``
        (any name: ``cls`` is positional-only), required fields not given are None, and ``to_dict`` gives
        back ``fields`` in their order."""
        known = _field_names()
        values = dict.fromkeys(REQUIRED_FIELDS) | {"schema": None}
        values |= {k: v for k, v in fields.items() if k in known}
        return cls(**values, extra={k: v for k, v in fields.items() if k not in known}, keys=tuple(fields))

    @classmethod
    def of_config(cls, cfg: TrainConfig, info: Any, /, **fields: Any) -> CheckpointMeta:
        """The record of an endpoint trained with ``cfg`` on the dataset ``info`` describes (unchecked, as
        ``record``): its architecture fields, then ``fields``, in that order (the sidecar's)."""
        return cls.record(
            model=cfg.model,
            width=cfg.width,
            base_width=cfg.base_width,
            depth=cfg.depth,
            norm=cfg.norm,
            bias=cfg.bias,
            num_classes=info.num_classes,
            in_shape=list(info.in_shape),
            **fields,
        )

    @classmethod
    def from_stored(cls, stored: Any, required: tuple[str, ...] = ()) -> CheckpointMeta:
        """An endpoint's sidecar as a results file stores it (``sidecar_a``/``sidecar_b``): unchecked, since
        it may describe a foreign endpoint and carries the sidecar's claims nested (``reported_meta``).

        ``required``: the fields the reader needs. A stored value that is no object is a ``TypeError``, a
        required field it lacks a ``KeyError``: the reader's ``lewc.core.io.reading`` names the file.
        """
        if not isinstance(stored, dict):
            raise TypeError(f"a stored sidecar must be a JSON object, got {type(stored).__name__}")
        for name in required:
            if stored.get(name) is None:
                raise KeyError(name)
        return cls.record(**stored)

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's JSON object: the fields it was read or built with, in their order, then any field
        set since (``dataclasses.replace``; a new record: every field set, in the class's order)."""
        known = _field_names()
        order = dict.fromkeys(self.keys)
        order |= dict.fromkeys(name for name in known if getattr(self, name) is not None)
        order |= dict.fromkeys(self.extra)
        return {
            k: self.extra[k] if k in self.extra else getattr(self, k) for k in order if k in self.extra or k in known
        }

    @property
    def architecture(self) -> dict[str, Any]:
        """The fields that fix the architecture (what two endpoints must share)."""
        return architecture(self)

    def trained_with(self, key: str, default: Any = None) -> Any:
        """A value of the stored ``train_config`` as written (absent: ``default``): not ``config``, whose
        defaults for fields an older sidecar lacks need not be what that checkpoint was trained with."""
        return (self.train_config or {}).get(key, default)

    @property
    def config(self) -> TrainConfig | None:
        """The ``TrainConfig`` it was trained with (``None`` for a sidecar without one)."""
        return None if self.train_config is None else TrainConfig.from_dict(self.train_config)


def _field_names() -> tuple[str, ...]:
    """``CheckpointMeta``'s sidecar fields, in the class's order (``extra`` and ``keys`` are bookkeeping)."""
    return tuple(f.name for f in dataclasses.fields(CheckpointMeta) if f.name not in ("extra", "keys"))


# field → (required, check(value, what)): the record's own schema, as a table
SIDECAR_FIELDS: dict[str, tuple[bool, Any]] = {
    f.name: (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.metadata["check"])
    for f in dataclasses.fields(CheckpointMeta)
    if "check" in f.metadata
}
TRAIN_CONFIG_FIELDS: dict[str, Any] = {  # train_config field → check (its keys are TrainConfig's)
    "model": lambda v, what: check_plain_name(v, what),
    "width": _limit("width"),
    "dataset": lambda v, what: check_plain_name(v, what),
    "seed": _limit("seed"),
    "epochs": _limit("epochs"),
    "lr": lambda v, what: check_number(v, what, 0.0, 1e6),
    "wd": lambda v, what: check_number(v, what, 0.0, 1e6),
    "momentum": lambda v, what: check_number(v, what, 0.0, 1.0),
    "batch_size": _limit("batch_size"),
    "warmup_epochs": lambda v, what: check_number(v, what, 0.0, 1e6),
    "norm": _norm,
    "bias": check_bool,
    "base_width": _limit("base_width"),
    "depth": _opt(_limit("depth")),
    "n_calib": _limit("n_calib"),
    "extra": _dict,
}
REQUIRED_FIELDS = tuple(k for k, (required, _) in SIDECAR_FIELDS.items() if required)
SHARED_WITH_TRAIN_CONFIG = ("model", "width", "dataset", "seed", "norm", "bias", "base_width", "depth")


def validate_meta(meta: dict[str, Any]) -> None:
    """Every known field of a sidecar by type and range; the dataset it names against its tensors' shapes.

    Unknown extra fields are allowed (later versions may add some) but never used.
    """
    for key, (required, check) in SIDECAR_FIELDS.items():
        if key not in meta:
            if required:
                raise LewcError(f"lacks field '{key}'")
            continue
        check(meta[key], f"field '{key}'")
    info = dataset_info(meta["dataset"])
    if list(meta["in_shape"]) != list(info.in_shape) or meta["num_classes"] != info.num_classes:
        raise LewcError(
            f"names dataset {meta['dataset']} ({info.num_classes} classes of {list(info.in_shape)}) but the "
            f"weights take {meta['num_classes']} classes of {meta['in_shape']}"
        )
    cfg = meta.get("train_config")
    if cfg is not None:
        for key, check in TRAIN_CONFIG_FIELDS.items():
            if key in cfg:
                check(cfg[key], f"train_config field '{key}'")
        for key in SHARED_WITH_TRAIN_CONFIG:
            if key in cfg and key in meta and cfg[key] != meta[key]:
                raise LewcError(f"says {key} {short(meta[key])} but its train_config says {short(cfg[key])}")
        TrainConfig.from_dict(cfg).validate()  # complete, no unknown keys, values the recipe accepts


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CapturingModel, CheckpointMeta]:
    """Rebuild the model of a checkpoint, verify it, and return ``(model in eval mode, its sidecar)``."""
    wpath = weights_path(path)
    meta = read_checkpoint_meta(wpath)  # every field checked: the required ones are there
    if not wpath.exists() and not wpath.is_symlink():
        raise LewcError(f"checkpoint weights {wpath} are missing")
    check_file(wpath, "checkpoint weights")
    digest = sha256_file(wpath)
    if digest != meta.sha256:
        raise LewcError(f"checkpoint {wpath} does not match its sidecar's sha256 (corrupt or replaced file)")
    try:
        state = safetensors.torch.load_file(str(wpath), device="cpu")
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise LewcError(f"checkpoint {wpath} cannot be read ({str(err).splitlines()[0]})") from None
    try:
        model = build_from_meta(meta)
    except (ValueError, TypeError) as err:
        side = sidecar_path(wpath)
        raise LewcError(f"checkpoint sidecar {side} has a malformed architecture field ({err})") from None
    if meta.train_config is not None:
        try:  # unknown or missing keys, values the recipe refuses: one-line errors
            meta.config.validate()
        except LewcError as err:
            raise LewcError(f"checkpoint sidecar {sidecar_path(wpath)}: {err}") from None
    expected = model.state_dict()
    extra = sorted(set(state) - set(expected))
    absent = sorted(set(expected) - set(state))
    if extra or absent:
        raise LewcError(
            f"checkpoint {wpath} does not fit {meta.model} ×{meta.width}: "
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
