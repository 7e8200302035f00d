"""Embedded datasets: shapes, dtypes, ranges and deterministic stratified splits."""

import numpy as np
import pytest

import ssmdefense as sd


@pytest.mark.parametrize(
    "name, n_train, n_val, n_test, shape",
    [
        ("mnist-5k", 3600, 400, 1000, (1, 28, 28)),  # 4,000 train, 10 % of it carved for validation
        ("digits", 1293, 144, 360, (1, 8, 8)),
    ],
)
def test_embedded_dataset(name, n_train, n_val, n_test, shape):
    data = sd.load_dataset(name)
    assert data.x_train.shape == (n_train, *shape) and data.x_test.shape == (n_test, *shape)
    assert data.x_val.shape == (n_val, *shape) and data.validation["source"] == "carved"
    assert data.input_shape == shape and data.nb_classes == 10
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    # stratified: every class present in every split in about the same proportion
    train_frac = np.bincount(data.y_train, minlength=10) / n_train
    for y, n in ((data.y_test, n_test), (data.y_val, n_val)):
        assert np.abs(train_frac - np.bincount(y, minlength=10) / n).max() < 0.01
    # deterministic
    again = sd.load_dataset(name)
    assert np.array_equal(again.x_test, data.x_test) and np.array_equal(again.y_train, data.y_train)
    assert np.array_equal(again.x_val, data.x_val)
    # disjoint splits (no test or validation image appears in train)
    train_rows = {row.tobytes() for row in data.x_train.reshape(n_train, -1)}
    assert sum(row.tobytes() in train_rows for row in data.x_test.reshape(n_test, -1)) <= 2
    assert sum(row.tobytes() in train_rows for row in data.x_val.reshape(n_val, -1)) <= 2


def test_split_seed_changes_the_split():
    a, b = sd.load_dataset("digits"), sd.load_dataset("digits", split_seed=1)
    assert not np.array_equal(a.y_test, b.y_test)
    with pytest.raises(sd.SSMDefenseError, match="unknown parameter"):
        sd.load_dataset("digits", seed=3)
