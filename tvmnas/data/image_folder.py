"""An image-folder data set: root/train/<class>/*.png|jpg and root/test/<class>/*, or one level
root/<class>/* split by a fixed fraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tvmnas.data.arrays import ArrayDataset, make_dataset
from tvmnas.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm")
_SPLIT_SEED = 0
MIN_CLASSES = 2  # one class trains to accuracy 1.0 and means nothing


def load_image_folder(
    root: Path, *, image_size: int | None = None, grayscale: bool = False, test_fraction: float = 0.2
) -> ArrayDataset:
    """Decode every image, resized to image_size (default: the first image's size), into arrays.

    Class names are the sorted sub-folder names; labels index into them.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder '{root}' does not exist")
    split_dirs = (root / "train", root / "test")
    has_splits = all(d.is_dir() for d in split_dirs)
    class_root = root / "train" if has_splits else root
    classes = tuple(sorted(d.name for d in class_root.iterdir() if d.is_dir()))
    if len(classes) < MIN_CLASSES:
        found = f" ({', '.join(classes)})" if classes else ""
        raise DatasetError(
            f"image folder '{class_root}' has {len(classes)} class sub-folder(s){found}: "
            f"a classifier needs at least {MIN_CLASSES}"
        )

    mode = "L" if grayscale else "RGB"
    size: list[int | None] = [image_size]

    def read(folder: Path) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for label, name in enumerate(classes):
            for path in sorted((folder / name).iterdir()) if (folder / name).is_dir() else []:
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(path) as img:
                        img = img.convert(mode)
                        if size[0] is None:
                            size[0] = img.size[0]
                        if img.size != (size[0], size[0]):
                            img = img.resize((size[0], size[0]), Image.BILINEAR)
                        arr = np.asarray(img, dtype=np.uint8)
                except (OSError, ValueError, SyntaxError) as err:  # PIL's decoders raise all three
                    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise DatasetError(f"image '{path}' cannot be decoded: {reason}") from None
                xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
                ys.append(label)
        if not xs:
            raise DatasetError(f"image folder '{folder}' has no images ({', '.join(IMAGE_SUFFIXES)})")
        return np.stack(xs), np.asarray(ys, dtype=np.int64)

    def require_classes(folder: Path, labels: np.ndarray) -> None:
        with_images = [classes[k] for k in sorted(set(labels.tolist()))]
        if len(with_images) < MIN_CLASSES:
            raise DatasetError(
                f"image folder '{folder}' has images in {len(with_images)} class(es) ({', '.join(with_images)}): "
                f"a classifier needs at least {MIN_CLASSES}"
            )

    if has_splits:
        train = read(split_dirs[0])
        require_classes(split_dirs[0], train[1])
        test = read(split_dirs[1])
    else:
        x, y = read(root)
        require_classes(root, y)
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(x))
        n_test = max(1, int(round(len(x) * test_fraction)))
        test = (x[order[:n_test]], y[order[:n_test]])
        train = (x[order[n_test:]], y[order[n_test:]])
    channels = train[0].shape[1]
    flat = train[0].astype(np.float32).transpose(1, 0, 2, 3).reshape(channels, -1)
    mean, std = flat.mean(axis=1), np.maximum(flat.std(axis=1), 1.0)
    return make_dataset(root.name or "folder", train, test, classes, mean, std)
