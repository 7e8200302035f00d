"""Weight decay spares the SSM parameters the reference implementations exempt (ssmdefense.optim)."""

import copy

import pytest
import torch

import ssmdefense as sd
from conftest import make_classifier
from ssmdefense.optim import exempt_parameters

EXEMPT = {
    "s4": {"log_dt", "log_Lambda_re", "Lambda_im", "P", "B"},
    "s4d": {"log_dt", "log_A_real", "A_imag"},
    "dss": {"log_dt", "log_Lambda_re", "Lambda_im"},
    "s5": {"log_dt", "Lambda_re", "Lambda_im", "B"},
    "mamba": {"A_log", "D"},
    "mega": set(),
    "lstm": set(),
}


@pytest.mark.parametrize("name", sorted(EXEMPT))
def test_each_model_exempts_its_reference_ssm_parameters(name):
    model = sd.build_model(name, d_input=8, n_classes=10, d_model=16, n_layers=2)
    exempt = exempt_parameters(model)
    assert {n.rsplit(".", 1)[-1] for n in exempt} == EXEMPT[name]
    if exempt:  # one set per layer, and a deep copy (cost.py times copies) keeps it
        assert len(exempt) == 2 * len(EXEMPT[name])
        assert exempt_parameters(copy.deepcopy(model)) == exempt


def decayed(trainer) -> dict[str, bool]:
    """Which parameters one AdamW step with zero gradients changed: only weight decay moves them."""
    model = trainer._classifier.model
    optimizer, _ = trainer.configure_optimizers(model, total_steps=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return {n: not torch.equal(before[n], p.detach()) for n, p in model.named_parameters()}


def test_training_loop_decays_everything_but_the_ssm_parameters(digits):
    clf = make_classifier(digits)
    moved = decayed(sd.get_defense("none", clf, lr=0.1, weight_decay=0.5, verbose=False))
    exempt = set(exempt_parameters(clf.model))
    assert exempt and all(not moved[n] for n in exempt)
    assert any(moved[n] for n in moved if n not in exempt)  # the rest is decayed


def test_ssm_weight_decay_overrides_the_exemption(digits):
    clf = make_classifier(digits)
    trainer = sd.get_defense("pgd-at", clf, lr=0.1, weight_decay=0.5, ssm_weight_decay=0.5, verbose=False)
    moved = decayed(trainer)
    assert all(moved[n] for n in exempt_parameters(clf.model))
    assert trainer.describe()["ssm_weight_decay"] == 0.5


def test_negative_ssm_weight_decay_is_refused(digits):
    with pytest.raises(ValueError, match="ssm_weight_decay"):
        sd.get_defense("none", make_classifier(digits), ssm_weight_decay=-1.0)
