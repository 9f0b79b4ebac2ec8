"""Datasets as whole tensors on the device, deterministic splits and on-device batch augmentation.

Following airbench's loader, a dataset is a handful of ``uint8`` tensors that live on the target
device; batches are index gathers, normalisation and augmentation are done on whole batches, and
there is no per-sample Python in the hot loop.

Splits (docs/conventions.md): ``train``; ``calib``, a fixed, seeded held-out part of the official training
set used only for temperature calibration (never trained on, the same for every model seed);
``test``, the official test set.

Lookup order for the files: ``--data-root``, then ``data/datasets`` (or ``$LEWC_DATA/datasets``),
then, for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``, then torchvision's
download into ``data/datasets``.

The dataset registry and the files' lookup are ``lewc.training.datasets``, the file formats
``lewc.training.formats``; this module holds the device-resident dataset and keeps every public name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch

from lewc.core.errors import LewcError
from lewc.training.datasets import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    SPLIT_SEED,
    SYNTHETIC_INFO,
    DatasetInfo,
    DatasetSpec,
    check_arrays,
    dataset_files,
    dataset_identity,
    dataset_info,
    dataset_names,
    get_dataset,
    load_arrays,
    register_dataset,
    synthetic_arrays,
    unregister_dataset,
)
from lewc.training.formats import Arrays, read_cifar_batch, read_idx

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "SPLIT_SEED",
    "SYNTHETIC_INFO",
    "Arrays",
    "DatasetInfo",
    "DatasetSpec",
    "DeviceDataset",
    "FloatDeviceDataset",
    "Split",
    "calib_indices",
    "check_arrays",
    "dataset_files",
    "dataset_identity",
    "dataset_info",
    "dataset_names",
    "get_dataset",
    "load_arrays",
    "load_dataset",
    "random_crop_flip",
    "read_cifar_batch",
    "read_idx",
    "register_dataset",
    "synthetic_arrays",
    "unregister_dataset",
]


@dataclass
class Split:
    """Images (uint8, N×C×H×W) and labels (int64) of one split, on the device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int | None) -> Split:
        """The first ``n`` examples (all when ``n`` is None)."""
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass
class DeviceDataset:
    """A dataset held as tensors on one device, with its normalisation and augmentation."""

    info: DatasetInfo
    train: Split
    calib: Split
    test: Split
    device: torch.device
    identity: str = ""  # dataset_identity: content hash of the files and splits (names results folders)

    def split(self, name: str) -> Split:
        if name not in ("train", "calib", "test"):
            raise LewcError(f"unknown split {name!r}")
        return getattr(self, name)

    def normalize(self, x_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 images → normalised floats, on the images' device."""
        mean = torch.tensor(self.info.mean, device=x_uint8.device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.info.std, device=x_uint8.device, dtype=dtype).view(1, -1, 1, 1)
        return (x_uint8.to(dtype) / 255.0 - mean) / std

    def augment(self, x_uint8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """CIFAR augmentation on a whole batch: 4-pixel zero pad, random 32×32 crop, random h-flip.

        Draws come from ``generator`` (on the batch's device), so a seeded generator gives the same
        augmentation every run. MNIST-likes are returned unchanged.
        """
        if not self.info.augment:
            return x_uint8
        return random_crop_flip(x_uint8, generator, pad=4)

    def batches(self, split: str, batch_size: int, n: int | None = None):
        """Yield (normalised x, y) for a split in order, without augmentation."""
        s = self.split(split).head(n)
        for start in range(0, len(s), batch_size):
            yield self.normalize(s.x[start : start + batch_size]), s.y[start : start + batch_size]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Batched pad-and-crop plus horizontal flip via one gather, no Python loop over images."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    flip = torch.rand(n, device=dev, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]  # n×h
    cols = torch.arange(w, device=dev)[None, :].expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + ox[:, None]  # n×w
    idx_n = torch.arange(n, device=dev)[:, None, None, None]
    idx_c = torch.arange(c, device=dev)[None, :, None, None]
    return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def calib_indices(n_train_total: int, n_calib: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_idx, calib_idx) partition of the official training set."""
    if not 0 <= n_calib < n_train_total:
        raise LewcError(f"calibration split size {n_calib} must be in [0, {n_train_total})")
    perm = np.random.default_rng(seed).permutation(n_train_total)
    return np.sort(perm[n_calib:]), np.sort(perm[:n_calib])


def load_dataset(
    name: str,
    device: str | torch.device = "cpu",
    data_root: str | os.PathLike | None = None,
    n_calib: int | None = None,
    download: bool = True,
    inputs: str = "standardized",
) -> DeviceDataset:
    """Load a dataset's splits onto ``device`` as uint8 tensors (see module docstring for lookup).

    ``inputs="raw"`` feeds pixels/255 unstandardised (mean 0, std 1): a training-config choice that
    the analysis of its checkpoints must repeat."""
    spec = get_dataset(name)
    info = spec.info
    if inputs == "raw":
        info = dataclasses.replace(info, mean=(0.0,) * len(info.mean), std=(1.0,) * len(info.std))
    elif inputs != "standardized":
        raise LewcError(f"unknown inputs {inputs!r}; choose standardized or raw")
    train_x, train_y, test_x, test_y = load_arrays(name, data_root, download)
    if n_calib is None:
        n_calib = spec.n_calib
    tr, ca = calib_indices(len(train_y), n_calib)
    dev = torch.device(device)

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.array(x, copy=True)).to(dev), torch.from_numpy(np.array(y, copy=True)).to(dev))

    return DeviceDataset(
        info,
        to_split(train_x[tr], train_y[tr]),
        to_split(train_x[ca], train_y[ca]),
        to_split(test_x, test_y),
        dev,
        dataset_identity(name, data_root, n_calib),
    )


@dataclass
class FloatDeviceDataset(DeviceDataset):
    """A dataset given as already-prepared float inputs (``lewc.verify_pair``): used exactly as given.

    ``normalize`` only casts (no mean/std of lewc's own), ``augment`` is the identity, so BatchNorm
    re-estimation, calibration and the test pass all see the caller's tensors.
    """

    def normalize(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return x.to(dtype)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x
