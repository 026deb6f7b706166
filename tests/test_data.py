"""Data sets: digits default, CIFAR-10 npz and python-batch layouts, image folders, seeded batches."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from tvmnas.data import batches, load_dataset, num_batches
from tvmnas.errors import DatasetError

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def test_digits_shapes_and_normalisation():
    data = load_dataset("digits")
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int64
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert set(np.unique(data.train_y)) == set(range(10))
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1.0) < 1e-3


def test_digits_is_deterministic():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


def test_batches_seeded_order_is_reproducible_and_complete():
    data = load_dataset("digits", limit_train=100)
    first = [y.numpy() for _, y in batches(data.train_x, data.train_y, 32, shuffle_seed=7)]
    again = [y.numpy() for _, y in batches(data.train_x, data.train_y, 32, shuffle_seed=7)]
    other = [y.numpy() for _, y in batches(data.train_x, data.train_y, 32, shuffle_seed=8)]
    assert len(first) == num_batches(100, 32) == 4
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert sorted(np.concatenate(first).tolist()) == sorted(data.train_y.tolist())
    xb, yb = next(batches(data.train_x, data.train_y, 32))
    assert tuple(xb.shape) == (32, 1, 8, 8) and tuple(yb.shape) == (32,)


def _fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def test_cifar10_npz_layout(tmp_path):
    x, y = _fake_images(20, 0)
    np.savez_compressed(tmp_path / "train_00.npz", train_x=x[:10], train_y=y[:10])
    np.savez_compressed(tmp_path / "train_01.npz", train_x=x[10:], train_y=y[10:])
    tx, ty = _fake_images(10, 1)
    np.savez_compressed(tmp_path / "test.npz", test_x=tx, test_y=ty)
    data = load_dataset("cifar10", root=tmp_path)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    assert data.classes[0] == "airplane" and data.num_classes == 10
    # HWC -> CHW kept the pixel: channel 1 of image 3 at (4, 5)
    mean, std = np.array([0.4822 * 255]), np.array([0.2435 * 255])
    assert np.allclose(data.train_x[3, 1, 4, 5], (x[3, 4, 5, 1] - mean) / std, atol=1e-4)
    assert np.array_equal(load_dataset(str(tmp_path)).train_y, data.train_y)


def test_cifar10_python_batch_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, seed in (("data_batch_1", 0), ("data_batch_2", 1), ("test_batch", 2)):
        x, y = _fake_images(6, seed)
        entry = {b"data": x.transpose(0, 3, 1, 2).reshape(6, -1), b"labels": y.tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    data = load_dataset("cifar10", root=tmp_path)
    assert data.train_x.shape == (12, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)


def test_image_folder_with_and_without_splits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog", "eel"):
            (tmp_path / "split" / split / cls).mkdir(parents=True)
            (tmp_path / "flat" / cls).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                img = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
                img.save(tmp_path / "split" / split / cls / f"{i}.png")
                img.save(tmp_path / "flat" / cls / f"{split}{i}.png")
    data = load_dataset("folder", root=tmp_path / "split", image_size=8)
    assert data.classes == ("cat", "dog", "eel")
    assert data.train_x.shape == (9, 3, 8, 8) and data.test_x.shape == (9, 3, 8, 8)
    flat = load_dataset(str(tmp_path / "flat"))
    assert flat.input_shape == (3, 12, 12) and len(flat.train_x) + len(flat.test_x) == 18


def test_unknown_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="neither"):
        load_dataset("cifar10", root=tmp_path)


@pytest.mark.slow
def test_shared_cifar10_subset_loads():
    assert SHARED_CIFAR10.is_dir(), f"expected the CIFAR-10 npz files in {SHARED_CIFAR10} (see its README)"
    data = load_dataset("cifar10", root=SHARED_CIFAR10)
    assert data.train_x.shape == (34000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert np.bincount(data.train_y).tolist() == [3400] * 10
