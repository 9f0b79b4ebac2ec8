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
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lewc.core.conventions import N_CALIB, N_CALIB_SYNTHETIC
from lewc.core.errors import LewcError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_CALIB_SIZE = N_CALIB  # lewc.core.conventions
SPLIT_SEED = 20251008  # arXiv 2510.08023; fixed so every model seed shares one calib split


def data_home() -> Path:
    """Root of datasets, checkpoints and results: ``$LEWC_DATA`` or ``./data``."""
    return Path(os.environ.get("LEWC_DATA", "data"))


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


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        (1, 28, 28),
        10,
        (0.2860,),
        (0.3530,),
        False,
        "apt-get install dataset-fashion-mnist, or let torchvision download it (needs internet), "
        "or put the four IDX .gz files in data/datasets/fashion-mnist/",
    ),
    "mnist": DatasetInfo(
        "mnist",
        (1, 28, 28),
        10,
        (0.1307,),
        (0.3081,),
        False,
        "let torchvision download it (needs internet) or put the four IDX files in data/datasets/mnist/",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        (3, 32, 32),
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        True,
        "let torchvision download it (needs internet) or extract cifar-10-python.tar.gz into data/datasets/",
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        (3, 32, 32),
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        True,
        "let torchvision download it (needs internet) or extract cifar-100-python.tar.gz into data/datasets/",
    ),
    "synthetic": DatasetInfo(
        "synthetic",
        (3, 16, 16),
        10,
        (0.5,),
        (0.25,),
        False,  # random-pixel class templates are not translation invariant: no crop/flip
        "it is generated, nothing to get",
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset by name or fail with the list of known ones."""
    if name not in DATASETS:
        raise LewcError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


# --------------------------------------------------------------------------- on-disk formats


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not, checking its header against its size."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise LewcError(f"{path} is not a valid gzip file ({err}); delete it and fetch it again") from None
    if len(raw) < 4:
        raise LewcError(f"{path} is truncated (no IDX header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise LewcError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    if ndim not in (1, 3) or len(raw) < 4 + 4 * ndim:
        raise LewcError(f"{path} has an IDX header with {ndim} dimensions; image files have 3, label files 1")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise LewcError(f"{path} is truncated: header says {dims}, file holds {body.size} bytes of data")
    return body.reshape(dims)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickle CIFAR's python batches while refusing every global but numpy's array rebuilders.

    CIFAR-10/100 are distributed as pickles; a plain ``pickle.load`` would execute arbitrary
    code from a tampered file. Only the classes a numpy array needs are allowed.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a CIFAR batch")


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``cifar-10-batches-py`` / ``cifar-100-python`` file into (N,3,32,32) uint8 and labels."""
    if not path.is_file():
        raise LewcError(f"{path} is missing; the CIFAR folder is incomplete")
    try:
        obj = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        data = np.asarray(obj["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(obj[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise LewcError(f"{path} is not a valid CIFAR batch ({err})") from None
    if len(labels) != len(data):
        raise LewcError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


# --------------------------------------------------------------------------- locating files

_IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_DIR = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_CIFAR_DIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _idx_dir_candidates(name: str, root: Path) -> list[Path]:
    return [root / name, root / _TORCHVISION_DIR[name] / "raw", root]


def _find_idx(name: str, roots: list[Path]) -> dict[str, Path] | None:
    for root in roots:
        for folder in _idx_dir_candidates(name, root):
            found = {}
            for key, stem in _IDX_NAMES.items():
                for cand in (folder / stem, folder / f"{stem}.gz"):
                    if cand.is_file():
                        found[key] = cand
                        break
            if len(found) == 4:
                return found
    return None


def _find_cifar(name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        for folder in (root / _CIFAR_DIR[name], root / name / _CIFAR_DIR[name]):
            if folder.is_dir():
                return folder
    return None


def _download(name: str, root: Path) -> None:
    """Fetch with torchvision's own downloader (verifies MD5s); our readers then parse the files.

    A failed download removes every folder it created (torchvision makes ``MNIST/raw`` first), so a
    later lookup never finds a half-filled dataset folder.
    """
    import shutil

    import torchvision.datasets as tvd

    cls = {"fashion-mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[
        name
    ]
    target = root / name if name in _CIFAR_DIR else root
    candidates = [root, target] + ([target / _TORCHVISION_DIR[name]] if name in _TORCHVISION_DIR else [])
    made = [p for p in dict.fromkeys(candidates) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            cls(str(target), train=train, download=True)
    except BaseException:
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def dataset_files(name: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The files ``load_arrays`` reads for ``name`` (empty for synthetic; ``LewcError`` if not found)."""
    if name == "synthetic":
        return []
    dataset_info(name)
    roots = _roots(name, data_root)
    if name in _IDX_NAMES_DATASETS:
        files = _find_idx(name, roots)
        if files is None:
            raise LewcError(f"dataset {name} not found (looked in {', '.join(map(str, roots))})")
        return [files[k] for k in sorted(files)]
    folder = _find_cifar(name, roots)
    if folder is None:
        raise LewcError(f"dataset {name} not found (looked in {', '.join(map(str, roots))})")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def dataset_identity(name: str, data_root: str | os.PathLike | None = None, n_calib: int | None = None) -> str:
    """A short content hash of exactly what an analysis reads: the dataset files' bytes and the splits.

    Content, not names or times: a replaced file changes it, a copy elsewhere does not. Each file is
    hashed once per process and state (path, size, mtime), so a sweep pays it once — about 0.1 s for
    Fashion-MNIST's 30 MB. The calibration split (size and seed) is part of it, as is the generator
    of the synthetic set.
    """
    from lewc.core.io import sha256_file

    digest = hashlib.sha256(f"{name}/calib={n_calib}/split_seed={SPLIT_SEED}".encode())
    if name == "synthetic":
        digest.update(b"synthetic_arrays(3000, 1000, seed 0)/v1")
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
    if name == "fashion-mnist":
        roots.append(DEBIAN_FASHION_MNIST)
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


def load_arrays(name: str, data_root: str | os.PathLike | None = None, download: bool = True):
    """Return (train_x, train_y, test_x, test_y) as numpy arrays, images (N, C, H, W) uint8, checked."""
    info = dataset_info(name)
    if name == "synthetic":
        return synthetic_arrays()
    arrays, where = _locate_arrays(name, info, data_root, download)
    check_arrays(info, *arrays, where=where)
    return arrays


def _locate_arrays(name: str, info: DatasetInfo, data_root, download: bool):
    """Find (or download) the files and parse them; returns the arrays and the folder they came from."""
    roots = _roots(name, data_root)
    for attempt in range(2):
        if name in _IDX_NAMES_DATASETS:
            files = _find_idx(name, roots)
            if files is not None:
                arrays = {k: read_idx(p) for k, p in files.items()}
                for key, arr in arrays.items():
                    want = 3 if key.endswith("_x") else 1
                    if arr.ndim != want:
                        raise LewcError(f"{files[key]} has {arr.ndim} dimensions, expected {want}")
                return (
                    arrays["train_x"][:, None],
                    arrays["train_y"].astype(np.int64),
                    arrays["test_x"][:, None],
                    arrays["test_y"].astype(np.int64),
                ), str(files["train_x"].parent)
        else:
            folder = _find_cifar(name, roots)
            if folder is not None:
                return _read_cifar_folder(name, folder), str(folder)
        if attempt == 0 and download:
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


_IDX_NAMES_DATASETS = ("fashion-mnist", "mnist")


def _read_cifar_folder(name: str, folder: Path):
    if name == "cifar10":
        parts = [read_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
        test_x, test_y = read_cifar_batch(folder / "test_batch", "labels")
    else:
        parts = [read_cifar_batch(folder / "train", "fine_labels")]
        test_x, test_y = read_cifar_batch(folder / "test", "fine_labels")
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return train_x, train_y, test_x, test_y


def synthetic_arrays(n_train: int = 3000, n_test: int = 1000, seed: int = 0):
    """A small, seeded image dataset for tests: class templates near mid-grey plus strong noise, uint8.

    Template contrast (σ 12) against pixel noise (σ 60) makes it learnable but not separable (an MLP
    ×2 reaches ~94% after 3 epochs), so calibration has a finite optimum and barriers are non-trivial.
    """
    info = DATASETS["synthetic"]
    gen = np.random.default_rng(seed)
    templates = 128 + gen.normal(0, 12, size=(info.num_classes, *info.in_shape))

    def draw(n: int):
        y = gen.integers(0, info.num_classes, size=n)
        x = templates[y] + gen.normal(0, 60, size=(n, *info.in_shape))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return train_x, train_y, test_x, test_y


# --------------------------------------------------------------------------- the device dataset


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
) -> DeviceDataset:
    """Load a dataset's splits onto ``device`` as uint8 tensors (see module docstring for lookup)."""
    info = dataset_info(name)
    train_x, train_y, test_x, test_y = load_arrays(name, data_root, download)
    if n_calib is None:
        n_calib = DEFAULT_CALIB_SIZE if name != "synthetic" else N_CALIB_SYNTHETIC
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
