"""A model family defined in one file, as a user would add one: its model and its registered spec."""

from __future__ import annotations

import math

import torch
from torch import nn

from lewc.models import CapturingModel, LayerRecord, LayerSpec, get_family, register_family


class Toy(CapturingModel):
    """Two hidden layers with different widths (base and 2·base units) and a head."""

    def __init__(self, in_shape, num_classes, width, base_width, bias):
        super().__init__()
        self.inp = nn.Linear(math.prod(in_shape), base_width * width, bias=bias)
        self.mid = nn.Linear(base_width * width, 2 * base_width * width, bias=bias)
        self.out = nn.Linear(2 * base_width * width, num_classes, bias=bias)

    def layers(self) -> list[LayerSpec]:
        return [LayerSpec("inp", self.inp, 1), LayerSpec("mid", self.mid, 2), LayerSpec("out", self.out, 3, "identity")]

    def forward(self, x: torch.Tensor, capture: bool = False):
        h0 = x.flatten(1)
        z1 = self.inp(h0)
        h1 = torch.relu(z1)
        z2 = self.mid(h1)
        h2 = torch.relu(z2)
        logits = self.out(h2)
        records = [LayerRecord(h0, z1, h1), LayerRecord(h1, z2, h2), LayerRecord(h2, logits, logits)]
        return (logits, records) if capture else logits


@register_family(name="toy", default_dataset="synthetic", base_width=8)
def build_toy(*, in_shape, num_classes, width, base_width, depth, norm, bias) -> Toy:
    """The family's builder: keyword-only, so ``width`` and ``base_width`` cannot be swapped silently."""
    return Toy(in_shape, num_classes, width, base_width, bias)


TOY = get_family("toy")
