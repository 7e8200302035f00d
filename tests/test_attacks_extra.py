"""Random noise and the spatial attacks (Foolbox ``spatial``, ART ``art-spatial``): accuracy falls,
results stay in bounds, seeds reproduce, progress bars show, bad parameters are rejected clearly."""

import numpy as np
import pytest
import torch
from art.attacks import EvasionAttack
from art.attacks.evasion import SpatialTransformation
from art.estimators.classification import PyTorchClassifier

import ssmdefense as sd

EPS = 0.1
# Grids suited to 8 x 8 digits: 1 px is already an eighth of the image. Against the tiny trained
# S4D these take the accuracy near 0 (spatial) and about 0.1 (art-spatial), far below noise (~0.87).
SPATIAL = {"max_translation": 1, "num_translations": 3, "max_rotation": 15, "num_rotations": 3}


@pytest.fixture(scope="module")
def batch(digits):
    return digits.x_test[:200], digits.y_test[:200]


@pytest.fixture(scope="module")
def noise_accuracy(trained, batch):
    x, y = batch
    return trained.accuracy(sd.get_attack("noise", trained, eps=EPS, seed=0).generate(x), y)


def distances(x_adv, x):
    delta = (x_adv - x).reshape(len(x), -1)  # (N features)
    return np.abs(delta).max(axis=1), np.linalg.norm(delta, axis=1)


# ---- noise ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm, eps", [("inf", 0.1), ("2", 0.5)])
def test_noise_stays_in_the_eps_ball_and_clip_range(trained, batch, norm, eps):
    x, y = batch
    attack = sd.get_attack("noise", trained, eps=eps, norm=norm, seed=0, batch_size=64)
    assert isinstance(attack, EvasionAttack)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    linf, l2 = distances(x_adv, x)
    assert (linf if norm == "inf" else l2).max() <= eps * (1 + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).mean() > 0.01  # noise was added, not just clipping
    if norm == "2":  # uniform in a 64-dimensional ball: nearly all the volume is near the sphere
        assert np.median(l2) > 0.8 * eps


def test_noise_lowers_accuracy_a_little(trained, batch):
    x, y = batch
    loud = sd.get_attack("noise", trained, eps=0.5, seed=0).generate(x)
    assert trained.accuracy(loud, y) < trained.accuracy(x, y)


def test_noise_seed_reproduces_and_none_follows_numpy(trained, batch):
    x, _ = batch
    x_adv = sd.get_attack("noise", trained, eps=EPS, seed=0).generate(x)
    np.testing.assert_array_equal(sd.get_attack("noise", trained, eps=EPS, seed=0).generate(x), x_adv)
    assert not np.array_equal(sd.get_attack("noise", trained, eps=EPS, seed=1).generate(x), x_adv)

    fresh = sd.get_attack("noise", trained, eps=EPS)  # seed None: new noise each call ...
    assert not np.array_equal(fresh.generate(x), fresh.generate(x))
    np.random.seed(3)  # ... drawn from NumPy's global generator, so seeding it reproduces
    first = fresh.generate(x)
    np.random.seed(3)
    np.testing.assert_array_equal(fresh.generate(x), first)


# ---- spatial and art-spatial ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["spatial", "art-spatial"])
def test_spatial_attacks_beat_noise_and_stay_in_clip_range(trained, batch, noise_accuracy, name):
    x, y = batch
    # eps is passed to every attack by the evaluation; spatial attacks accept it and ignore it.
    attack = sd.get_attack(name, trained, eps=EPS, **SPATIAL)
    assert isinstance(attack, EvasionAttack)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    adv = trained.accuracy(x_adv, y)
    assert adv < noise_accuracy - 0.3, (adv, noise_accuracy)
    np.testing.assert_array_equal(sd.get_attack(name, trained, eps=0.3, **SPATIAL).generate(x, y), x_adv)


def test_spatial_takes_one_hot_labels_or_none(trained, batch, noise_accuracy):
    x, y = batch
    attack = sd.get_attack("spatial", trained, **SPATIAL)
    x_adv = attack.generate(x, y)
    np.testing.assert_array_equal(attack.generate(x, np.eye(10, dtype=np.float32)[y]), x_adv)
    # y None: attacks the model's own predictions, as ART attacks do
    assert trained.accuracy(attack.generate(x), y) < noise_accuracy - 0.3


def test_spatial_random_search_follows_numpy_seed(trained, batch):
    x, y = batch
    attack = sd.get_attack("spatial", trained, max_translation=1, grid_search=False, random_steps=10)
    np.random.seed(0)
    first = attack.generate(x, y)
    np.random.seed(0)
    np.testing.assert_array_equal(attack.generate(x, y), first)


def test_art_spatial_shifts_along_height_unlike_art_itself(trained, digits):
    x = digits.x_test[:100]  # ART scores each candidate one sample at a time: keep it small
    ours = sd.get_attack(
        "art-spatial", trained, max_translation=1, num_translations=3, max_rotation=15, num_rotations=3
    )
    x_adv = ours.generate(x)
    assert ours.attack_trans_x in (-1, 0, 1) and ours.attack_trans_y in (-1, 0, 1)
    np.testing.assert_array_equal(ours._perturb(x, ours.attack_trans_x, ours.attack_trans_y, ours.attack_rot), x_adv)

    # ART 1.20.1 sizes the H grid from x.shape[1] (the channel axis): 12.5 % of 1 rounds to 0 px.
    art = SpatialTransformation(
        trained, max_translation=12.5, num_translations=3, max_rotation=15, num_rotations=3, verbose=False
    )
    art.generate(x)
    assert art.attack_trans_x == 0
    # Our grid holds ART's (H shift 0, W shifts -1..1 px, the same rotations) and more, scored alike.
    assert ours.fooling_rate >= art.fooling_rate


@pytest.mark.parametrize(
    "name, params",
    [
        ("noise", {"eps": EPS, "batch_size": 50}),
        ("spatial", {**SPATIAL, "batch_size": 50}),
        ("art-spatial", {**SPATIAL}),
        ("autoattack", {"eps": EPS, "max_iter": 2, "n_queries": 2}),
        ("cw", {"eps": 1.0, "norm": "2", "max_iter": 2, "binary_search_steps": 1}),
    ],
)
def test_verbose_shows_progress(trained, batch, capfd, name, params):
    x, y = batch
    capfd.readouterr()
    sd.get_attack(name, trained, **params).generate(x, y)
    assert capfd.readouterr().err == ""
    sd.get_attack(name, trained, verbose=True, **params).generate(x, y)
    err = capfd.readouterr().err
    assert "it/s" in err or "s/it" in err  # a tqdm progress bar


def sequence_estimator():
    """A plain ART classifier on flat 64-value inputs: no image axes."""
    torch.manual_seed(0)
    return PyTorchClassifier(
        torch.nn.Linear(64, 10),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(64,),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


@pytest.mark.parametrize("name", ["spatial", "art-spatial"])
def test_spatial_attacks_reject_non_image_estimators(name):
    with pytest.raises(sd.SSMDefenseError, match=r"needs image-shaped input \(C, H, W\); the estimator takes \(64,\)"):
        sd.get_attack(name, sequence_estimator())


def test_noise_works_on_any_input_shape():
    clf = sequence_estimator()
    x = np.random.default_rng(0).uniform(size=(8, 64)).astype(np.float32)
    x_adv = sd.get_attack("noise", clf, eps=0.2, seed=0).generate(x)
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("noise", {"eps": 0}, "eps must be a positive number"),
        ("noise", {"norm": "l1"}, "norm must be one of inf, 2"),
        ("noise", {"seed": -1}, "seed must be an integer >= 0 or None"),
        ("noise", {"seed": 1.5}, "seed must be an integer >= 0 or None"),
        ("noise", {"batch_size": 0}, "batch_size must be a positive integer"),
        ("noise", {"verbose": "yes"}, "verbose must be True or False"),
        ("noise", {"sigma": 0.1}, "unknown parameter.*accepted: .*norm"),
        ("spatial", {"max_rotation": 200}, r"max_rotation must be a number in \[0, 180\]"),
        ("spatial", {"max_translation": -1}, "max_translation must be a number >= 0"),
        ("spatial", {"num_translations": 0}, "num_translations must be a positive integer"),
        ("spatial", {"random_steps": 2.5}, "random_steps must be a positive integer"),
        ("spatial", {"grid_search": "no"}, "grid_search must be True or False"),
        ("spatial", {"eps": -0.1}, "eps .*ignored by spatial.* must be a number >= 0"),
        ("spatial", {"norm": "inf"}, "unknown parameter.*accepted: .*max_rotation"),
        ("art-spatial", {"max_translation": "2px"}, "max_translation must be a number >= 0"),
        ("art-spatial", {"max_rotation": -5}, r"max_rotation must be a number in \[0, 180\]"),
        ("art-spatial", {"num_rotations": 0}, "num_rotations must be a positive integer"),
        ("art-spatial", {"batch_size": 0}, "batch_size must be a positive integer"),
        ("art-spatial", {"verbose": 1}, "verbose must be True or False"),
    ],
)
def test_bad_parameters(trained, name, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.get_attack(name, trained, **params)


def test_spatial_rejects_non_image_x(trained):
    with pytest.raises(ValueError, match=r"needs images \(N, C, H, W\)"):
        sd.get_attack("spatial", trained).generate(np.zeros((4, 64), np.float32), np.zeros(4, np.int64))
