"""The gradient-masking checks on audio: an adversarially trained model with the mel front end is
not flagged (the dB floor does not mask its gradients), a masked one still is."""

import sys
from pathlib import Path

import pytest

from ssmdefense.evaluation.sanity import gradient_masking_checks
from test_attacks_audio import tone_classifier, tones

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from gradient_masking import masked  # the example's masked models

EPS = 0.01  # L-inf on waveforms of amplitude 0.2 .. 0.6: 26 .. 36 dB worst-case SNR


@pytest.fixture(scope="module")
def at_model():
    """The tiny S4D + mel front end trained by PGD-AT (3 steps: 5 cost 1.7x as much and gave the same
    verdicts) on synthetic tones."""
    return tone_classifier("pgd-at", epochs=5, eps=EPS, max_iter=3)


@pytest.fixture(scope="module")
def batch():
    """50 test tones: the checks' cost grows with them, and the verdicts are as clear as on 100 (the
    trained model: PGD-10 0.76, PGD-50 0.64, noise 1.0, all checks passed; masked: loss_rises fails)."""
    x, y = tones(100, 1)
    return x[:50], y[:50]


def test_an_adversarially_trained_audio_model_passes_the_masking_checks(at_model, batch):
    x, y = batch
    assert at_model.accuracy(x, y) > 0.6
    result = gradient_masking_checks(at_model, x, y, eps=EPS)
    verdicts = {c["name"]: c["passed"] for c in result["checks"]}
    assert all(verdicts.values()), [c["detail"] for c in result["checks"]]
    black_box = next(c for c in result["checks"] if c["name"] == "black_box_not_stronger")
    assert black_box["values"]["attack"] == "square-1d" and black_box["detail"].startswith("Square-1D (300 queries")
    assert result["gradient_masking_suspected"] is False


def test_a_masked_audio_model_is_still_flagged(at_model, batch):
    x, y = batch
    saturated = masked(at_model, "saturated-softmax")
    assert saturated.accuracy(x, y) == at_model.accuracy(x, y)  # same predictions, masked gradients
    result = gradient_masking_checks(saturated, x, y, eps=EPS)
    assert result["gradient_masking_suspected"] is True
    failed = {c["name"] for c in result["checks"] if c["passed"] is False}
    assert "loss_rises" in failed
