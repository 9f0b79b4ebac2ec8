"""VGG-11 / VGG-16 for small images (Simonyan & Zisserman, 2015) with a width multiplier.

Base: the classic configuration's channels scaled by ``width`` (×1 = 64…512; ``base_width`` is the
first layer's 64). Head: one Linear layer on the 512 × width channels after a global average pool
(five 2×2 max-pools leave a 32×32 input at 1×1, so this is the flatten + single classifier of the
CIFAR VGGs of the LMC literature, e.g. REPAIR's VGG-11), not ImageNet VGG's three FC layers. Each
conv(+norm)+ReLU is a captured layer; max-pools use ``ceil_mode`` so 28×28 inputs work.
"""

from __future__ import annotations

import torch
from torch import nn

from lewc.models.common import CapturingModel, LayerRecord, LayerSpec, norm_2d
from lewc.models.registry import ModelFamily, register_family

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
DEFAULT_BASE_WIDTH = 64


class VGG(CapturingModel):
    def __init__(
        self,
        config: str,
        in_shape: tuple[int, ...],
        num_classes: int,
        width: int = 1,
        base_width: int = DEFAULT_BASE_WIDTH,
        norm: str = "bn",
        bias: bool = True,
    ):
        super().__init__()
        scale = base_width * width / 64
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.pool_after: list[bool] = []
        channels = in_shape[0]
        for item in CONFIGS[config]:
            if item == "M":
                self.pool_after[-1] = True
                continue
            out = max(1, round(item * scale))
            self.convs.append(nn.Conv2d(channels, out, 3, padding=1, bias=bias and norm == "none"))
            self.norms.append(norm_2d(norm, out, bias))
            self.pool_after.append(False)
            channels = out
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.head = nn.Linear(channels, num_classes, bias=bias)

    def layers(self) -> list[LayerSpec]:
        specs = [LayerSpec(f"conv{i + 1}", conv, i + 1, "relu") for i, conv in enumerate(self.convs)]
        specs.append(LayerSpec("head", self.head, len(self.convs) + 1, "identity"))
        return specs

    def forward(self, x: torch.Tensor, capture: bool = False):
        records = []
        h = x
        for conv, norm, pool in zip(self.convs, self.norms, self.pool_after, strict=True):
            pre = norm(conv(h))
            out = torch.relu(pre)
            records.append(LayerRecord(h, pre, out))
            h = out
            if pool:
                h = self.pool(h)
        feats = torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)
        logits = self.head(feats)
        records.append(LayerRecord(feats, logits, logits))
        return (logits, records) if capture else logits


for _config in CONFIGS:
    register_family(
        ModelFamily(
            name=_config,
            builder=lambda *, in_shape, num_classes, width, base_width, depth, norm, bias, _c=_config: VGG(
                _c, in_shape, num_classes, width, base_width, norm, bias
            ),
            default_dataset="cifar10",
            base_width=DEFAULT_BASE_WIDTH,
            default_norm="bn",
            convolutional=True,
            description=f"{_config.upper()} with 64…512 × width channels, global average pool, linear head",
            display_name=_config.upper().replace("VGG", "VGG-"),
            units=lambda base, width, depth: f"{base * width}…{8 * base * width} ch",
        )
    )
