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

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lewc.core.conventions import N_CALIB, N_CALIB_SYNTHETIC
from lewc.core.errors import LewcError
from lewc.core.io import data_home, sha256_file
from lewc.core.registry import Registry

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


# (train_x, train_y, test_x, test_y): images (N, C, H, W) uint8, labels int64
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files (plain or gzipped) in ``folder``, or ``None`` if one is missing."""
    found = {}
    for key, stem in _IDX_NAMES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
    return found if len(found) == 4 else None


def _idx_finder(name: str, torchvision_dir: str) -> Callable[[list[Path]], Path | None]:
    """Find an MNIST-like's folder: ``root/name``, torchvision's ``root/<Dir>/raw``, or ``root`` itself."""

    def find(roots: list[Path]) -> Path | None:
        for root in roots:
            for folder in (root / name, root / torchvision_dir / "raw", root):
                if _idx_files(folder) is not None:
                    return folder
        return None

    return find


def _idx_file_list(folder: Path) -> list[Path]:
    files = _idx_files(folder) or {}
    return [files[k] for k in sorted(files)]


def _read_idx_folder(folder: Path) -> Arrays:
    files = _idx_files(folder)
    if files is None:
        raise LewcError(f"{folder} lacks one of the four IDX files")
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
    )


def _cifar_finder(name: str, folder_name: str) -> Callable[[list[Path]], Path | None]:
    def find(roots: list[Path]) -> Path | None:
        for root in roots:
            for folder in (root / folder_name, root / name / folder_name):
                if folder.is_dir():
                    return folder
        return None

    return find


def _cifar_file_list(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _read_cifar10(folder: Path) -> Arrays:
    parts = [read_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    test_x, test_y = read_cifar_batch(folder / "test_batch", "labels")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y


def _read_cifar100(folder: Path) -> Arrays:
    train_x, train_y = read_cifar_batch(folder / "train", "fine_labels")
    test_x, test_y = read_cifar_batch(folder / "test", "fine_labels")
    return train_x, train_y, test_x, test_y


def _torchvision_downloader(cls_name: str, subdir: str | None, torchvision_dir: str | None) -> Callable[[Path], None]:
    """Fetch with torchvision's own downloader (verifies MD5s) into ``root/subdir``; our readers then parse
    the files.

    A failed download removes every folder it created (torchvision makes ``MNIST/raw`` first), so a
    later lookup never finds a half-filled dataset folder.
    """

    def download(root: Path) -> None:
        import shutil

        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        target = root / subdir if subdir else root
        candidates = [root, target] + ([target / torchvision_dir] if torchvision_dir else [])
        made = [p for p in dict.fromkeys(candidates) if not p.exists()]
        target.mkdir(parents=True, exist_ok=True)
        try:
            for train in (True, False):
                cls(str(target), train=train, download=True)
        except BaseException:
            for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
                shutil.rmtree(folder, ignore_errors=True)
            raise

    return download


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
        find=_idx_finder(name, torchvision_dir),
        files=_idx_file_list,
        read=_read_idx_folder,
        download=_torchvision_downloader(torchvision_dir, None, torchvision_dir),
        extra_roots=extra_roots,
    )


def _cifar(name: str, cls_name: str, folder_name: str, read, info: DatasetInfo) -> DatasetSpec:
    return DatasetSpec(
        info,
        find=_cifar_finder(name, folder_name),
        files=_cifar_file_list,
        read=read,
        download=_torchvision_downloader(cls_name, name, None),
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
        _read_cifar10,
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
        _read_cifar100,
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
