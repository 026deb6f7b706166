"""scikit-learn's bundled 8x8 digits: the embedded default data set (no files, no download)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as _sk_load_digits
from sklearn.model_selection import train_test_split

from tvmnas.data.arrays import ArrayDataset, make_dataset

# A fixed split so that accuracies of different runs compare; run seeds only change training.
_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


def load_digits() -> ArrayDataset:
    """1,437 train / 360 test grey 1x8x8 images of the digits 0-9, stratified split."""
    raw = _sk_load_digits()
    x = (raw.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = raw.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=_TEST_FRACTION, random_state=_SPLIT_SEED, stratify=y
    )
    mean = np.array([x_tr.mean()], dtype=np.float32)
    std = np.array([x_tr.std()], dtype=np.float32)
    classes = tuple(str(i) for i in range(10))
    return make_dataset("digits", (x_tr, y_tr), (x_te, y_te), classes, mean, std)
