"""Built-in attacks: accuracy falls, perturbations stay in the eps-ball and the clip range."""

import numpy as np
import pytest
from art.attacks import EvasionAttack

import ssmdefense as sd

EPS = 0.1


@pytest.fixture(scope="module")
def batch(digits):
    return digits.x_test[:200], digits.y_test[:200]


def noise_accuracy(clf, x, y, eps):
    """Accuracy under the ``noise`` baseline: uniform random noise in the L-inf eps-ball."""
    return clf.accuracy(sd.get_attack("noise", clf, eps=eps, seed=0).generate(x), y)


@pytest.mark.parametrize(
    "name, params",
    [
        ("fgsm", {}),
        ("fgsm", {"random_start": True}),
        ("pgd", {"max_iter": 10}),
        ("pgd", {"max_iter": 5, "num_random_init": 2}),
        ("pgd", {"max_iter": 10, "loss": "margin"}),
    ],
)
def test_attack_lowers_accuracy_below_noise_and_stays_in_bounds(trained, batch, name, params):
    x, y = batch
    attack = sd.get_attack(name, trained, eps=EPS, **params)
    assert isinstance(attack, EvasionAttack)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    clean = trained.accuracy(x, y)
    noise = noise_accuracy(trained, x, y, EPS)
    adv = trained.accuracy(x_adv, y)
    assert clean > 0.85
    assert adv < noise - 0.2, (clean, noise, adv)


def test_pgd_is_at_least_as_strong_as_fgsm(trained, batch):
    x, y = batch
    fgsm = trained.accuracy(sd.get_attack("fgsm", trained, eps=EPS).generate(x, y), y)
    pgd = trained.accuracy(sd.get_attack("pgd", trained, eps=EPS, max_iter=20).generate(x, y), y)
    assert pgd <= fgsm


def test_l2_pgd_stays_in_the_l2_ball(trained, batch):
    x, y = batch
    x_adv = sd.get_attack("pgd", trained, eps=0.5, norm="2", max_iter=10).generate(x, y)
    norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)
    assert norms.max() <= 0.5 + 1e-5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert trained.accuracy(x_adv, y) < trained.accuracy(x, y)


def test_l2_pgd_restarts_stay_in_the_ball_and_keep_every_success_of_the_first(trained, batch):
    """ART keeps a restart's example only where it succeeds, so with the same first random start
    (same seed, and one batch: ART runs the restarts inside its batch loop) every sample broken
    by one restart stays broken with three."""
    x, y = batch
    fooled = {}
    for restarts in (1, 3):
        np.random.seed(0)  # ART draws the random starts from NumPy's global generator
        attack = sd.get_attack(
            "pgd", trained, eps=0.5, norm="2", max_iter=5, num_random_init=restarts, batch_size=len(x)
        )
        x_adv = attack.generate(x, y)
        norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)
        assert norms.max() <= 0.5 * (1 + 1e-5)
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        fooled[restarts] = trained.predict(x_adv).argmax(1) != y
    assert fooled[1].any()
    assert not (fooled[1] & ~fooled[3]).any()  # hence accuracy(3 restarts) <= accuracy(1 restart)


def test_targeted_pgd_reaches_the_target_labels(trained, batch):
    x, y = batch
    target = (y + 1) % 10  # never the true class
    x_adv = sd.get_attack("pgd", trained, eps=0.3, max_iter=10, targeted=True).generate(x, target)
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-6
    pred = trained.predict(x_adv).argmax(1)
    assert (pred == target).mean() > 0.5
    assert trained.accuracy(x_adv, y) < 0.5


def test_attacks_accept_one_hot_labels(trained, batch):
    x, y = batch
    one_hot = np.eye(10, dtype=np.float32)[y]
    x_adv = sd.get_attack("pgd", trained, eps=EPS).generate(x, one_hot)
    assert trained.accuracy(x_adv, y) < trained.accuracy(x, y)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("fgsm", {"eps": -0.1}, "eps must be a positive number"),
        ("pgd", {"eps": 0}, "eps must be a positive number"),
        ("pgd", {"max_iter": 0}, "max_iter must be a positive number"),
        ("pgd", {"norm": "l3"}, "norm must be one of"),
        ("pgd", {"num_random_init": -1}, "num_random_init must be an integer"),
        ("pgd", {"steps": 10}, "unknown parameter.*accepted: .*max_iter"),
        ("pgd", {"loss": "hinge"}, "loss must be one of ce, margin"),
    ],
)
def test_bad_attack_parameters(trained, name, params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.get_attack(name, trained, **params)


def test_margin_loss_is_the_cw_margin_and_pgd_on_it_is_as_strong_as_on_cross_entropy(trained, batch):
    import torch

    from ssmdefense.attacks.losses import MarginLoss
    from ssmdefense.evaluation.robustness import attack_key

    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    # sample 0: true class 0, best other 5 -> 3; sample 1: true class 2, best other 0 -> -3
    assert MarginLoss()(logits, torch.tensor([0, 2])).item() == 0.0
    assert MarginLoss()(logits[:1], torch.tensor([[1.0, 0.0, 0.0]])).item() == 3.0  # one-hot labels too
    x, y = batch
    margin = sd.get_attack("pgd", trained, eps=EPS, max_iter=20, loss="margin").generate(x, y)
    ce = sd.get_attack("pgd", trained, eps=EPS, max_iter=20).generate(x, y)
    assert np.abs(margin - x).max() <= EPS + 1e-6 and margin.min() >= 0 and margin.max() <= 1
    assert trained.accuracy(margin, y) <= trained.accuracy(ce, y) + 0.03
    assert trained._loss.__class__.__name__ == "CrossEntropyLoss"  # the classifier itself is untouched
    assert attack_key("pgd", {"max_iter": 20, "loss": "margin"}) == "pgd-20-margin"


def test_square_gives_arts_examples_with_one_forward_pass_per_iteration(trained, batch):
    """Square runs ART's SquareAttack with each iteration's repeated predictions remembered: the same
    adversarial examples as ART's for the same seed, and the model runs on each iteration's new
    candidates only (ART predicts all of x_adv, the robust points, then the candidates)."""
    from art.attacks.evasion import SquareAttack

    x, y = batch[0][:40], batch[1][:40]
    calls = {"ours": 0, "art": 0}
    real = type(trained).predict

    def counted(who):
        def predict(self, x, batch_size=128, **kwargs):
            calls[who] += 1
            return real(self, x, batch_size=batch_size, **kwargs)

        return predict

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(trained), "predict", counted("ours"))
        np.random.seed(5)
        ours = sd.get_attack("square", trained, eps=EPS, max_iter=50).generate(x, y)
        mp.setattr(type(trained), "predict", counted("art"))
        np.random.seed(5)
        arts = SquareAttack(trained, eps=EPS, max_iter=50, p_init=0.8, nb_restarts=1).generate(x, np.eye(10)[y])
    # the same examples up to float rounding: a row's logits can differ in the last bit with the batch
    # it is predicted in (ours predicts the new rows only) on some CPUs, which moved one pixel of 2,560
    # by 6e-8 on one machine; a different choice of the search would move pixels by eps
    np.testing.assert_allclose(ours, arts, rtol=0, atol=1e-6)
    assert calls["ours"] <= 50 + 3 < calls["art"], calls
    assert np.abs(ours - x).max() <= EPS + 1e-6 and ours.min() >= 0 and ours.max() <= 1
    assert trained.accuracy(ours, y) < trained.accuracy(x, y)
