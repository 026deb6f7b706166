"""CIFAR-10 from either the npz layout (train_*.npz + test.npz) or the python-batch folder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from tvmnas.data.arrays import ArrayDataset, make_dataset
from tvmnas.errors import DatasetError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32) * 255.0
_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32) * 255.0


def is_cifar10_npz(root: Path) -> bool:
    """True if `root` holds test.npz and at least one train_*.npz."""
    return (root / "test.npz").is_file() and any(root.glob("train_*.npz"))


def is_cifar10_batches(root: Path) -> bool:
    """True if `root` holds the python pickles data_batch_1 ... and test_batch."""
    return (root / "test_batch").is_file() and (root / "data_batch_1").is_file()


def load_cifar10(root: Path) -> ArrayDataset:
    """Load CIFAR-10 from `root` (or its cifar-10-batches-py child) in whichever layout it has."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"CIFAR-10 folder '{root}' does not exist")
    if is_cifar10_npz(root):
        train, test = _read_npz(root)
    elif is_cifar10_batches(root):
        train, test = _read_batches(root)
    elif is_cifar10_batches(root / "cifar-10-batches-py"):
        train, test = _read_batches(root / "cifar-10-batches-py")
    else:
        raise DatasetError(
            f"'{root}' holds neither train_*.npz + test.npz nor data_batch_1..5 + test_batch"
        )
    return make_dataset("cifar10", train, test, CIFAR10_CLASSES, _MEAN, _STD)


def _read_npz(root: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    parts = [np.load(f) for f in sorted(root.glob("train_*.npz"))]
    train_x = np.concatenate([p["train_x"] for p in parts])
    train_y = np.concatenate([p["train_y"] for p in parts])
    test = np.load(root / "test.npz")
    nhwc_to_nchw = (0, 3, 1, 2)
    return (
        (train_x.transpose(nhwc_to_nchw), train_y),
        (test["test_x"].transpose(nhwc_to_nchw), test["test_y"]),
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    data = entry.get(b"data")
    labels = entry.get(b"labels")
    if data is None or labels is None:
        raise DatasetError(f"'{path}' is not a CIFAR-10 python batch (no data/labels)")
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels)


def _read_batches(root: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    train = [_read_batch(p) for p in sorted(root.glob("data_batch_*"))]
    test = _read_batch(root / "test_batch")
    return (
        (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
        test,
    )
