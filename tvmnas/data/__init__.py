"""Data sets as in-memory arrays: digits (embedded default), CIFAR-10, image folders."""

from tvmnas.data.arrays import ArrayDataset, batches, num_batches
from tvmnas.data.catalog import DATASET_NAMES, load_dataset

__all__ = ["ArrayDataset", "DATASET_NAMES", "batches", "load_dataset", "num_batches"]
