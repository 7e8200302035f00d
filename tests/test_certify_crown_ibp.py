"""CROWN-IBP (``crown.margin_bounds(..., ibp_nodes=True)``) and the training built on it
(``--defense crown-ibp``), and the interval margins ``ibp`` trains and certifies with: every bound
contains the margins of 10,000 random points of the box, the cheap grid lines stay below and above
the function, and a digit it certifies survives a hard attack (its training: ``test_certify_ibp.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ssmdefense as sd
from conftest import assert_survives_margin_pgd, tiny_lstm
from ssmdefense.certification import crown, ibp
from ssmdefense.errors import SSMDefenseError

SHAPE = (1, 8, 8)  # digits
TOL = 1e-4  # the model runs in float32


def classifier(name: str, ads: str | None = None, **kw) -> sd.SSMClassifier:
    torch.manual_seed(0)
    sizes = {"d_hidden": 16} if name == "mlp" else {"d_model": 16, "n_layers": 2, "ads": ads}
    body = sd.build_model(name, d_input=8, n_classes=10, **{**sizes, **kw})
    return sd.SSMClassifier(body, input_shape=SHAPE, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0))


def random_margins(model, lower, upper, y, n=10_000) -> torch.Tensor:
    """logit_y − logit_j (n, N, C) at ``n`` random points of each box."""
    with torch.no_grad():
        points = lower + (upper - lower) * torch.rand((n, *lower.shape))  # (n N 1 8 8)
        logits = model(points.flatten(0, 1).float()).view(n, len(y), -1).double()  # (n N C)
    return logits.gather(2, y[None, :, None].expand(n, -1, 1)) - logits


@pytest.mark.parametrize(
    "name,ads,norm", [("s4d", "relu", "layer"), ("s4d", None, "centre"), ("dss", "tanh", "layer"), ("mlp", None, None)]
)
def test_crown_ibp_and_interval_margins_contain_every_random_point(name, ads, norm):
    clf = classifier(name, ads, **({"norm": norm} if norm else {}))
    x = torch.from_numpy(np.random.default_rng(0).random((3, *SHAPE))).float()  # (3 1 8 8)
    y = clf.model(x).argmax(1)
    lower, upper = (x - 0.03).clamp(0, 1), (x + 0.03).clamp(0, 1)
    seen = random_margins(clf.model, lower, upper, y)  # (10000 3 C)
    both = crown.margin_bounds(clf.model, lower, upper, y, ibp_nodes=True)  # (3 C) +inf at y
    boxed = ibp.margin_lower_bounds(clf.model, lower, upper, y)  # (3 C) 0 at y
    lo, hi = ibp.logit_bounds(clf.model, lower, upper)  # (3 C) each
    apart = lo.gather(1, y[:, None]) - hi  # (3 C) the margins from the logits' own boxes
    wrong = ~F.one_hot(y, 10).bool()
    assert (seen >= both.masked_fill(~wrong, -torch.inf) - TOL).all()
    assert (seen >= boxed - TOL).all()
    assert (boxed[wrong] >= apart[wrong] - 1e-9).all()  # eliding the head never loosens the margins
    assert torch.isfinite(both[wrong]).all()


def test_the_training_bounds_carry_gradients_and_agree_with_float64():
    clf = classifier("s4d", "relu")
    x = torch.from_numpy(np.random.default_rng(1).random((4, *SHAPE))).float()
    y = torch.tensor([0, 1, 2, 3])
    lower, upper = (x - 0.02).clamp(0, 1), (x + 0.02).clamp(0, 1)
    trained = crown.margin_bounds(clf.model, lower, upper, y, ibp_nodes=True, train=True)  # (4 C) float32
    assert trained.dtype == torch.float32
    wrong = ~F.one_hot(y, 10).bool()
    trained[wrong].sum().backward()
    assert clf.model.body.encoder.weight.grad.abs().sum() > 0
    exact = crown.margin_bounds(clf.model, lower, upper, y, ibp_nodes=True)  # float64, no gradients
    assert torch.allclose(trained[wrong].double(), exact[wrong], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["gelu", "sigmoid", "tanh"])
def test_the_grid_lines_stay_below_and_above_the_function_and_near_the_exact_ones(name):
    g = torch.Generator().manual_seed(0)
    lo = torch.randn(2000, generator=g, dtype=torch.float64) * 3  # (2000)
    hi = lo + torch.rand(2000, generator=g, dtype=torch.float64) * torch.tensor([0.01, 1.0, 8.0]).repeat(667)[:2000]
    a, b_l, _, b_u = crown.smooth_relaxation(name, lo, hi, exact=False)
    x = lo + (hi - lo) * torch.linspace(0, 1, 1001, dtype=torch.float64)[:, None]  # (1001 2000)
    f = crown.SMOOTH[name][0](x)
    assert (f >= a * x + b_l - 1e-12).all() and (f <= a * x + b_u + 1e-12).all()
    _, e_l, _, e_u = crown.smooth_relaxation(name, lo, hi)  # the exact, touching lines
    assert ((e_l - b_l) <= 0.01 * (hi - lo) ** 2 + 1e-9).all() and ((b_u - e_u) <= 0.01 * (hi - lo) ** 2 + 1e-9).all()


def test_the_crown_ibp_schedule_and_its_refusals(trained):
    trainer = sd.get_defense("crown-ibp", trained, eps=0.1, beta=0.2, warmup=0.2, ramp=0.4, verbose=False)
    assert trainer.schedule(0.4) == pytest.approx((0.05, 0.5))  # kappa falls from 1 to its default 0
    assert 1 - trainer.ramped(0.4) * (1 - trainer.beta) == pytest.approx(0.6)  # beta half way from 1 to 0.2
    with pytest.raises(ValueError, match="beta"):
        sd.get_defense("crown-ibp", trained, beta=1.5)
    with pytest.raises(SSMDefenseError, match="cannot bound the model RNNClassifier"):
        sd.get_defense("crown-ibp", tiny_lstm())


def test_a_digit_certified_by_crown_ibp_survives_a_hard_attack_and_it_certifies_more_than_ibp(digits):
    from conftest import make_classifier

    trained = make_classifier(digits)  # interval bounds through a standard-trained model certify nothing
    sd.get_defense("ibp", trained, eps=0.03, lr=1e-2, verbose=False).fit(digits.x_train, digits.y_train, nb_epochs=6)
    x, y = digits.x_test[:60], digits.y_test[:60]
    eps = 0.01
    result = sd.certify(trained, x, y, method="crown-ibp", eps=eps)
    certified = np.array(result["certified"])
    assert result["method"] == "crown-ibp" and certified.any()
    assert result["certified_accuracy"] > sd.certify(trained, x, y, method="ibp", eps=eps)["certified_accuracy"]
    xc, yc = torch.from_numpy(x[certified]), torch.from_numpy(y[certified]).long()
    assert_survives_margin_pgd(trained.model, xc, yc, eps, restarts=3)
