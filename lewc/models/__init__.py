"""Model families: ``build(name, width, num_classes, in_shape, norm, bias, ...)``.

One file per family (torchvision style); each registers a ``ModelFamily`` spec (``registry.py``).
Every model is a ``CapturingModel``: it declares its captured layers with their depth ℓ and
activation and can return their inputs and pre-activations functionally.
"""

from __future__ import annotations

from lewc.models import mlp, resnet, vgg  # noqa: F401  (importing a family registers it)
from lewc.models.common import ACTIVATIONS, CapturingModel, LayerRecord, LayerSpec
from lewc.models.registry import ModelFamily, build, family_names, get_family, register_family, width_label

__all__ = [
    "ACTIVATIONS",
    "CapturingModel",
    "LayerRecord",
    "LayerSpec",
    "ModelFamily",
    "build",
    "family_names",
    "get_family",
    "register_family",
    "width_label",
]
