"""CIFAR ResNet-20 (He et al., 2016, §4.2) with a width multiplier.

Three stages of three BasicBlocks with 16/32/64 × ``width`` channels. The two downsampling blocks
have a **projection shortcut** by default: a 1×1 convolution of stride 2 followed by the block's norm
(He et al.'s option B; the ResNet-20 of REPAIR, Jordan et al. 2023, and of the paper's co-author's
earlier code, conv + BatchNorm). Git Re-Basin uses a 3×3 conv + LayerNorm instead; lewc takes the
1×1 form because it is He et al.'s own and the cheaper one, and because with a projection every
stage has its own channel permutation. ``resnet20a`` keeps the parameter-free option A (subsample
and zero-pad channels), which ties the permutations of consecutive stages and makes the positive
control impossible. ×1 has 21 convolutions (19 + 2 projections); with BN option A has the classic
0.27M parameters (269,722). Captured layers: the stem, each block's output and the head; a block's
depth ℓ counts both of its convolutions (the longest path; the projection is one), so block b
(1-based) sits at ℓ = 1 + 2b and the head at ℓ = 20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lewc.models.common import CapturingModel, LayerRecord, LayerSpec, norm_2d
from lewc.models.registry import ModelFamily, register_family

DEFAULT_BASE_WIDTH = 16


SHORTCUTS = ("projection", "A")


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, bias: bool, shortcut: str = "projection"):
        super().__init__()
        conv_bias = bias and norm == "none"
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=conv_bias)
        self.norm1 = norm_2d(norm, planes, bias)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=conv_bias)
        self.norm2 = norm_2d(norm, planes, bias)
        self.stride = stride
        self.pad_channels = planes - in_planes
        self.projection = None
        if shortcut == "projection" and (stride != 1 or in_planes != planes):
            self.projection = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=conv_bias), norm_2d(norm, planes, bias)
            )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity, the projection (1×1 conv + norm), or option A: subsample by 2 and zero-pad channels."""
        if self.stride == 1 and self.pad_channels == 0:
            return x
        if self.projection is not None:
            return self.projection(x)
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
        shortcut: str = "projection",
    ):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        planes = [base_width * width * m for m in (1, 2, 4)]
        self.stem = nn.Conv2d(in_shape[0], planes[0], 3, padding=1, bias=bias and norm == "none")
        self.stem_norm = norm_2d(norm, planes[0], bias)
        blocks = []
        in_planes = planes[0]
        for stage, p in enumerate(planes):
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, p, 2 if stage > 0 and b == 0 else 1, norm, bias, shortcut))
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
        records.append(LayerRecord(x, pre, h))
        for blk in self.blocks:
            pre = blk(h)
            out = torch.relu(pre)
            records.append(LayerRecord(h, pre, out))
            h = out
        feats = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        logits = self.head(feats)
        records.append(LayerRecord(feats, logits, logits))
        return (logits, records) if capture else logits


for _name, _shortcut, _what in (
    ("resnet20", "projection", "projection shortcuts (1×1 conv + norm)"),
    ("resnet20a", "A", "option-A shortcuts (subsample + zero-pad)"),
):
    register_family(
        ModelFamily(
            name=_name,
            builder=lambda *, in_shape, num_classes, width, base_width, depth, norm, bias, _s=_shortcut: ResNet20(
                in_shape, num_classes, width, base_width, norm, bias, shortcut=_s
            ),
            default_dataset="cifar10",
            base_width=DEFAULT_BASE_WIDTH,
            default_norm="bn",
            convolutional=True,
            description=f"CIFAR ResNet-20, 16/32/64 × width channels, {_what}",
            display_name="ResNet-20" if _shortcut == "projection" else "ResNet-20 (option A)",
            units=lambda base, width, depth: f"{base * width}/{2 * base * width}/{4 * base * width} ch",
        )
    )
