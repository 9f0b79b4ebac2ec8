"""CIFAR ResNet-20 (He et al., 2016, §4.2) with a width multiplier.

Three stages of three BasicBlocks with 16/32/64 × ``width`` channels, parameter-free identity
shortcuts that subsample and zero-pad channels at the two downsampling blocks ("option A"). ×1 with
BN has the classic 0.27M parameters (269,722). Captured layers: the stem, each block's output and
the head; a block's depth ℓ counts both of its convolutions (the longest path), so block b (1-based)
sits at ℓ = 1 + 2b and the head at ℓ = 20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lewc.models.common import CapturingModel, LayerSpec, norm_2d
from lewc.models.registry import ModelFamily, register_family

DEFAULT_BASE_WIDTH = 16


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, bias: bool):
        super().__init__()
        conv_bias = bias and norm == "none"
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=conv_bias)
        self.norm1 = norm_2d(norm, planes, bias)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=conv_bias)
        self.norm2 = norm_2d(norm, planes, bias)
        self.stride = stride
        self.pad_channels = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity, or subsample by 2 and zero-pad the new channels on both sides."""
        if self.stride == 1 and self.pad_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        lo = self.pad_channels // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.pad_channels - lo))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's pre-activation (before the final ReLU)."""
        h = torch.relu(self.norm1(self.conv1(x)))
        return self.norm2(self.conv2(h)) + self.shortcut(x)


class ResNet20(CapturingModel):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        width: int = 1,
        base_width: int = DEFAULT_BASE_WIDTH,
        norm: str = "bn",
        bias: bool = True,
        blocks_per_stage: int = 3,
    ):
        super().__init__()
        planes = [base_width * width * m for m in (1, 2, 4)]
        self.stem = nn.Conv2d(in_shape[0], planes[0], 3, padding=1, bias=bias and norm == "none")
        self.stem_norm = norm_2d(norm, planes[0], bias)
        blocks = []
        in_planes = planes[0]
        for stage, p in enumerate(planes):
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, p, 2 if stage > 0 and b == 0 else 1, norm, bias))
                in_planes = p
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(in_planes, num_classes, bias=bias)

    def layers(self) -> list[LayerSpec]:
        specs = [LayerSpec("stem", self.stem, 1, "relu")]
        specs += [LayerSpec(f"block{i + 1}", blk.conv1, 1 + 2 * (i + 1), "relu") for i, blk in enumerate(self.blocks)]
        specs.append(LayerSpec("head", self.head, 2 + 2 * len(self.blocks), "identity"))
        return specs

    def forward(self, x: torch.Tensor, capture: bool = False):
        records = []
        pre = self.stem_norm(self.stem(x))
        h = torch.relu(pre)
        records.append((x, pre, h))
        for blk in self.blocks:
            pre = blk(h)
            out = torch.relu(pre)
            records.append((h, pre, out))
            h = out
        feats = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        logits = self.head(feats)
        records.append((feats, logits, logits))
        return (logits, records) if capture else logits


register_family(
    ModelFamily(
        name="resnet20",
        builder=lambda in_shape, num_classes, width, base_width, depth, norm, bias: ResNet20(
            in_shape, num_classes, width, base_width, norm, bias
        ),
        default_dataset="cifar10",
        base_width=DEFAULT_BASE_WIDTH,
        default_norm="bn",
        convolutional=True,
        description="CIFAR ResNet-20, 16/32/64 × width channels, option-A shortcuts",
    )
)
