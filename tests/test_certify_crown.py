"""CROWN's backward linear bounds (``ssmdefense.certification.crown``): they contain the logits of
10,000 random points and of PGD on each wrong class's margin, they are exact for a purely linear
model and first-order tight for a real one, they hold over shapes, lengths and eps (hypothesis),
a certified digit survives a hard independent attack, and what they cannot bound is refused by name."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssmdefense as sd
from conftest import assert_survives_margin_pgd
from ssmdefense.certification import crown, ibp
from ssmdefense.errors import SSMDefenseError

SHAPE = (1, 8, 8)  # digits
TOL = 1e-4  # the model runs in float32, the bounds in float64


def classifier(name: str, ads: str | None = None, seed: int = 0, shape=SHAPE, sequence="rows", **kw):
    torch.manual_seed(seed)
    d_input = shape[2] * shape[0] if sequence == "rows" else shape[0]
    sizes = {"d_hidden": 16} if name == "mlp" else {"d_model": 16, "n_layers": 2, "ads": ads}
    body = sd.build_model(name, d_input=d_input, n_classes=10, **{**sizes, **kw})
    return sd.SSMClassifier(body, input_shape=shape, nb_classes=10, sequence=sequence, clip_values=(0.0, 1.0))


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit_y − logit_j (N, C)."""
    return logits.gather(1, y[:, None]) - logits


@pytest.mark.parametrize(
    "name,ads,norm",
    [("s4d", None, None), ("s4d", "relu", None), ("s4d", "relu", "centre"), ("dss", "tanh", None)]
    + [("s4", "sigmoid", None), ("mlp", None, None)],
)
def test_bounds_contain_random_points_and_pgd_on_every_margin(name, ads, norm):
    clf, rng = classifier(name, ads, **({"norm": norm} if norm else {})), np.random.default_rng(0)
    x = torch.from_numpy(rng.random((2, *SHAPE))).float()  # (2 1 8 8)
    y = clf.model(x).argmax(1)
    eps = 0.05
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    lo, hi = crown.logit_bounds(clf.model, lower, upper)  # (2 10) each
    floor = crown.margin_bounds(clf.model, lower, upper, y)  # (2 10), +inf at the predicted class
    assert floor.gather(1, y[:, None]).isinf().all()
    floor = floor.masked_fill(floor.isinf(), -torch.inf)  # the margin there is 0: nothing to bound
    with torch.no_grad():
        for _ in range(5):  # 10,000 random points of each box
            points = lower + (upper - lower) * torch.rand((2000, *x.shape))  # (2000 2 1 8 8)
            logits = clf.model(points.flatten(0, 1)).view(2000, 2, 10).double()
            assert (logits >= lo - TOL).all() and (logits <= hi + TOL).all()
            assert (margins(logits.flatten(0, 1), y.repeat(2000)).view(2000, 2, 10) >= floor - TOL).all()
    for j in range(10):  # PGD pushing each wrong class over the predicted one
        z = x.clone()
        for _ in range(30):
            z.requires_grad_(True)
            (g,) = torch.autograd.grad(-margins(clf.model(z), y)[:, j].sum(), z)
            z = torch.minimum(torch.maximum(z + 0.01 * g.sign(), lower), upper).detach()
        with torch.no_grad():
            reached = margins(clf.model(z).double(), y)[:, j]
        assert (reached >= floor[:, j] - TOL).all()


def test_a_purely_linear_model_is_bounded_exactly():
    clf = classifier("s4d")
    body = clf.model.body
    steps = [crown.Affine(body.encoder), crown.Convolve(body.blocks[0].mixer, 8), crown.Affine(body.head)]
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((2, 8, 8)))  # (N L D) a sequence of rows
    lower, upper = x - 0.1, x + 0.1
    A = torch.eye(10, dtype=torch.float64).expand(2, 10, 10)[:, :, None, :].expand(2, 10, 8, 10)  # (N C L C)
    low = crown.concretize(*crown.back(steps, A.contiguous()), lower, upper)  # (N C) min of Σ_t head(...)_c
    coef, _ = crown.back(steps, A.contiguous())  # (N C L D) the map's own coefficients
    corner = torch.where(coef < 0, upper[:, None], lower[:, None])  # (N C L D) the minimising vertex
    with torch.no_grad():
        mixer = body.blocks[0].mixer
        for c in range(10):
            h = mixer(body.encoder(corner[:, c].float()))  # (N L H)
            reached = body.head(h).double()[:, :, c].sum(1)  # (N)
            assert torch.allclose(reached, low[:, c], rtol=1e-4, atol=1e-4)  # attained: exact


@pytest.mark.parametrize("name,ads", [("s4d", "relu"), ("dss", None)])
def test_bounds_are_first_order_tight_in_small_boxes(name, ads):
    clf = classifier(name, ads)
    x = torch.from_numpy(np.random.default_rng(2).random((2, *SHAPE))).float()
    eps = 1e-4
    lo, hi = crown.logit_bounds(clf.model, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1))
    z = x.clone().requires_grad_(True)
    logits = clf.model(z)
    linear = torch.stack(
        [torch.autograd.grad(logits[:, c].sum(), z, retain_graph=True)[0].abs().flatten(1).sum(1) for c in range(10)],
        1,
    )  # (2 10) the linearised half-width per unit eps
    assert ((hi - lo) / 2 <= 1.1 * eps * linear.double() + 1e-7).all()  # within 10 % of the gradient's
    ilo, ihi = ibp.logit_bounds(clf.model, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1))
    assert ((hi - lo) < (ihi - ilo)).all()  # and tighter than intervals


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    rows=st.integers(2, 6),
    width=st.integers(1, 5),
    d_model=st.integers(2, 8),
    layers=st.integers(1, 2),
    ads=st.sampled_from([None, "relu", "sigmoid", "tanh"]),
    norm=st.sampled_from(["layer", "centre"]),
    eps=st.floats(1e-4, 0.3),
    seed=st.integers(0, 1000),
)
def test_bounds_hold_over_shapes_lengths_and_eps(rows, width, d_model, layers, ads, norm, eps, seed):
    torch.manual_seed(seed)
    body = sd.build_model("s4d", d_input=width, n_classes=3, d_model=d_model, n_layers=layers, ads=ads, norm=norm)
    clf = sd.SSMClassifier(body, input_shape=(1, rows, width), nb_classes=3, sequence="rows", clip_values=(0, 1))
    x = torch.rand((2, 1, rows, width))
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    lo, hi = crown.logit_bounds(clf.model, lower, upper)
    with torch.no_grad():
        points = torch.cat([x[None], lower + (upper - lower) * torch.rand((500, *x.shape))])  # (501 2 1 r w)
        logits = clf.model(points.flatten(0, 1)).view(501, 2, 3).double()
    assert (logits >= lo - TOL).all() and (logits <= hi + TOL).all()


def test_a_certified_digit_survives_a_hard_attack_and_crown_certifies_more_than_ibp(trained, digits):
    x, y = digits.x_test[:60], digits.y_test[:60]
    eps = 0.01
    result = sd.certify(trained, x, y, method="crown", eps=eps)
    certified = np.array(result["certified"])
    assert result["certified_accuracy"] > sd.certify(trained, x, y, method="ibp", eps=eps)["certified_accuracy"]
    assert certified.any()
    xc, yc = torch.from_numpy(x[certified]), torch.from_numpy(y[certified]).long()
    assert_survives_margin_pgd(trained.model, xc, yc, eps, restarts=5)


@pytest.mark.parametrize("method", ["ibp", "crown"])
@pytest.mark.parametrize("name", ["mamba", "lstm"])
def test_a_layer_that_cannot_be_bounded_is_named(name, method):
    torch.manual_seed(0)
    body = sd.build_model(name, d_input=8, n_classes=10, d_model=8, **({"n_layers": 1} if name == "mamba" else {}))
    clf = sd.SSMClassifier(body, input_shape=SHAPE, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0))
    x, y = np.zeros((1, *SHAPE), np.float32), np.zeros(1, np.int64)
    named = "layer blocks.0.mixer (MambaMixer)" if name == "mamba" else "the model RNNClassifier"
    with pytest.raises(SSMDefenseError, match=re.escape(f"{method} cannot bound {named}")):
        sd.certify(clf, x, y, method=method, eps=0.01)


def test_pixel_sequences_are_refused_with_the_memory_they_would_need():
    clf = classifier("s4d", shape=(1, 28, 28), sequence="pixels")
    x, y = np.zeros((1, 1, 28, 28), np.float32), np.zeros(1, np.int64)
    with pytest.raises(SSMDefenseError, match=r"crown needs about \d+ GiB a sample.*rows.*ibp.*smoothing"):
        sd.certify(clf, x, y, method="crown", eps=0.01)


def test_the_boundable_normalisation_is_a_model_option():
    clf = classifier("s4d", "relu", norm="centre")
    assert all(type(b.norm).__name__ == "CentreNorm" for b in clf.model.body.blocks)
    x = torch.from_numpy(np.random.default_rng(4).random((2, *SHAPE))).float()
    lower, upper = (x - 0.01).clamp(0, 1), (x + 0.01).clamp(0, 1)
    centre = crown.logit_bounds(clf.model, lower, upper)
    with torch.no_grad():
        assert (clf.model(x).double() >= centre[0] - TOL).all() and (clf.model(x).double() <= centre[1] + TOL).all()
    with pytest.raises(ValueError, match="norm must be one of layer, centre; got 'batch'"):
        classifier("s4d", norm="batch")
