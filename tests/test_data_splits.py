"""Every dataset has a validation split: carved from train (stratified, seeded, recorded) or the
dataset's own, refused parameters and too-small data give one clear error, plugins' datasets get
one too, lazily loaded ones carve by index."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ssmdefense as sd
from ssmdefense.data.base import Dataset, LazyDataset
from ssmdefense.data.splits import carve_indices, with_validation


def toy(n_per_class=(30, 20, 10), groups=None, **extra) -> Dataset:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])  # (N) in blocks, as loaders order
    x = (np.arange(len(y), dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)) / len(y)
    return Dataset("toy", x, y, x[:6], y[:6], nb_classes=len(n_per_class), groups=groups, **extra)


def test_carved_split_is_stratified_seeded_disjoint_and_recorded():
    data = with_validation(toy(), "toy")
    v = data.validation
    assert v["source"] == "carved" and v["fraction"] == 0.1 and v["seed"] == 0 and v["stratified_by"] == "class"
    assert (v["train"], v["val"]) == (54, 6) and len(data.y_train) == 54 and len(data.y_val) == 6
    assert np.bincount(data.y_val).tolist() == [3, 2, 1]  # each class its share: 10 % of 30, 20 and 10
    train_ids, val_ids = set(data.x_train[:, 0, 0, 0].tolist()), set(data.x_val[:, 0, 0, 0].tolist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 60  # a partition of the training data
    assert len(set(data.y_val[:3].tolist())) > 1  # shuffled: a prefix (--eval-samples) mixes classes
    again = with_validation(toy(), "toy")
    assert np.array_equal(again.x_val, data.x_val) and again.validation["fingerprint"] == v["fingerprint"]
    other = with_validation(toy(), "toy", val_seed=1, val_fraction=0.25)
    assert len(other.y_val) == 15 and other.validation["fingerprint"] != v["fingerprint"]
    assert np.array_equal(data.x_test, toy().x_test)  # test untouched


def test_every_class_keeps_a_training_sample_and_too_small_data_is_one_clear_error():
    y = np.repeat(np.arange(43), 2)  # 86 samples in 43 classes: 9 held out, from 9 classes
    train, val = carve_indices(y, 0.1, 0)
    assert len(val) == 9 and len(set(y[val].tolist())) == 9 and set(y[train].tolist()) == set(range(43))
    for n_per_class, fraction in (((1, 1, 1), 0.1), ((5, 5), 0.95)):
        with pytest.raises(sd.SSMDefenseError, match=r"dataset 'toy' is too small to carve a validation split") as e:
            with_validation(toy(n_per_class), "toy", val_fraction=fraction)
        assert "\n" not in str(e.value) and "each of the" in str(e.value)
    with pytest.raises(sd.SSMDefenseError, match="is too small .*single group"):
        with_validation(toy(groups=np.zeros(60, int)), "toy")


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.1", True, float("nan")])
def test_bad_val_fraction_is_refused(bad):
    with pytest.raises(sd.SSMDefenseError, match="val_fraction must be") as e:
        sd.load_dataset("digits", val_fraction=bad)
    assert "\n" not in str(e.value)


def test_groups_are_held_out_whole():
    groups = np.array([f"voice{i % 12}" for i in range(60)])  # 12 voices, each speaking every class
    data = with_validation(toy(groups=groups), "toy", val_fraction=0.2)
    held = set(data.validation["held_out_groups"])
    assert data.validation["stratified_by"] == "group" and len(held) == 3  # ceil(0.2 * 12) voices
    assert not held & set(data.groups.tolist()) and len(data.groups) == len(data.y_train)
    assert len(data.y_val) == 15


def test_an_official_split_is_kept_and_the_carving_parameters_are_refused():
    official = toy(x_val=np.zeros((4, 1, 2, 2), np.float32), y_val=np.array([0, 1, 2, 0]))
    data = with_validation(official, "toy")
    assert len(data.y_val) == 4 and len(data.y_train) == 60 and data.validation["source"] == "official"
    with pytest.raises(sd.SSMDefenseError, match="has its own validation split .*val_fraction and val_seed apply only"):
        with_validation(official, "toy", val_fraction=0.2)


def test_a_plugins_dataset_object_gets_a_carved_split():
    base = toy()
    plain = SimpleNamespace(
        **{k: getattr(base, k) for k in ("x_train", "y_train", "x_test", "y_test", "nb_classes", "clip_values")},
        input_shape=base.input_shape,
        sequence="rows",
    )
    data = with_validation(plain, "plugin-set")
    assert isinstance(data, Dataset) and data.name == "plugin-set" and len(data.y_val) == 6
    # ... and one with its own validation split keeps it
    own = SimpleNamespace(**vars(plain), x_val=base.x_train[:5], y_val=base.y_train[:5], info=None)
    data = with_validation(own, "plugin-set")
    assert len(data.y_val) == 5 and len(data.y_train) == 60 and data.validation["source"] == "official"
    assert data.info == {}  # a member given as None takes the default


def test_a_lazy_dataset_is_carved_by_index():
    x = torch.arange(60, dtype=torch.float32)[:, None, None, None].expand(60, 1, 2, 2)
    y = toy().y_train
    items = torch.utils.data.TensorDataset(x, torch.from_numpy(y))
    lazy = LazyDataset(
        name="lazy-toy", train=items, test=items, y_train=y, y_test=y, input_shape=(1, 2, 2), nb_classes=3
    )
    data = with_validation(lazy, "lazy-toy")
    assert len(data.train) == len(data.y_train) == 54 and len(data.val) == len(data.y_val) == 6
    for i in range(6):
        xi, yi = data.val[i]
        assert int(yi) == data.y_val[i] and int(xi[0, 0, 0]) not in {int(data.train[j][0][0, 0, 0]) for j in range(54)}
