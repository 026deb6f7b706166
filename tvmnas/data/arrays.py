"""The in-memory data set value every loader returns, and seeded mini-batch iteration over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ArrayDataset:
    """Train and test images as float32 NCHW arrays (already normalised) with int64 labels.

    Everything fits in memory at MCU scale, so batches are plain slices and a run is reproducible
    from a seed alone.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of label classes."""
        return len(self.classes)

    def limited(self, train: int | None = None, test: int | None = None) -> "ArrayDataset":
        """The first `train` / `test` examples (None keeps all): small runs on big sets."""
        return ArrayDataset(
            name=self.name,
            train_x=self.train_x[:train],
            train_y=self.train_y[:train],
            test_x=self.test_x[:test],
            test_y=self.test_y[:test],
            classes=self.classes,
        )


def make_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: tuple[str, ...],
    mean: np.ndarray,
    std: np.ndarray,
) -> ArrayDataset:
    """Normalise NCHW images per channel with (mean, std) and build the value."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)

    def norm(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x.astype(np.float32) - m) / s, dtype=np.float32)

    return ArrayDataset(
        name=name,
        train_x=norm(train[0]),
        train_y=np.asarray(train[1], dtype=np.int64),
        test_x=norm(test[0]),
        test_y=np.asarray(test[1], dtype=np.int64),
        classes=tuple(classes),
    )


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle_seed: int | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) tensors on `device`; with a seed the order is a fixed permutation of it."""
    n = len(x)
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield torch.from_numpy(x[idx]).to(device), torch.from_numpy(y[idx]).to(device)


def num_batches(n: int, batch_size: int) -> int:
    """How many batches `batches` yields for n examples."""
    return (n + batch_size - 1) // batch_size
