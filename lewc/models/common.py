"""What every lewc model shares: normalisation choices and the declared list of captured layers.

A model's forward has one extra keyword, ``capture``. With ``capture=True`` it returns
``(logits, records)`` where ``records[i] = LayerRecord(inp, pre, out)`` for the i-th declared layer: ``inp`` is the
input of the layer's weight operation, ``pre`` its pre-activation and ``out = activation(pre)`` its
output. Returning the tensors the forward computes anyway keeps capture functional
(``torch.func.functional_call(model, state, (x,), {"capture": True})``): no hooks, no module state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from lewc.core.errors import LewcError

NORMS = ("bn", "ln", "none")

# Elementwise activations a layer may declare; the conditions of the paper are stated for ReLU.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": torch.relu, "identity": lambda z: z}


class LayerRecord(NamedTuple):
    """What a capturing forward returns per declared layer (a tuple, so ``inp, pre, out = rec`` works)."""

    inp: torch.Tensor  # the input of the layer's weight operation
    pre: torch.Tensor  # its pre-activation
    out: torch.Tensor  # activation(pre), the layer's output


class LayerSpec(NamedTuple):
    """A captured layer: its name, the weight module applied to its input, its depth ℓ, activation.

    ℓ counts weight layers from the input along the longest path (docs/conventions.md), so the head
    of an MLP with three hidden layers has ℓ = 4 and a ResNet-20 block's output has ℓ = 1 + 2·block.
    ``weight_param`` names the parameter of ``weight_module`` that multiplies the layer's input (the
    matrix of reciprocal orthogonality); ``activation`` is a key of ``ACTIVATIONS``.
    """

    name: str
    weight_module: nn.Module
    depth: int
    activation: str = "relu"
    weight_param: str = "weight"

    @property
    def is_relu(self) -> bool:
        return self.activation == "relu"

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](pre)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise LewcError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def norm_1d(norm: str, features: int, bias: bool) -> nn.Module:
    """Normalisation after a Linear layer."""
    check_norm(norm)
    if norm == "bn":
        return nn.BatchNorm1d(features)
    if norm == "ln":
        return nn.LayerNorm(features, bias=bias)
    return nn.Identity()


def norm_2d(norm: str, channels: int, bias: bool) -> nn.Module:
    """Normalisation after a convolution; "ln" is GroupNorm with one group (LayerNorm over C,H,W)."""
    check_norm(norm)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "ln":
        return nn.GroupNorm(1, channels, affine=True)
    return nn.Identity()


class CapturingModel(nn.Module):
    """Base class: subclasses implement ``forward(x, capture=False)`` and ``layers()``."""

    def layers(self) -> list[LayerSpec]:  # pragma: no cover - abstract
        raise NotImplementedError

    def layer_depths(self) -> list[int]:
        return [spec.depth for spec in self.layers()]

    @property
    def total_depth(self) -> int:
        """L, the depth of the head: the exponent of the LEWC ensemble (1-λ)^L z_A + λ^L z_B."""
        return self.layers()[-1].depth
