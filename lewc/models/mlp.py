"""Multi-layer perceptron with a width multiplier.

Hidden layers have ``base_width × width`` units; each is Linear(+norm)+ReLU and is one captured
layer, the head is the last one. ×1 is the field's MLP: 784 → 512 → 512 → 512 → 10, the network of
Git Re-Basin (Ainsworth et al., 2023, ``mnist_mlp_train.py``) and of the paper's co-author's
earlier code (3 × 512, no multiplier). The paper's "MLP ×16" is therefore read as 3 × 8,192 hidden
units; the embedded demo is MLP ×1 (3 × 512) on Fashion-MNIST.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lewc.models.common import CapturingModel, LayerRecord, LayerSpec, norm_1d
from lewc.models.registry import ModelFamily, register_family

DEFAULT_BASE_WIDTH = 512
DEFAULT_DEPTH = 3


class MLP(CapturingModel):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        width: int = 1,
        base_width: int = DEFAULT_BASE_WIDTH,
        depth: int = DEFAULT_DEPTH,
        norm: str = "none",
        bias: bool = True,
    ):
        super().__init__()
        hidden = base_width * width
        in_features = math.prod(in_shape)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(depth):
            # A Linear followed by BN gets no bias of its own: BN's shift replaces it.
            self.linears.append(nn.Linear(in_features if i == 0 else hidden, hidden, bias=bias and norm != "bn"))
            self.norms.append(norm_1d(norm, hidden, bias))
        self.head = nn.Linear(hidden, num_classes, bias=bias)

    def layers(self) -> list[LayerSpec]:
        specs = [LayerSpec(f"fc{i + 1}", lin, i + 1, "relu") for i, lin in enumerate(self.linears)]
        specs.append(LayerSpec("head", self.head, len(self.linears) + 1, "identity"))
        return specs

    def forward(self, x: torch.Tensor, capture: bool = False):
        h = x.flatten(1)
        records = []
        for linear, norm in zip(self.linears, self.norms, strict=True):
            pre = norm(linear(h))
            out = torch.relu(pre)
            records.append(LayerRecord(h, pre, out))
            h = out
        logits = self.head(h)
        records.append(LayerRecord(h, logits, logits))
        return (logits, records) if capture else logits


register_family(
    ModelFamily(
        name="mlp",
        builder=lambda *, in_shape, num_classes, width, base_width, depth, norm, bias: MLP(
            in_shape, num_classes, width, base_width, depth, norm, bias
        ),
        default_dataset="fashion-mnist",
        base_width=DEFAULT_BASE_WIDTH,
        default_norm="none",
        default_depth=DEFAULT_DEPTH,
        description="ReLU MLP, `depth` hidden layers of base_width × width units (×1 = 3 × 512)",
        display_name="MLP",
        units=lambda base, width, depth: f"{depth if depth is not None else DEFAULT_DEPTH}×{base * width}",
    )
)
