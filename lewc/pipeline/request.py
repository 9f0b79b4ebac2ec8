"""One verification as a value: which endpoints, which analysis, how to run it.

Every client — ``python -m lewc.verify``, ``lewc.commands.table1``, the study's jobs — builds a
``Request`` and hands it to ``lewc.pipeline.runs.run``; nothing below the clients reads flags. A
request checks itself once, when it is built (one set of limits, one name per minimum), so a bad
one never reaches training or analysis, and it round-trips through JSON (``to_json`` /
``from_json``): a study job *is* its request, written as a file in the job folder.

The endpoints are one of three variants:

* ``Configs``: two training configs, trained first when their checkpoints are missing;
* ``Checkpoints``: two finished lewc checkpoints (``.safetensors`` + sidecar);
* ``StateDicts``: two plain state-dict files and the architecture they fit (``--arch``).

In-memory modules (``lewc.verify_pair``) are not serialisable; that path checks its analysis options
with the same ``analysis_options``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lewc.align.methods import check_methods
from lewc.core.conventions import BN_IMAGES, DEFAULT_LAMS
from lewc.core.errors import LewcError
from lewc.core.io import first_line
from lewc.core.validate import check_bool, check_int, check_path, short
from lewc.pipeline.folders import AnalysisOptions
from lewc.sweep.merge import check_lams
from lewc.training.recipe import MAX_COUNT, TrainConfig

SCHEMA = "lewc.request/1"
MIN_TEST_IMAGES = 10  # the fewest test images a bootstrap interval is taken over (``--n-test``, a test split)
MIN_BN_IMAGES = 2  # BatchNorm statistics need a batch


# --- the analysis options (they name the results folder) --------------------------------------------------


def analysis_options(
    lams: Sequence[float] | None = DEFAULT_LAMS,
    n_test: int | None = None,
    bn_images: int = BN_IMAGES,
    controls: bool = True,
    align: Sequence[str] | str = ("none", "weights"),
) -> AnalysisOptions:
    """Checked options: λ in [0, 1] with 0, ½ and 1; known alignments, ``none`` first; counts in range."""
    return AnalysisOptions(
        check_grid(lams), check_n_test(n_test), check_bn_images(bn_images), check_bool(controls, "controls"),
        check_align(align),
    )  # fmt: skip


def check_grid(lams: Sequence[float] | None) -> tuple[float, ...]:
    if isinstance(lams, str | bytes) or (lams is not None and not isinstance(lams, Sequence | np.ndarray)):
        raise LewcError(f"lams must be a sequence of numbers in [0, 1], got {type(lams).__name__}")
    try:
        values = check_lams(DEFAULT_LAMS if lams is None else [_real(v) for v in lams])
    except (TypeError, ValueError) as err:
        if isinstance(err, LewcError):
            raise
        raise LewcError(f"lams must be numbers in [0, 1] ({first_line(err)})") from None
    if not any(np.isclose(values, 0.5)):
        raise LewcError("the λ grid must contain 0.5 (barriers and verdicts are taken at λ = ½)")
    return tuple(values)


def _real(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise LewcError(f"lams must be real numbers, got {type(v).__name__}")
    return float(v)


def check_align(align: Sequence[str] | str) -> tuple[str, ...]:
    if not isinstance(align, str) and not (isinstance(align, Sequence) and all(isinstance(a, str) for a in align)):
        raise LewcError(f"align must be a method name or a sequence of names, got {type(align).__name__}")
    methods = check_methods(align if isinstance(align, str) else ",".join(align))
    return tuple(["none"] + [m for m in methods if m != "none"])


def check_n_test(n_test: int | None) -> int | None:
    """At least ``MIN_TEST_IMAGES``; above the test set's size it is clamped to all of it (``runs.used_options``)."""
    if n_test is None:
        return None
    if isinstance(n_test, int) and not isinstance(n_test, bool) and n_test < MIN_TEST_IMAGES:
        raise LewcError(f"--n-test must be at least {MIN_TEST_IMAGES} (bootstrap intervals need images)")
    return check_int(n_test, "--n-test", MIN_TEST_IMAGES, MAX_COUNT)


def check_bn_images(bn_images: int) -> int:
    if isinstance(bn_images, int) and not isinstance(bn_images, bool) and bn_images < MIN_BN_IMAGES:
        raise LewcError(
            f"--bn-images must be at least {MIN_BN_IMAGES} (BatchNorm statistics need a batch), got {bn_images}"
        )
    return check_int(bn_images, "--bn-images", MIN_BN_IMAGES, MAX_COUNT)


def check_batch_size(batch_size: int, what: str = "--batch-size-eval") -> int:
    if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size <= 0:
        raise LewcError(f"{what} must be positive, got {batch_size}")
    return check_int(batch_size, what, 1, MAX_COUNT)


# --- the endpoints ------------------------------------------------------------------------------------------


def _two_paths(paths: Sequence, what: str) -> tuple[Path, Path]:
    if isinstance(paths, str | bytes) or not isinstance(paths, Sequence) or len(paths) != 2:
        raise LewcError(f"{what} must be two paths (A and B), got {short(paths)}")
    for p in paths:
        if not isinstance(p, str | Path):
            raise LewcError(f"{what} must be paths, got {type(p).__name__}")
    return tuple(Path(check_path(p, what)) for p in paths)  # type: ignore[return-value]


@dataclass(frozen=True)
class Configs:
    """Two training configs: the endpoints are trained (or resumed) when their checkpoints are missing."""

    configs: tuple[TrainConfig, TrainConfig]
    no_train: bool = False  # fail instead of training a missing endpoint

    kind = "configs"

    def __post_init__(self) -> None:
        configs = self.configs
        if isinstance(configs, str | bytes) or not isinstance(configs, Sequence) or len(configs) != 2:
            raise LewcError(f"a pair needs two training configs, got {short(configs)}")
        if not all(isinstance(c, TrainConfig) for c in configs):
            raise LewcError("training configs must be lewc.training.recipe.TrainConfig values")
        for cfg in configs:
            try:
                cfg.validate()
            except (TypeError, ValueError) as err:
                raise LewcError(f"training config: {first_line(err)}") from None
        if configs[0] == configs[1]:
            raise LewcError(f"the two training configs are identical (seed {configs[0].seed}): a pair needs two seeds")
        object.__setattr__(self, "configs", tuple(configs))
        check_bool(self.no_train, "no_train")

    def as_dict(self) -> dict:
        return {"kind": self.kind, "configs": [c.as_dict() for c in self.configs], "no_train": self.no_train}


@dataclass(frozen=True)
class Checkpoints:
    """Two finished lewc checkpoints (``.safetensors`` with their sidecars)."""

    paths: tuple[Path, Path]

    kind = "checkpoints"

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", _two_paths(self.paths, "checkpoints"))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "paths": [str(p) for p in self.paths]}


@dataclass(frozen=True)
class StateDicts:
    """Two plain state dicts (``.pt``/``.pth``/``.safetensors`` without a sidecar) and their architecture."""

    arch: str  # a lewc family with options (``mlp:width=16``) or ``package.module:factory``
    paths: tuple[Path, Path]
    arch_kwargs: str | None = None  # keyword arguments of a factory, ``k=v,…``
    dataset: str | None = None  # the data to evaluate on (default: a lewc family's own)

    kind = "state_dicts"

    def __post_init__(self) -> None:
        for name in ("arch", "arch_kwargs", "dataset"):
            value = getattr(self, name)
            if not (isinstance(value, str) and value) and not (value is None and name != "arch"):
                raise LewcError(f"state dicts: {name} must be a non-empty string, got {short(value)}")
        object.__setattr__(self, "paths", _two_paths(self.paths, "state dicts"))

    def as_dict(self) -> dict:
        values = {"kind": self.kind, "arch": self.arch, "paths": [str(p) for p in self.paths]}
        return values | {"arch_kwargs": self.arch_kwargs, "dataset": self.dataset}


Endpoints = Configs | Checkpoints | StateDicts
KINDS: dict[str, type] = {cls.kind: cls for cls in (Configs, Checkpoints, StateDicts)}


# --- how to run (nothing here changes a number) -----------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """Where a run reads and writes, on what, and how it reports — nothing here changes a number."""

    command: str = ""  # recorded in the results' provenance (the command line, or a driver's description)
    device: str | None = None  # cpu, cuda or cuda:N (default: cuda when available)
    threads: int | None = None  # torch's CPU threads (default: torch's)
    data_root: str | None = None  # folder searched first for dataset files
    ckpt_dir: Path | None = None  # checkpoint folder (default data/checkpoints/)
    out: Path | None = None  # results folder (default: named by content under data/results/); always rewritten
    batch_size_eval: int = 500
    progress: bool = True
    keep_samples: bool = False  # also write samples.nc
    force: bool = False  # redo an analysis whose folder exists
    allow_chance: bool = False  # analyse chance-level endpoints anyway (recorded in the results)
    allow_slow: bool = False  # train even when the cost estimate is large on this device

    def __post_init__(self) -> None:
        if not isinstance(self.command, str):
            raise LewcError(f"command must be a string, got {type(self.command).__name__}")
        if self.device is not None and not isinstance(self.device, str):
            raise LewcError(f"device must be a string like cpu or cuda:0, got {type(self.device).__name__}")
        if self.threads is not None:
            check_int(self.threads, "--threads", 1, 4096)
        for name in ("data_root", "ckpt_dir", "out"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str | Path):
                    raise LewcError(f"{name} must be a path, got {type(value).__name__}")
                path = check_path(value, f"--{name.replace('_', '-')}")
                object.__setattr__(self, name, path if name == "data_root" else Path(path))
        check_batch_size(self.batch_size_eval)
        for name in ("progress", "keep_samples", "force", "allow_chance", "allow_slow"):
            check_bool(getattr(self, name), name)

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


# --- the request --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One pair to verify: its endpoints, the analysis (names the results folder) and how to run it."""

    endpoints: Endpoints
    options: AnalysisOptions = field(default_factory=analysis_options)
    context: RunContext = field(default_factory=RunContext)

    def __post_init__(self) -> None:
        if not isinstance(self.endpoints, Configs | Checkpoints | StateDicts):
            kind = type(self.endpoints).__name__
            raise LewcError(f"endpoints must be Configs, Checkpoints or StateDicts, got {kind}")
        if not isinstance(self.options, AnalysisOptions):
            raise LewcError(f"options must be AnalysisOptions, got {type(self.options).__name__}")
        if not isinstance(self.context, RunContext):
            raise LewcError(f"context must be a RunContext, got {type(self.context).__name__}")
        o = self.options  # built by hand or by analysis_options: checked (and normalised) here either way
        object.__setattr__(self, "options", analysis_options(o.lams, o.n_test, o.bn_images, o.controls, o.align))

    def as_dict(self) -> dict:
        options = dataclasses.asdict(self.options)
        options |= {"lams": list(options["lams"]), "align": list(options["align"])}
        options.pop("device", None)  # set by the run (AnalysisOptions.on); the request's device is its context's
        return {"schema": SCHEMA, "endpoints": self.endpoints.as_dict(), "options": options,
                "context": self.context.as_dict()}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Request:
        """A request from its JSON; anything malformed is one ``LewcError`` line starting ``request:``."""
        try:
            return cls.from_dict(json.loads(text))
        except RecursionError:
            raise LewcError("request: nested too deeply") from None
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as err:
            raise LewcError(f"request: {first_line(err) or type(err).__name__}") from None

    @classmethod
    def from_dict(cls, values: Any) -> Request:
        table = _table(values, "the request", {"schema", "endpoints", "options", "context"}, {"endpoints"})
        if table.get("schema", SCHEMA) != SCHEMA:
            raise LewcError(f"schema {short(table['schema'])} is not {SCHEMA}")
        ends = _table(table["endpoints"], "endpoints", None, {"kind"})
        kind = ends.pop("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise LewcError(f"endpoints kind {short(kind)} is not one of {', '.join(KINDS)}")
        if kind == "configs":
            ends = _table(ends, "endpoints", {"configs", "no_train"}, {"configs"})
            configs = ends["configs"]
            if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
                raise LewcError("endpoints configs must be a list of two training configs (objects)")
            pair = tuple(TrainConfig.from_dict(c) for c in configs)
            endpoints: Endpoints = Configs(pair, ends.get("no_train", False))  # type: ignore[arg-type]
        else:
            names = {f.name for f in dataclasses.fields(KINDS[kind])}
            endpoints = KINDS[kind](**_table(ends, "endpoints", names, {"paths"}))
        fields = {f.name for f in dataclasses.fields(AnalysisOptions)} - {"device"}
        opts = _table(table.get("options", {}), "options", fields, set())
        options = analysis_options(**opts)
        names = {f.name for f in dataclasses.fields(RunContext)}
        context = RunContext(**_table(table.get("context", {}), "context", names, set()))
        return cls(endpoints, options, context)


def _table(values: Any, what: str, allowed: set[str] | None, required: set[str]) -> dict:
    if not isinstance(values, dict):
        raise LewcError(f"{what} must be a JSON object, got {type(values).__name__}")
    unknown = sorted(set(values) - allowed) if allowed is not None else []
    if unknown:
        raise LewcError(f"{what} has unknown key(s) {short(unknown)}; allowed: {', '.join(sorted(allowed or ()))}")
    missing = sorted(required - set(values))
    if missing:
        raise LewcError(f"{what} lacks {', '.join(missing)}")
    return dict(values)
