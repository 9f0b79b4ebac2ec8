"""BatchNorm re-estimation for merged models (docs/conventions.md: reset, cumulative average, no gradients).

Interpolated weights change every layer's activation statistics, so the interpolated running
statistics are wrong for the merged model. As ``torch.optim.swa_utils.update_bn`` does, the running
mean and variance are reset and re-estimated as an equal-weight average over batches of training
images, in train mode, without gradients. The images and their augmentation draws are fixed once
(seeded) and reused for every λ, so λ is the only thing that changes.

No host syncs: torch's cumulative average (momentum ``None``) reads ``num_batches_tracked`` back to the
host (``1 / float(num_batches_tracked)``) in every BN layer for every batch — 4,620 syncs for a
ResNet-20 ×32 sweep. The k-th batch's factor is known on the host without reading anything, so
``reestimate`` sets ``momentum = 1 / k`` before batch k: the same update, bit for bit
(``running ← (1 - 1/k)·running + (1/k)·batch``), and no tensor is read.

The BN batch (``BN_BATCH``, 500 images) defines the statistic (train-mode BN normalises each batch
by its own statistics, and the running variance is the mean of the batches' unbiased variances), so it
is fixed here and independent of the evaluation's compute batch (``--batch-size-eval``).

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
BN_BATCH = 500  # images per re-estimation batch: part of the statistic's definition, not a compute knob


def is_bn(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def bn_templates(pair: Pair) -> torch.nn.Module:
    """A private copy of the pair's template in train mode with cumulative-average BN (momentum None)."""
    return bn_template(pair.template)


def bn_template(model: torch.nn.Module) -> torch.nn.Module:
    """A private copy of ``model`` in train mode with cumulative-average BN (momentum None)."""
    tmpl = copy.deepcopy(model).train()
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
    pair: Pair | None,
    state: State,
    images: torch.Tensor,
    ds: DeviceDataset,
    batch_size: int = BN_BATCH,
    template: torch.nn.Module | None = None,
) -> State:
    """Return ``state`` with every BN layer's running statistics re-estimated on ``images``: the
    equal-weight average over batches of ``batch_size`` images, without a host sync (module doc)."""
    tmpl = template if template is not None else bn_templates(pair)
    bn_modules = [m for m in tmpl.modules() if is_bn(m)]
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
    momenta = [m.momentum for m in bn_modules]
    try:
        for k, start in enumerate(range(0, usable, batch_size), start=1):
            for m in bn_modules:  # the cumulative average's k-th factor, known on the host
                m.momentum = 1.0 / k
            functional_call(tmpl, new, (ds.normalize(images[start : start + batch_size]),))
    finally:
        for m, momentum in zip(bn_modules, momenta, strict=True):
            m.momentum = momentum
    return new
