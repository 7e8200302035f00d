"""audio-autoattack, the final evaluation's ensemble for waveforms: every component stays in its own
ball (L-inf eps or the clip's SNR ball), the breakdown only falls, the worst case is at most every
attack run, the score-based component finds what masked gradients hide, and an attack written
without this toolkit's code (examples/independent_pgd.py) finds no more than it does."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier

import ssmdefense as sd
from ssmdefense.attacks._common import perturbation_snr_db
from ssmdefense.evaluation.robustness import aa_attack, autoattack_check
from test_attacks_audio import T, tone_classifier, tones

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from independent_pgd import margin_pgd  # noqa: E402

EPS, SNR = 0.01, 30.0
QUICK = {"max_iter": 20, "n_queries": 300, "n_target_classes": 3}  # standard's components, fewer steps


@pytest.fixture(scope="module")
def clf():
    """The tiny S4D with the mel front end, adversarially trained on the tones (robust to part of the ball)."""
    return tone_classifier("pgd-at", epochs=4, eps=EPS, max_iter=3)


@pytest.fixture(scope="module")
def batch():
    return tones(40, 2)


@pytest.fixture(scope="module")
def checked(clf, batch):
    """``autoattack_check`` on the batch, as the final evaluation runs it (read by two tests below)."""
    x, y = batch
    return autoattack_check(clf, x, y, eps=EPS, snr_db=SNR, params=QUICK)


def test_components_stay_in_their_balls_and_the_breakdown_only_falls(clf, batch):
    x, y = batch
    attack = sd.get_attack("audio-autoattack", clf, eps=EPS, snr_db=SNR, **QUICK)
    assert attack.components == ["apgd-ce", "apgd-t", "square-1d", "snr-apgd-ce", "snr-apgd-t"]
    x_adv = attack.generate(x, y)
    steps = [b["robust_accuracy"] for b in attack.breakdown]
    assert [b["component"] for b in attack.breakdown] == ["clean", *attack.components]
    assert all(a >= b for a, b in zip(steps, steps[1:])) and steps[-1] < steps[0]
    assert steps[-1] == pytest.approx((clf.predict(x_adv).argmax(1) == y).mean())
    moved = np.flatnonzero(np.abs(x_adv - x).reshape(len(x), -1).max(1) > 0)
    assert moved.size and x_adv.min() >= -1 and x_adv.max() <= 1
    linf = np.abs(x_adv - x).reshape(len(x), -1).max(1) <= EPS + 1e-7  # (N) in the L-inf ball
    snr = perturbation_snr_db(x, x_adv) >= SNR - 1e-6  # (N) in the SNR ball
    assert (linf | snr).all()  # every perturbed clip in one of the two balls
    # the L-inf components ran first: what they broke is in the L-inf ball
    broken_by_linf = ~attack.robust_after["square-1d"] & attack.robust_after["clean"]
    assert linf[broken_by_linf].all()


def test_the_final_evaluation_reports_worst_case_and_linf_figure(clf, checked):
    assert aa_attack(clf) == "audio-autoattack"
    r = checked
    assert r["attack"] == "audio-autoattack" and r["snr_db"] == SNR and r["samples"] == 40
    ra = r["robust_accuracy"]
    assert set(ra) == {"fgsm", "pgd-10", "audio-autoattack"}
    assert r["worst_case"] <= min(ra.values()) and r["worst_case"] <= r["linf_worst_case"]
    assert r["linf_worst_case"] <= min(ra["fgsm"], ra["pgd-10"])
    assert r["breakdown"][-1]["robust_accuracy"] == ra["audio-autoattack"] and r["seconds"] > 0


def test_an_independent_attack_finds_no_more_than_the_ensemble(clf, batch, checked):
    """examples/independent_pgd.py's margin PGD (plain torch, 20 steps, 2 restarts) in both balls."""
    x, y = batch
    r = checked
    in_linf, _ = margin_pgd(clf.model, x, y, eps=EPS, clip=(-1.0, 1.0), steps=20, restarts=2)
    in_snr, ratio = margin_pgd(clf.model, x, y, eps=EPS, clip=(-1.0, 1.0), steps=20, restarts=2, snr_db=SNR)
    assert ratio <= 1.0 + 1e-6
    assert r["linf_worst_case"] <= in_linf.mean() + 0.05  # 2 clips of 40
    assert r["worst_case"] <= (in_linf & in_snr).mean() + 0.05


class Masked(torch.nn.Module):
    """A model whose input gradient is zero: the waveform is quantised (round) before the classifier,
    the obfuscated-gradient defence gradient attacks cannot see through."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 256) / 256)


def test_square_finds_what_masked_gradients_hide(clf, batch):
    x, y = batch
    masked = PyTorchClassifier(
        Masked(clf.model),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, T),
        nb_classes=10,
        clip_values=(-1.0, 1.0),
        device_type="cpu",
    )
    clean = (masked.predict(x).argmax(1) == y).mean()
    attack = sd.get_attack("audio-autoattack", masked, eps=0.1, snr_db=10.0, **QUICK)
    attack.generate(x, y)
    after = {b["component"]: b["robust_accuracy"] for b in attack.breakdown}
    assert after["apgd-ce"] > clean - 0.2  # no gradient: APGD breaks only what its random start does
    assert after["square-1d"] < after["apgd-t"] - 0.2, after  # the score-based search breaks much more


def test_fast_version_and_bad_parameters(clf, batch):
    x, y = batch
    fast = sd.get_attack("audio-autoattack", clf, eps=EPS, version="fast", max_iter=5, n_queries=20)
    assert fast.n_target_classes == 3 and fast.generate(x[:8], y[:8]).shape == (8, 1, T)
    for params, match in (
        ({"version": "strong"}, "version must be one of standard, fast"),
        ({"eps": -1.0}, "eps must be"),
        ({"snr_db": float("inf")}, "snr_db must be"),
        ({"n_target_classes": 10}, "n_target_classes must be at most nb_classes - 1 = 9"),
    ):
        with pytest.raises(sd.SSMDefenseError, match=match):
            sd.get_attack("audio-autoattack", clf, **params)
    images = sd.SSMClassifier(
        sd.build_model("s4d", d_input=8, n_classes=10, d_model=8, n_layers=1),
        input_shape=(1, 8, 8),
        nb_classes=10,
        sequence="rows",
        clip_values=(0.0, 1.0),
    )
    with pytest.raises(sd.SSMDefenseError, match="needs waveform input"):
        sd.get_attack("audio-autoattack", images)
    assert aa_attack(images) == "autoattack"
