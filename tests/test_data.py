"""Datasets through the real code path, from files written here in the real on-disk formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from lewc.core.errors import LewcError
from lewc.training import data, datasets


def write_idx(path, array, compress):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def make_idx_dataset(folder, n_train=300, n_test=50, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arr, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_idx_files_load_through_data_root(tmp_path, compress, layout):
    arrays = make_idx_dataset(tmp_path / layout, compress=compress)
    ds = data.load_dataset("fashion-mnist", "cpu", data_root=tmp_path, n_calib=100, download=False)
    assert len(ds.train) == 200 and len(ds.calib) == 100 and len(ds.test) == 50
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape[1:] == (1, 28, 28)
    np.testing.assert_array_equal(ds.test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    train_all = arrays["train-labels-idx1-ubyte"]
    assert sorted(np.concatenate([ds.train.y.numpy(), ds.calib.y.numpy()])) == sorted(train_all)


def test_truncated_idx_is_a_clear_error(tmp_path):
    make_idx_dataset(tmp_path / "mnist", compress=False)
    f = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(LewcError, match="truncated"):
        data.load_dataset("mnist", "cpu", data_root=tmp_path, n_calib=10, download=False)


def _label_out_of_range(folder):
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(50, 10), False)


def _count_mismatch(folder):
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(49), False)


def _empty_test_set(folder):
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28)), False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(0), False)


def _ndim_255(folder):
    (folder / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">HBB", 0, 0x08, 255) + b"\0" * 16)


def _wrong_image_shape(folder):
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((50, 32, 32)), False)


def _labels_as_images(folder):
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros((50, 28, 28)), False)


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (_label_out_of_range, r"test labels span \[10, 10\], outside \[0, 9\]"),
        (_count_mismatch, "50 test images but 49 labels"),
        (_empty_test_set, "the test split is empty"),
        (_ndim_255, "255 dimensions"),
        (_wrong_image_shape, r"expected \(1, 28, 28\)"),
        (_labels_as_images, "3 dimensions, expected 1"),
    ],
)
def test_malformed_dataset_files_are_one_line_errors(tmp_path, corrupt, message):
    """Files that parse but cannot be a dataset are refused when loaded, before any training."""
    make_idx_dataset(tmp_path / "mnist", compress=False)
    corrupt(tmp_path / "mnist")
    with pytest.raises(LewcError, match=message) as info:
        data.load_dataset("mnist", "cpu", data_root=tmp_path, n_calib=10, download=False)
    assert "\n" not in str(info.value)


def write_cifar(folder, n_per_batch=20, cifar100=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    key = "fine_labels" if cifar100 else "labels"
    names = ["train", "test"] if cifar100 else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (n_per_batch, 3072)).astype(np.uint8),
            key: rng.integers(0, 100 if cifar100 else 10, n_per_batch).tolist(),
            "batch_label": name,
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return names


@pytest.mark.parametrize(
    "name,folder,cifar100", [("cifar10", "cifar-10-batches-py", False), ("cifar100", "cifar-100-python", True)]
)
def test_cifar_pickled_batches_load_through_data_root(tmp_path, name, folder, cifar100):
    write_cifar(tmp_path / folder, cifar100=cifar100)
    ds = data.load_dataset(name, "cpu", data_root=tmp_path, n_calib=10, download=False)
    n_train = 20 if cifar100 else 100
    assert len(ds.train) + len(ds.calib) == n_train and len(ds.test) == 20
    assert ds.test.x.shape[1:] == (3, 32, 32)


def test_a_malicious_cifar_pickle_is_refused(tmp_path):
    names = write_cifar(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / names[0], "wb") as fh:
        pickle.dump({"data": Evil(), "labels": [0]}, fh)
    with pytest.raises(LewcError, match="forbidden global"):
        data.load_dataset("cifar10", "cpu", data_root=tmp_path, n_calib=10, download=False)


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    def no_network(name, root):
        raise OSError("network unreachable")

    monkeypatch.setattr(datasets, "_download", no_network)
    with pytest.raises(LewcError) as err:
        data.load_dataset("cifar10", "cpu", data_root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "download failed" in msg and "cifar-10-python" in msg


def test_splits_are_disjoint_and_deterministic():
    tr1, ca1 = data.calib_indices(1000, 100)
    tr2, ca2 = data.calib_indices(1000, 100)
    np.testing.assert_array_equal(ca1, ca2)
    assert not set(tr1) & set(ca1) and len(tr1) + len(ca1) == 1000
    assert not np.array_equal(data.calib_indices(1000, 100, seed=1)[1], ca1)


def test_augmentation_is_seeded_and_shape_preserving(synthetic):
    x = synthetic.train.x[:64]
    a1 = data.random_crop_flip(x, torch.Generator().manual_seed(3))
    a2 = data.random_crop_flip(x, torch.Generator().manual_seed(3))
    a3 = data.random_crop_flip(x, torch.Generator().manual_seed(4))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3) and a1.shape == x.shape


def test_crop_and_flip_move_pixels_as_specified():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    out = data.random_crop_flip(x, torch.Generator().manual_seed(0), pad=1)
    for img, res in zip(x, out, strict=True):
        padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
        crops = [padded[:, i : i + 4, j : j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(res, c) or torch.equal(res, c.flip(-1)) for c in crops)


@pytest.mark.skipif(
    not (data.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_debian():
    ds = data.load_dataset("fashion-mnist", "cpu", download=False)
    assert (len(ds.train), len(ds.calib), len(ds.test)) == (55000, 5000, 10000)
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
