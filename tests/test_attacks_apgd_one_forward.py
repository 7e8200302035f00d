"""The ensembles' APGD (``attacks/_apgd.py``): ART's x_adv bit for bit, with one forward pass per
iteration instead of two."""

import numpy as np
import pytest
import torch
from art.attacks.evasion import AutoProjectedGradientDescent

import ssmdefense as sd
from ssmdefense.attacks._apgd import LossGraphClassifier, OneForwardAPGD
from ssmdefense.modes import weights_frozen


def forwards(clf, run):
    """(what run() returns, how many forward passes the model made)."""
    calls = []
    handle = clf.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        return run(), len(calls)
    finally:
        handle.remove()


def both(clf, x, y, **params):
    """x_adv and forward passes of ART's APGD and of OneForwardAPGD, from the same random state."""
    out = {}
    for name, cls in (("art", AutoProjectedGradientDescent), ("one", OneForwardAPGD)):
        np.random.seed(0)
        attack = cls(clf, batch_size=64, nb_random_init=1, verbose=False, **params)
        with weights_frozen(clf.model):  # as the ensembles run it
            out[name] = forwards(clf, lambda a=attack: a.generate(x, np.eye(10, dtype=np.float32)[y]))
    return out


@pytest.mark.parametrize(
    "params",
    [
        {"norm": np.inf, "eps": 0.1, "eps_step": 0.2, "loss_type": "cross_entropy"},
        {"norm": 2, "eps": 1.0, "eps_step": 2.0, "loss_type": "cross_entropy"},
        {"norm": np.inf, "eps": 0.1, "eps_step": 0.2, "loss_type": "difference_logits_ratio"},
    ],
    ids=["linf-ce", "l2-ce", "linf-dlr"],
)
def test_one_forward_apgd_gives_arts_examples_with_fewer_forward_passes(trained, digits, params):
    x, y = digits.x_test[:64], digits.y_test[:64]
    out = both(trained, x, y, max_iter=20, **params)
    (art_adv, art_calls), (one_adv, one_calls) = out["art"], out["one"]
    assert np.array_equal(one_adv, art_adv)
    assert trained.accuracy(one_adv, y) < trained.accuracy(x, y) - 0.2  # the attack works
    # ART: 2 per iteration plus a few predictions (43 here); this one: 1 per iteration, and 2 at the
    # checkpoints where APGD moved some points back to their best (30 here)
    assert art_calls >= 2 * 20
    assert one_calls < 0.75 * art_calls


def test_targeted_dlr_apgd_is_arts_on_a_mamba(digits):
    """A model with custom autograd kernels (the Numba selective scan), targeted DLR as in APGD-T."""
    torch.manual_seed(0)
    body = sd.build_model("mamba", d_input=8, n_classes=10, d_model=8, n_layers=1, d_state=4)
    clf = sd.SSMClassifier(body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0))
    x, y = digits.x_test[:16], (digits.y_test[:16] + 1) % 10  # targets
    out = both(clf, x, y, norm=np.inf, eps=0.2, eps_step=0.4, max_iter=10, targeted=True,
               loss_type="difference_logits_ratio")  # fmt: skip
    assert np.array_equal(out["one"][0], out["art"][0])
    assert out["one"][1] < out["art"][1]


def test_loss_gradient_at_another_point_recomputes(trained, digits):
    """A gradient asked at points other than the last compute_loss's is computed afresh, not reused."""
    attack = OneForwardAPGD(trained, norm=np.inf, eps=0.1, eps_step=0.2, loss_type="cross_entropy")
    est = attack.estimator
    assert isinstance(est, LossGraphClassifier)
    x, y = digits.x_test[:8], np.eye(10, dtype=np.float32)[digits.y_test[:8]]
    est.compute_loss(x, y)
    other = np.clip(x + 0.05, 0, 1).astype(np.float32)
    fresh = AutoProjectedGradientDescent(trained, norm=np.inf, eps=0.1, eps_step=0.2, loss_type="cross_entropy")
    assert np.array_equal(est.loss_gradient(other, y), fresh.estimator.loss_gradient(other, y))
    est.compute_loss(x, y)
    assert np.array_equal(est.loss_gradient(x, y), fresh.estimator.loss_gradient(x, y))
    assert est._kept is None  # used once, then dropped
