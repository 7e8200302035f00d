"""Square, AutoAttack and Carlini-Wagner: accuracy falls below random noise, results stay in bounds."""

import numpy as np
import pytest

import ssmdefense as sd

EPS = 0.1


@pytest.fixture(scope="module")
def batch(digits):
    return digits.x_test[:20], digits.y_test[:20]  # ART's AutoAttack and C&W L-inf are slow on a CPU


def noise_accuracy(clf, x, y, eps, norm):
    """Accuracy under random noise of the same budget: uniform in the L-inf ball, or a random
    direction of length eps for L2."""
    rng = np.random.default_rng(0)
    if norm == np.inf:
        noise = rng.uniform(-eps, eps, x.shape)
    else:
        noise = rng.normal(size=x.shape)
        noise *= eps / np.linalg.norm(noise.reshape(len(x), -1), axis=1).reshape(-1, *([1] * (x.ndim - 1)))
    return clf.accuracy(np.clip(x + noise.astype(np.float32), 0, 1), y)


@pytest.mark.parametrize(
    "name, params, norm, eps",
    [
        ("square", {"max_iter": 200}, np.inf, EPS),
        ("autoattack", {"max_iter": 10, "n_queries": 100}, np.inf, EPS),
        ("autoattack", {"version": "fast", "max_iter": 10}, np.inf, EPS),
        ("fab", {"max_iter": 20, "n_target_classes": 3}, np.inf, EPS),
        ("cw", {"norm": "inf", "max_iter": 5, "learning_rate": 0.05}, np.inf, EPS),
        (
            "cw",
            {"norm": "2", "max_iter": 30, "learning_rate": 0.1, "binary_search_steps": 4, "initial_const": 1.0},
            2,
            1.5,
        ),
    ],
)
def test_attack_beats_noise_and_stays_in_bounds(trained, batch, name, params, norm, eps):
    x, y = batch
    if name == "cw" and norm == np.inf:  # ART's C&W L-inf runs one sample at a time, about a second each:
        x, y = x[:10], y[:10]  # 10 of them (accuracy 0.6 vs 0.9 under noise, as on all 20 and on the other 10)
    x_adv = sd.get_attack(name, trained, eps=eps, **params).generate(x, y)
    delta = (x_adv - x).reshape(len(x), -1)
    dist = np.abs(delta).max(1) if norm == np.inf else np.linalg.norm(delta, axis=1)
    assert dist.max() <= eps * (1 + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    adv, noise = trained.accuracy(x_adv, y), noise_accuracy(trained, x, y, eps, norm)
    assert adv < noise - 0.2, (adv, noise)


@pytest.mark.parametrize(
    "version, expected",
    [("standard", ["apgd-ce", "apgd-t", "fab-t", "square"]), ("fast", ["apgd-ce", "apgd-dlr", "deepfool", "square"])],
)
def test_autoattack_runs_croce_and_heins_components_on_images(trained, version, expected):
    assert sd.get_attack("autoattack", trained, eps=EPS, version=version).components == expected


def test_cw_scored_within_budget_reverts_far_examples(trained, batch):
    x, y = batch
    tight = sd.get_attack("cw", trained, norm="2", eps=1e-4, max_iter=5).generate(x, y)
    np.testing.assert_array_equal(tight, x)  # nothing fits in a tiny L2 ball: every sample reverted


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("square", {"eps": 0}, "eps must be a positive number"),
        ("square", {"max_iter": -3}, "max_iter must be a positive number"),
        ("autoattack", {"norm": "l1"}, "norm must be one of"),
        ("autoattack", {"version": "plus"}, "version must be one of standard, fast"),
        ("autoattack", {"n_target_classes": 10}, "n_target_classes must be at most nb_classes - 1 = 9"),
        ("fab", {"beta": 1.0}, "beta must be in"),
        ("fab", {"eta": 0.5}, "eta must be"),
        ("cw", {"confidence": -1}, "confidence must be a number >= 0"),
        ("cw", {"eps_step": 0.1}, "unknown parameter"),
    ],
)
def test_bad_parameters(trained, name, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.get_attack(name, trained, **params)
