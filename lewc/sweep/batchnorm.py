"""BatchNorm re-estimation for merged models (docs/conventions.md: reset, cumulative average, no gradients).

Interpolated weights change every layer's activation statistics, so the interpolated running
statistics are wrong for the merged model. As ``torch.optim.swa_utils.update_bn`` does, the running
mean and variance are reset and re-estimated as an equal-weight average over batches of training
images (BN momentum ``None``), in train mode, without gradients. The images and their augmentation
draws are fixed once (seeded) and reused for every λ, so λ is the only thing that changes.

Default budget: 10,000 images (``DEFAULT_BN_IMAGES``); ``benchmarks/bench_bn.py`` compares it with a
full training epoch.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call

from lewc.core.conventions import BN_IMAGES
from lewc.sweep.merge import Pair, State
from lewc.training.data import DeviceDataset

DEFAULT_BN_IMAGES = BN_IMAGES  # lewc.core.conventions
BN_SEED = 1234


def is_bn(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def bn_templates(pair: Pair) -> torch.nn.Module:
    """A private copy of the template in train mode with cumulative-average BN (momentum None)."""
    tmpl = copy.deepcopy(pair.template).train()
    for m in tmpl.modules():
        if is_bn(m):
            m.momentum = None
    return tmpl


def reestimation_images(ds: DeviceDataset, n_images: int = DEFAULT_BN_IMAGES, seed: int = BN_SEED) -> torch.Tensor:
    """A fixed, seeded subset of training images with fixed augmentation draws (uint8, on device).

    Drawn with a CPU generator on the CPU whatever the device (a CUDA generator draws other numbers),
    so a GPU run re-estimates on the same images with the same crops and flips as a CPU run.
    """
    gen = torch.Generator().manual_seed(seed)
    n = min(n_images, len(ds.train))
    idx = torch.randperm(len(ds.train), generator=gen)[:n]
    return ds.augment(ds.train.x[idx.to(ds.train.x.device)].cpu(), gen).to(ds.device)


@torch.no_grad()
def reestimate(
    pair: Pair,
    state: State,
    images: torch.Tensor,
    ds: DeviceDataset,
    batch_size: int = 500,
    template: torch.nn.Module | None = None,
) -> State:
    """Return ``state`` with every BN layer's running statistics re-estimated on ``images``."""
    tmpl = template if template is not None else bn_templates(pair)
    bn_names = [name for name, m in tmpl.named_modules() if is_bn(m)]
    if not bn_names:
        return dict(state)
    new = dict(state)
    for name in bn_names:
        new[f"{name}.running_mean"] = torch.zeros_like(state[f"{name}.running_mean"])
        new[f"{name}.running_var"] = torch.ones_like(state[f"{name}.running_var"])
        new[f"{name}.num_batches_tracked"] = torch.zeros_like(state[f"{name}.num_batches_tracked"])
    # Equal-size batches make the cumulative average the exact mean of batch statistics.
    usable = (len(images) // batch_size) * batch_size or len(images)
    for start in range(0, usable, batch_size):
        functional_call(tmpl, new, (ds.normalize(images[start : start + batch_size]),))
    return new
