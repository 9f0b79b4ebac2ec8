"""Model registry: ``build(name, width, num_classes, in_shape, norm, bias, ...)``.

One file per family (torchvision style). Every model is a ``CapturingModel``: it declares its
captured layers with their depth ℓ and can return their inputs and pre-activations functionally.
"""

from __future__ import annotations

from collections.abc import Callable

from lewc.errors import LewcError
from lewc.models import mlp, resnet, vgg
from lewc.models.common import CapturingModel, LayerSpec, check_norm

__all__ = ["build", "MODELS", "DEFAULT_NORM", "default_base_width", "CapturingModel", "LayerSpec"]

DEFAULT_NORM = {"mlp": "none", "vgg11": "bn", "vgg16": "bn", "resnet20": "bn"}
_BASE_WIDTH = {
    "mlp": mlp.DEFAULT_BASE_WIDTH,
    "vgg11": vgg.DEFAULT_BASE_WIDTH,
    "vgg16": vgg.DEFAULT_BASE_WIDTH,
    "resnet20": resnet.DEFAULT_BASE_WIDTH,
}

MODELS: dict[str, Callable[..., CapturingModel]] = {
    "mlp": lambda in_shape, num_classes, width, base_width, depth, norm, bias: mlp.MLP(
        in_shape, num_classes, width, base_width, depth if depth is not None else mlp.DEFAULT_DEPTH, norm, bias
    ),
    "vgg11": lambda in_shape, num_classes, width, base_width, depth, norm, bias: vgg.VGG(
        "vgg11", in_shape, num_classes, width, base_width, norm, bias
    ),
    "vgg16": lambda in_shape, num_classes, width, base_width, depth, norm, bias: vgg.VGG(
        "vgg16", in_shape, num_classes, width, base_width, norm, bias
    ),
    "resnet20": lambda in_shape, num_classes, width, base_width, depth, norm, bias: resnet.ResNet20(
        in_shape, num_classes, width, base_width, norm, bias
    ),
}


def default_base_width(name: str) -> int:
    check_model_name(name)
    return _BASE_WIDTH[name]


def check_model_name(name: str) -> None:
    if name not in MODELS:
        raise LewcError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


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
    """Build a model; ``norm``/``base_width`` default per family (``DEFAULT_NORM``, module constants)."""
    check_model_name(name)
    if not isinstance(width, int) or width <= 0:
        raise LewcError(f"width must be a positive integer, got {width!r}")
    if base_width is not None and base_width <= 0:
        raise LewcError(f"base width must be positive, got {base_width}")
    if depth is not None and (name != "mlp" or depth <= 0):
        raise LewcError("depth applies to the mlp only and must be positive")
    norm = DEFAULT_NORM[name] if norm is None else norm
    check_norm(norm)
    return MODELS[name](tuple(in_shape), num_classes, width, base_width or _BASE_WIDTH[name], depth, norm, bias)
