"""Interval bounds through the LTI models and the MLP (``ssmdefense.certification.ibp``): they contain
the logits of random points and of PGD pushing each logit up and down inside the box, they are exact
for the LTI and S5 layers alone, a certified input is never broken by an attack, and a model with a
layer they cannot bound is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ssmdefense as sd
from conftest import tiny_lstm
from ssmdefense.certification.ibp import Box, causal_conv, logit_bounds, lti, s5_kernel, s5_lti
from ssmdefense.errors import SSMDefenseError

SHAPE = (1, 8, 8)  # digits


def classifier(name: str, ads: str | None = None, seed: int = 0) -> sd.SSMClassifier:
    torch.manual_seed(seed)
    size = {"d_hidden": 16} if name == "mlp" else {"d_model": 16, "n_layers": 2, "ads": ads}
    body = sd.build_model(name, d_input=8, n_classes=10, **size)
    return sd.SSMClassifier(body, input_shape=SHAPE, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0))


@pytest.mark.parametrize(
    "name,ads",
    [("s4d", None), ("s4d", "relu"), ("dss", "tanh"), ("s4", "sigmoid"), ("s5", None), ("s5", "relu"), ("mlp", None)],
)
def test_bounds_contain_random_points_and_pgd_on_each_logit(name, ads):
    clf, rng = classifier(name, ads), np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3, *SHAPE))).float()  # (3 1 8 8)
    lower, upper = (x - 0.03).clamp(0, 1), (x + 0.03).clamp(0, 1)
    lo, hi = logit_bounds(clf.model, lower, upper)  # (3 10) each
    tol = 1e-4  # the model runs in float32, the bounds in float64
    with torch.no_grad():
        for _ in range(5):  # 5 x 400 random points of each box
            points = lower + (upper - lower) * torch.rand((400, *x.shape))  # (400 3 1 8 8)
            logits = clf.model(points.flatten(0, 1)).view(400, 3, 10).double()
            assert (logits >= lo - tol).all() and (logits <= hi + tol).all()
    for sign in (1.0, -1.0):  # PGD pushing every logit to its extreme inside the box
        z = x.clone().requires_grad_(True)
        for _ in range(30):
            (g,) = torch.autograd.grad(sign * clf.model(z).sum(), z)
            z = torch.minimum(torch.maximum(z + 0.01 * g.sign(), lower), upper).detach().requires_grad_(True)
        logits = clf.model(z).detach().double()
        assert (logits >= lo - tol).all() and (logits <= hi + tol).all()


def test_the_lti_layer_alone_is_bounded_exactly():
    clf = classifier("s4d")
    mixer = clf.model.body.blocks[0].mixer
    rng = np.random.default_rng(1)
    c = torch.from_numpy(rng.normal(size=(1, 8, 16)))  # (B L H)
    r = torch.from_numpy(rng.random((1, 8, 16)) * 0.1)
    box = lti(Box(c, r), mixer)
    k, d = mixer.kernel(8).detach().double(), mixer.D.detach().double()  # (H L), (H,)
    t, h = 5, 3  # the corner that maximises output (t, h): u_s = c_s + sign(weight of u_s) r_s
    weights = torch.zeros(8, dtype=torch.float64)
    weights[: t + 1] = k[h, : t + 1].flip(0)
    weights[t] += d[h]
    u = c.clone()
    u[0, :, h] += torch.sign(weights) * r[0, :, h]
    with torch.no_grad():
        reached = mixer(u.float()).double()[0, t, h]
    assert reached == pytest.approx(box.upper[0, t, h].item(), rel=1e-4, abs=1e-5)  # attained: exact


def test_the_s5_kernel_reproduces_the_layer_and_its_bounds_are_exact():
    mixer = classifier("s5").model.body.blocks[0].mixer
    rng = np.random.default_rng(2)
    u = torch.from_numpy(rng.normal(size=(2, 8, 16)))  # (B L H)
    k = s5_kernel(mixer, 8)  # (L H H)
    assert k.dtype == torch.float64 and k.shape == (8, 16, 16)
    with torch.no_grad():
        y = mixer(u.float()).double()  # (B L H)
    assert torch.allclose(causal_conv(u, k.permute(1, 2, 0)), y, rtol=0, atol=1e-5)
    r = torch.from_numpy(rng.random((2, 8, 16)) * 0.1)  # (B L H)
    box = s5_lti(Box(u, r), mixer)
    t, h = 5, 3  # the corner that maximises output (t, h): u_s = c_s + sign(K_{t-s}[h]) r_s, zero after t
    corner = u.clone()
    corner[:, : t + 1] += torch.sign(k[: t + 1, h].flip(0)) * r[:, : t + 1]  # (B t+1 H)
    with torch.no_grad():
        reached = mixer(corner.float()).double()[:, t, h]  # (B)
    assert torch.allclose(reached, box.upper[:, t, h], rtol=1e-4, atol=1e-5)  # attained: exact


@pytest.mark.parametrize("name,ads", [("s5", None), ("s5", "relu"), ("mlp", None)])
def test_certify_runs_on_s5_and_the_mlp(name, ads):
    clf, rng = classifier(name, ads), np.random.default_rng(3)
    x = rng.random((4, *SHAPE)).astype(np.float32)  # (4 1 8 8)
    y = clf.predict(x).argmax(1)
    tiny = sd.certify(clf, x, y, method="ibp", eps=1e-6)
    assert tiny["method"] == "ibp" and tiny["samples"] == 4 and tiny["certified_accuracy"] == 1.0
    assert sd.certify(clf, x, y, method="ibp", eps=0.5)["certified_accuracy"] == 0.0  # half the pixel range


def test_a_certified_digit_is_not_broken_and_certified_accuracy_stays_below_the_attacks(trained, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    result = sd.certify(trained, x, y, method="ibp", eps=0.001)  # standard training: IBP certifies tiny balls
    certified = np.array(result["certified"])
    assert 0 < result["certified_accuracy"] == certified.mean()
    pgd = sd.get_attack("pgd", trained, eps=0.001, eps_step=0.00025, max_iter=20, num_random_init=2)
    broken = trained.predict(pgd.generate(x, y)).argmax(1) != y
    assert not (certified & broken).any()  # no attack gets inside a certified box
    # and no hard one: plain torch, margin loss, 10 random restarts of 50 steps on the certified digits
    xc = torch.from_numpy(x[certified])
    yc = torch.from_numpy(y[certified]).long()
    for restart in range(10):
        torch.manual_seed(restart)
        z = (xc + torch.empty_like(xc).uniform_(-0.001, 0.001)).clamp(0, 1)
        for _ in range(50):
            z.requires_grad_(True)
            logits = trained.model(z)  # (n C)
            true = logits.gather(1, yc[:, None])[:, 0]
            other = logits.scatter(1, yc[:, None], -torch.inf).amax(1)
            (g,) = torch.autograd.grad((other - true).sum(), z)  # raise the best wrong logit over the true one
            z = torch.minimum(torch.maximum(z + 0.00025 * g.sign(), xc - 0.001), xc + 0.001).clamp(0, 1).detach()
        with torch.no_grad():
            assert (trained.model(z).argmax(1) == yc).all(), restart
    assert result["certified_accuracy"] <= 1 - broken.mean()
    assert sd.certify(trained, x, y, method="ibp", eps=0.003)["certified_accuracy"] <= result["certified_accuracy"]


def test_the_command_bounds_a_run_and_refuses_an_lstm_in_one_line(tmp_path):
    from click.testing import CliRunner

    from ssmdefense.cli import cli

    base = [
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--aa-samples",
        "0",
        "--eval-samples",
        "20",
        "-q",
        "-m",
        "d_model=8",
    ]
    for model in ("s4d", "lstm"):
        result = CliRunner().invoke(cli, ["train", "--model", model, *base, "--out", str(tmp_path / model)])
        assert result.exit_code == 0, result.output
    args = ["certify", "--method", "ibp", "--eps", "0.001", "--samples", "20", "--checkpoint"]
    bounded = CliRunner().invoke(cli, [*args, str(tmp_path / "s4d")])
    assert bounded.exit_code == 0, bounded.output
    assert "pgd-20 at eps 0.001" in bounded.output and "VIOLATED" not in bounded.output
    written = json.loads((tmp_path / "s4d" / "certification" / "ibp.json").read_text())
    assert written["violations"] == [] and [p["eps"] for p in written["curve"]] == [0.00025, 0.0005, 0.001]
    refused = CliRunner().invoke(cli, [*args, str(tmp_path / "lstm")])
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "ibp cannot bound the model RNNClassifier" in lines[0], refused.stderr
    assert not (tmp_path / "lstm" / "certification").exists()


# measured (eps 0.03, lr 1e-2, certified at eps 0.01 on 200 test digits): 0.000 after standard
# training, 0.385 after ibp (10 epochs), 0.265 after crown-ibp (6 epochs)
@pytest.mark.parametrize("defense,epochs,margin", [("ibp", 10, 0.2), ("crown-ibp", 6, 0.15)])
def test_certified_training_raises_certified_accuracy_over_standard_training(digits, defense, epochs, margin):
    from conftest import make_classifier

    x, y = digits.x_test[:200], digits.y_test[:200]
    certified = {}
    for name in ("none", defense):
        clf = make_classifier(digits)
        fit = sd.get_defense(name, clf, eps=0.03, lr=1e-2, verbose=False).fit
        fit(digits.x_train, digits.y_train, nb_epochs=epochs)
        certified[name] = sd.certify(clf, x, y, method="ibp", eps=0.01)["certified_accuracy"]
    assert certified[defense] > certified["none"] + margin, certified


def test_the_ibp_schedule_and_its_refusals(trained):
    trainer = sd.get_defense("ibp", trained, eps=0.1, kappa=0.5, warmup=0.2, ramp=0.4, verbose=False)
    assert trainer.schedule(0.1) == (0.0, 1.0)  # warm-up: standard training
    assert trainer.schedule(0.4) == pytest.approx((0.05, 0.75))  # half way up the ramp
    assert trainer.schedule(0.9) == pytest.approx((0.1, 0.5))  # the target, kept to the end
    with pytest.raises(SSMDefenseError, match="warmup \\+ ramp must be at most 1"):
        sd.get_defense("ibp", trained, warmup=0.6, ramp=0.6)
    with pytest.raises(SSMDefenseError, match="ibp cannot bound the model RNNClassifier"):
        sd.get_defense("ibp", tiny_lstm())


def test_defend_with_ibp_reports_verified_accuracy(tmp_path):
    from click.testing import CliRunner

    from ssmdefense.cli import cli

    args = ["defend", "--defense", "ibp", "--dataset", "digits", "--epochs", "2", "--eps", "0.01", "--aa-samples"]
    args += ["0", "--eval-samples", "40", "-q", "-m", "d_model=16", "-m", "n_layers=1", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "verified (ibp) at eps 0.01 on 40 samples" in result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    for which in ("best", "last"):
        certified = report[which]["certified"]
        assert certified["method"] == "ibp" and certified["eps"] == 0.01 and certified["samples"] == 40
        assert 0 <= certified["certified_accuracy"] <= report[which]["robust_accuracy"]["pgd-10"]  # same samples


def test_the_layer_width_example_ends_in_the_interval_logit_bounds(trained, digits):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import ibp_layer_widths

    x = torch.from_numpy(digits.x_test[:5]).double()
    rows = ibp_layer_widths.widths(trained, x, 0.001)
    names = [name for name, _ in rows]
    assert names[0] == "input" and names[-1] == "head (logits)" and "block 0: residual, LayerNorm" in names
    lower, upper = (x - 0.001).clamp(0, 1), (x + 0.001).clamp(0, 1)
    lo, hi = logit_bounds(trained.model, lower, upper)
    assert rows[-1][1] == pytest.approx(((hi - lo) / 2).mean().item(), rel=1e-9)  # the same bounds, layer by layer
