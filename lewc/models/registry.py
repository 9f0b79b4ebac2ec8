"""One spec per model family, registered the way torchvision registers its models.

A family spec is everything the rest of lewc needs to know about a family: how to build it, its
default dataset and normalisation, its base width, whether it takes a depth, and whether its
inputs are images kept as feature maps (channels_last on CUDA). Analysis code asks the spec (and the
model's own ``layers()``) instead of testing names, so a new family is one file that calls
``register_family`` (with a ``ModelFamily``, or as a decorator on its builder).

A builder takes keyword-only arguments, ``builder(*, in_shape, num_classes, width, base_width, depth,
norm, bias)``, and ``build`` calls it by name: a builder with positional parameters is refused when it
is registered, so ``width`` and ``base_width`` can never be swapped silently.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from lewc.core.errors import LewcError
from lewc.core.limits import LIMITS, check_limit
from lewc.core.registry import Registry
from lewc.models.common import CapturingModel, check_norm

# builder(*, in_shape, num_classes, width, base_width, depth, norm, bias) -> model (keyword-only)
BUILDER_ARGS = ("in_shape", "num_classes", "width", "base_width", "depth", "norm", "bias")

# Range limits (lewc.core.limits, the one table TrainConfig and the checkpoint sidecar also read).
MAX_WIDTH = LIMITS["width"][1]
MAX_BASE_WIDTH = LIMITS["base_width"][1]
MAX_DEPTH = LIMITS["depth"][1]
Builder = Callable[..., CapturingModel]  # keyword-only: BUILDER_ARGS


@dataclass(frozen=True)
class ModelFamily:
    """A registered model family.

    ``default_depth`` is ``None`` for families whose depth is fixed by their name (vgg11, resnet20);
    ``convolutional`` selects channels_last on CUDA; ``default_dataset`` is the dataset a paper
    experiment uses for this family (the recipe's epochs and learning rate follow the dataset).
    """

    name: str
    builder: Builder
    default_dataset: str
    base_width: int
    default_norm: str = "none"
    default_depth: int | None = None
    convolutional: bool = False
    description: str = ""
    # (base_width, width, depth) -> the widths in units, e.g. "3×8192" or "64/128/256 ch"
    units: Callable[[int, int, int | None], str] | None = None
    display_name: str = ""


def check_builder(builder: Callable, name: str) -> None:
    """A builder takes exactly ``BUILDER_ARGS``, keyword-only (``def build(*, in_shape, ..., bias)``)."""
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        raise ValueError(f"model family {name!r}: its builder has no inspectable signature") from None
    positional = [p.name for p in params if p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD)]
    if positional:
        raise ValueError(
            f"model family {name!r}: the builder's parameters {positional} must be keyword-only "
            f"(def build(*, {', '.join(BUILDER_ARGS)}))"
        )
    named = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    missing = [] if takes_any else [a for a in BUILDER_ARGS if a not in named]
    unknown = [
        p.name for p in params if p.name not in BUILDER_ARGS and p.default is p.empty and p.kind is p.KEYWORD_ONLY
    ]
    if missing or unknown:
        raise ValueError(
            f"model family {name!r}: the builder must take {', '.join(BUILDER_ARGS)} (lacks {missing}) and "
            f"require nothing else (requires {unknown})"
        )


def _check_family(family: ModelFamily) -> None:
    check_norm(family.default_norm)
    check_builder(family.builder, family.name)


FAMILIES: Registry[ModelFamily] = Registry(
    "model", check=_check_family, make=lambda builder, **fields: ModelFamily(builder=builder, **fields)
)


def register_family(family: ModelFamily | None = None, /, **fields) -> ModelFamily | Callable:
    """Add a family (a name may be registered once); ``@register_family(name=..., ...)`` on a builder
    registers ``ModelFamily(builder=that function, ...)``."""
    return FAMILIES.register(family, **fields)


def unregister_family(name: str) -> None:
    """Remove a family (tests that register toy families clean up with this)."""
    FAMILIES.unregister(name)


def family_names() -> list[str]:
    return FAMILIES.names()


def get_family(name: str) -> ModelFamily:
    """The spec of ``name``; an unknown name is a one-line error listing the known ones."""
    return FAMILIES.get(name)


def width_label(name: str, width: int, base_width: int | None = None, depth: int | None = None) -> str:
    """A width that says what it is in units, e.g. ``MLP ×16 (3×8192)`` or ``ResNet-20 ×32 (512/1024/2048 ch)``."""
    family = get_family(name)
    base = family.base_width if base_width is None else base_width
    depth = family.default_depth if depth is None else depth
    label = f"{family.display_name or name} ×{width}"
    return f"{label} ({family.units(base, width, depth)})" if family.units else label


def build(
    name: str,
    width: int,
    num_classes: int,
    in_shape: tuple[int, ...],
    norm: str | None = None,
    bias: bool = True,
    base_width: int | None = None,
    depth: int | None = None,
) -> CapturingModel:
    """Build a model of family ``name``; ``None`` arguments take the family's defaults."""
    family = get_family(name)
    check_limit(width, "width")
    if base_width is not None:
        check_limit(base_width, "base_width")
    if depth is not None:
        if family.default_depth is None:
            raise LewcError(
                f"{name} has a fixed depth, but a depth of {depth!r} was given (only families with a "
                "depth knob take one)"
            )
        check_limit(depth, "depth")
    norm = family.default_norm if norm is None else norm
    check_norm(norm)
    depth = family.default_depth if depth is None else depth
    return family.builder(
        in_shape=tuple(in_shape),
        num_classes=num_classes,
        width=width,
        base_width=base_width or family.base_width,
        depth=depth,
        norm=norm,
        bias=bias,
    )
