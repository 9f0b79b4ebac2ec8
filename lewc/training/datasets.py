"""The dataset registry: each dataset's facts (``DatasetInfo``) and how to find, read, fetch or generate its
arrays (``DatasetSpec``), the built-in ones registered at the end, and the content hash of exactly what an
analysis reads (``dataset_identity``).

Lookup order for the files: ``--data-root``, then ``data/datasets`` (or ``$LEWC_DATA/datasets``),
then, for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``, then torchvision's
download into ``data/datasets``. The file formats are ``lewc.training.formats``; the device-resident
dataset is ``lewc.training.data``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lewc.core.conventions import N_CALIB, N_CALIB_SYNTHETIC
from lewc.core.errors import LewcError
from lewc.core.io import data_home, sha256_file
from lewc.core.registry import Registry
from lewc.training.formats import (
    Arrays,
    cifar_file_list,
    cifar_finder,
    idx_file_list,
    idx_finder,
    read_cifar10,
    read_cifar100,
    read_idx_folder,
    torchvision_downloader,
)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 20251008  # arXiv 2510.08023; fixed so every model seed shares one calib split


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: shape, classes, normalisation constants, augmentation."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # CIFAR-style pad-4 crop + horizontal flip
    how_to_get: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything lewc knows about one dataset, in one place: its facts, how to find, read and fetch
    its files, and the size of its calibration split.

    A dataset is either read from files (``find`` returns the folder holding them under one of the
    search roots, ``files`` lists what is hashed into its identity, ``read`` parses them) or
    ``generate``d in memory (no files; ``identity_tag`` names the generator in the identity hash).
    ``download(root)`` fetches the files into ``root`` (``None``: no download). ``extra_roots`` are
    searched after ``--data-root`` and ``data/datasets``.
    """

    info: DatasetInfo
    n_calib: int = N_CALIB
    find: Callable[[list[Path]], Path | None] | None = None
    files: Callable[[Path], list[Path]] | None = None
    read: Callable[[Path], Arrays] | None = None
    download: Callable[[Path], None] | None = None
    generate: Callable[[], Arrays] | None = None
    identity_tag: str = ""
    extra_roots: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return self.info.name


def _check_dataset(spec: DatasetSpec) -> None:
    if (spec.generate is None) == (spec.find is None or spec.read is None or spec.files is None):
        raise ValueError(f"dataset {spec.name!r} needs either generate or all of find, files and read")


DATASETS: Registry[DatasetSpec] = Registry("dataset", check=_check_dataset)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry (a name may be registered once)."""
    return DATASETS.register(spec)


def unregister_dataset(name: str) -> None:
    """Remove a dataset (tests that register toy datasets clean up with this)."""
    DATASETS.unregister(name)


def dataset_names() -> list[str]:
    return DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    """The spec of ``name``; an unknown name is a one-line error listing the known ones."""
    return DATASETS.get(name)


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset's facts by name or fail with the list of known ones."""
    return get_dataset(name).info


def _download(name: str, root: Path) -> None:
    """Fetch ``name``'s files into ``root`` with its spec's downloader (tests replace this to go offline)."""
    download = get_dataset(name).download
    if download is None:
        raise LewcError(f"dataset {name} has no download")
    download(root)


def dataset_files(name: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The files ``load_arrays`` reads for ``name`` (empty for generated ones; ``LewcError`` if not found)."""
    spec = get_dataset(name)
    if spec.generate is not None:
        return []
    roots = _roots(name, data_root)
    folder = spec.find(roots)
    if folder is None:
        raise LewcError(f"dataset {name} not found (looked in {', '.join(map(str, roots))})")
    return spec.files(folder)


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def dataset_identity(name: str, data_root: str | os.PathLike | None = None, n_calib: int | None = None) -> str:
    """A short content hash of exactly what an analysis reads: the dataset files' bytes and the splits.

    Content, not names or times: a replaced file changes it, a copy elsewhere does not. Each file is
    hashed once per process and state (path, size, mtime), so a sweep pays it once — about 0.1 s for
    Fashion-MNIST's 30 MB. The calibration split (size and seed) is part of it, as is the generator
    of the synthetic set.
    """
    spec = get_dataset(name)
    digest = hashlib.sha256(f"{name}/calib={n_calib}/split_seed={SPLIT_SEED}".encode())
    if spec.identity_tag:
        digest.update(spec.identity_tag.encode())
    for path in dataset_files(name, data_root):
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FILE_DIGESTS:
            _FILE_DIGESTS[key] = sha256_file(path)
        digest.update(f"{path.name}:{_FILE_DIGESTS[key]};".encode())
    return digest.hexdigest()[:12]


def _roots(name: str, data_root: str | os.PathLike | None) -> list[Path]:
    roots = [Path(data_root)] if data_root else []
    roots.append(data_home() / "datasets")
    roots.extend(get_dataset(name).extra_roots)
    return roots


def check_arrays(info: DatasetInfo, train_x, train_y, test_x, test_y, where: str) -> None:
    """Refuse files that parse but cannot be a dataset: a wrong image shape, image/label counts
    that disagree, an empty split, labels outside ``[0, num_classes)``.

    Each of these would otherwise surface deep inside training or analysis as a shape error or an
    out-of-range gather — or, worse, as a silently wrong accuracy.
    """
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x.ndim != 4 or tuple(x.shape[1:]) != info.in_shape:
            shape = tuple(x.shape[1:])
            raise LewcError(f"{info.name} ({where}): {split} images have shape {shape}, expected {info.in_shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise LewcError(f"{info.name} ({where}): {len(x)} {split} images but {y.shape[0] if y.ndim else 0} labels")
        if len(y) == 0:
            raise LewcError(f"{info.name} ({where}): the {split} split is empty")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= info.num_classes:
            raise LewcError(
                f"{info.name} ({where}): {split} labels span [{lo}, {hi}], outside [0, {info.num_classes - 1}]"
            )


def load_arrays(name: str, data_root: str | os.PathLike | None = None, download: bool = True) -> Arrays:
    """Return (train_x, train_y, test_x, test_y) as numpy arrays, images (N, C, H, W) uint8, checked."""
    spec = get_dataset(name)
    if spec.generate is not None:
        arrays, where = spec.generate(), "generated"
    else:
        arrays, where = _locate_arrays(spec, data_root, download)
    check_arrays(spec.info, *arrays, where=where)
    return arrays


def _locate_arrays(spec: DatasetSpec, data_root, download: bool) -> tuple[Arrays, str]:
    """Find (or download) the files and parse them; returns the arrays and the folder they came from."""
    name, info = spec.name, spec.info
    roots = _roots(name, data_root)
    for attempt in range(2):
        folder = spec.find(roots)
        if folder is not None:
            return spec.read(folder), str(folder)
        if attempt == 0 and download and spec.download is not None:
            try:
                _download(name, data_home() / "datasets")
            except Exception as err:  # noqa: BLE001 - any network/IO failure becomes one line
                looked = ", ".join(str(r) for r in roots)
                raise LewcError(
                    f"dataset {name} not found (looked in {looked}) and download failed "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                    f"to get it: {info.how_to_get}"
                ) from None
        else:
            break
    looked = ", ".join(str(r) for r in roots)
    raise LewcError(f"dataset {name} not found (looked in {looked}); to get it: {info.how_to_get}")


def synthetic_arrays(n_train: int = 3000, n_test: int = 1000, seed: int = 0):
    """A small, seeded image dataset for tests: class templates near mid-grey plus strong noise, uint8.

    Template contrast (σ 12) against pixel noise (σ 60) makes it learnable but not separable (an MLP
    ×2 reaches ~94% after 3 epochs), so calibration has a finite optimum and barriers are non-trivial.
    """
    info = SYNTHETIC_INFO
    gen = np.random.default_rng(seed)
    templates = 128 + gen.normal(0, 12, size=(info.num_classes, *info.in_shape))

    def draw(n: int):
        y = gen.integers(0, info.num_classes, size=n)
        x = templates[y] + gen.normal(0, 60, size=(n, *info.in_shape))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return train_x, train_y, test_x, test_y


# --------------------------------------------------------------------------- the registered datasets

SYNTHETIC_INFO = DatasetInfo(
    "synthetic",
    (3, 16, 16),
    10,
    (0.5,),
    (0.25,),
    False,  # random-pixel class templates are not translation invariant: no crop/flip
    "it is generated, nothing to get",
)


def _mnist_like(name: str, torchvision_dir: str, info: DatasetInfo, extra_roots: tuple[Path, ...] = ()) -> DatasetSpec:
    return DatasetSpec(
        info,
        find=idx_finder(name, torchvision_dir),
        files=idx_file_list,
        read=read_idx_folder,
        download=torchvision_downloader(torchvision_dir, None, torchvision_dir),
        extra_roots=extra_roots,
    )


def _cifar(name: str, cls_name: str, folder_name: str, read, info: DatasetInfo) -> DatasetSpec:
    return DatasetSpec(
        info,
        find=cifar_finder(name, folder_name),
        files=cifar_file_list,
        read=read,
        download=torchvision_downloader(cls_name, name, None),
    )


register_dataset(
    _mnist_like(
        "fashion-mnist",
        "FashionMNIST",
        DatasetInfo(
            "fashion-mnist",
            (1, 28, 28),
            10,
            (0.2860,),
            (0.3530,),
            False,
            "apt-get install dataset-fashion-mnist, or let torchvision download it (needs internet), "
            "or put the four IDX .gz files in data/datasets/fashion-mnist/",
        ),
        extra_roots=(DEBIAN_FASHION_MNIST,),
    )
)
register_dataset(
    _mnist_like(
        "mnist",
        "MNIST",
        DatasetInfo(
            "mnist",
            (1, 28, 28),
            10,
            (0.1307,),
            (0.3081,),
            False,
            "let torchvision download it (needs internet) or put the four IDX files in data/datasets/mnist/",
        ),
    )
)
register_dataset(
    _cifar(
        "cifar10",
        "CIFAR10",
        "cifar-10-batches-py",
        read_cifar10,
        DatasetInfo(
            "cifar10",
            (3, 32, 32),
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            True,
            "let torchvision download it (needs internet) or extract cifar-10-python.tar.gz into data/datasets/",
        ),
    )
)
register_dataset(
    _cifar(
        "cifar100",
        "CIFAR100",
        "cifar-100-python",
        read_cifar100,
        DatasetInfo(
            "cifar100",
            (3, 32, 32),
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            True,
            "let torchvision download it (needs internet) or extract cifar-100-python.tar.gz into data/datasets/",
        ),
    )
)
register_dataset(
    DatasetSpec(
        SYNTHETIC_INFO,
        n_calib=N_CALIB_SYNTHETIC,
        generate=synthetic_arrays,
        identity_tag="synthetic_arrays(3000, 1000, seed 0)/v1",
    )
)
