"""The dataset files' formats: MNIST's IDX (gzipped or not), CIFAR's python batches (unpickled with every
global but numpy's array rebuilders refused), finding each under a list of roots, and torchvision's
downloader that fetches them. Nothing here knows the registry (``lewc.training.datasets``)."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lewc.core.errors import LewcError

# (train_x, train_y, test_x, test_y): images (N, C, H, W) uint8, labels int64
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


def idx_finder(name: str, torchvision_dir: str) -> Callable[[list[Path]], Path | None]:
    """Find an MNIST-like's folder: ``root/name``, torchvision's ``root/<Dir>/raw``, or ``root`` itself."""

    def find(roots: list[Path]) -> Path | None:
        for root in roots:
            for folder in (root / name, root / torchvision_dir / "raw", root):
                if _idx_files(folder) is not None:
                    return folder
        return None

    return find


def idx_file_list(folder: Path) -> list[Path]:
    files = _idx_files(folder) or {}
    return [files[k] for k in sorted(files)]


def read_idx_folder(folder: Path) -> Arrays:
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


def cifar_finder(name: str, folder_name: str) -> Callable[[list[Path]], Path | None]:
    def find(roots: list[Path]) -> Path | None:
        for root in roots:
            for folder in (root / folder_name, root / name / folder_name):
                if folder.is_dir():
                    return folder
        return None

    return find


def cifar_file_list(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_cifar10(folder: Path) -> Arrays:
    parts = [read_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    test_x, test_y = read_cifar_batch(folder / "test_batch", "labels")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y


def read_cifar100(folder: Path) -> Arrays:
    train_x, train_y = read_cifar_batch(folder / "train", "fine_labels")
    test_x, test_y = read_cifar_batch(folder / "test", "fine_labels")
    return train_x, train_y, test_x, test_y


def torchvision_downloader(cls_name: str, subdir: str | None, torchvision_dir: str | None) -> Callable[[Path], None]:
    """Fetch with torchvision's own downloader (verifies MD5s) into ``root/subdir``; our readers then parse
    the files.

    A failed download removes every folder it created (torchvision makes ``MNIST/raw`` first), so a
    later lookup never finds a half-filled dataset folder.
    """

    def download(root: Path) -> None:
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
