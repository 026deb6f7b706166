"""Resolve a data set name or folder into an ArrayDataset: digits, cifar10 or an image folder."""

from __future__ import annotations

from pathlib import Path

from tvmnas.data.arrays import ArrayDataset
from tvmnas.data.cifar10 import is_cifar10_batches, is_cifar10_npz, load_cifar10
from tvmnas.data.digits import load_digits
from tvmnas.data.image_folder import load_image_folder
from tvmnas.errors import DatasetError

DATASET_NAMES = ("digits", "cifar10", "folder")


def load_dataset(
    name: str,
    *,
    root: Path | None = None,
    image_size: int | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> ArrayDataset:
    """Load `name` ('digits', 'cifar10', 'folder', or a path to any of those layouts).

    `root` is the folder for cifar10 / folder; limits keep the first N examples (small runs).
    """
    path = Path(name) if name not in DATASET_NAMES else root
    if name == "digits":
        data = load_digits()
    elif name == "cifar10":
        if root is None:
            raise DatasetError("dataset 'cifar10' needs a data folder (the data root)", settings=("data_root",))
        data = load_cifar10(Path(root))
    elif name == "folder":
        if root is None:
            raise DatasetError("dataset 'folder' needs a data folder (the data root)", settings=("data_root",))
        data = load_image_folder(Path(root), image_size=image_size)
    elif path is not None and path.is_dir():
        if is_cifar10_npz(path) or is_cifar10_batches(path) or is_cifar10_batches(path / "cifar-10-batches-py"):
            data = load_cifar10(path)
        else:
            data = load_image_folder(path, image_size=image_size)
    else:
        raise DatasetError(
            f"unknown dataset '{name}': use one of {', '.join(DATASET_NAMES)} or an existing folder"
        )
    if limit_train is not None or limit_test is not None:
        data = data.limited(limit_train, limit_test)
    return data
