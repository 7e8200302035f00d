"""Randomized smoothing (``ssmdefense.certification.smoothing``, ``sd.certify``, ``ssmdefense certify``):
its radii never exceed the true distance to a linear classifier's boundary (where the smoothed
classifier is known in closed form), its votes and confidence bound agree with ART's implementation,
and the command writes its JSON or refuses bad input with one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense.certification.smoothing import largest_radius, lower_confidence_bound, votes
from ssmdefense.certification.smoothing_attack import attack_check
from ssmdefense.cli import cli
from ssmdefense.errors import SSMDefenseError


class Linear(torch.nn.Module):
    """Class 1 where w·x + b > 0: the smoothed classifier is the same half-space, with p_A = Φ(d/σ)
    at distance d from the boundary, so the exact certified radius is d."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):  # (B, 1, 4, 4)
        score = x.flatten(1) @ self.w + self.b  # (B,)
        return torch.stack([-score, score], 1)  # (B, 2)


def linear_classifier():
    w = torch.linspace(-1.0, 1.0, 16)
    w = w / w.norm()  # unit normal: the distance to the boundary is |w·x + b|
    return SimpleNamespace(model=Linear(w, 0.1), device=torch.device("cpu"), input_shape=(1, 4, 4), nb_classes=2), w


def test_radii_never_exceed_the_distance_to_a_linear_boundary_and_come_close_to_it():
    clf, w = linear_classifier()
    distances = np.array([0.02, 0.1, 0.2, 0.4, -0.3])  # signed: the last point is on class 0's side
    x = ((distances - 0.1)[:, None] * w.numpy()[None, :]).reshape(-1, 1, 4, 4).astype(np.float32)
    y = (distances > 0).astype(np.int64)
    result = sd.certify(clf, x, y, method="smoothing", sigma=0.25, n=20_000, seed=0)
    radii, exact = np.array(result["radii"]), np.abs(distances)
    assert result["predictions"] == y.tolist()  # the smoothed classifier of a half-space is the half-space
    assert np.all(radii <= exact + 1e-9), (radii, exact)  # sound: nothing beyond the true distance
    assert np.all(radii[1:] >= exact[1:] - 0.05), (radii, exact)  # and tight once the votes are clear
    assert result["largest_radius"] == pytest.approx(largest_radius(0.25, 20_000, 0.001))
    curve = [p["certified_accuracy"] for p in result["curve"]]
    assert curve == sorted(curve, reverse=True) and curve[0] == 1.0


def test_smoothadv_flips_what_lies_within_its_radius_and_no_certified_point():
    clf, w = linear_classifier()
    distances = np.array([0.1, 0.2, 0.4, 0.6])  # all on class 1's side
    x = ((distances - 0.1)[:, None] * w.numpy()[None, :]).reshape(-1, 1, 4, 4).astype(np.float32)
    y = np.ones(4, dtype=np.int64)
    result = sd.certify(clf, x, y, sigma=0.25, n=20_000, seed=0)
    check = attack_check(clf, x, y, result, 0.3, n=2_000)
    # straight across the boundary: the two points nearer than 0.3 flip, the two beyond it hold
    assert check["attacked_accuracy"] == 0.5 and check["certified_accuracy"] == 0.5
    assert check["violations"] == []


def test_a_point_on_the_boundary_is_abstained_on():
    clf, w = linear_classifier()
    x = (-0.1 * w.numpy()).reshape(1, 1, 4, 4).astype(np.float32)  # w·x + b = 0: votes split evenly
    result = sd.certify(clf, x, np.array([1]), sigma=0.25, n=2_000, seed=0)
    assert result["predictions"] == [-1] and result["abstain_rate"] == 1.0 and result["certified_accuracy"] == 0.0


def test_votes_and_the_bound_agree_with_art(trained, digits):
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    art = PyTorchRandomizedSmoothing(
        model=trained.model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=trained.input_shape,
        nb_classes=10,
        sample_size=4_000,
        scale=0.5,
        alpha=0.001,
        device_type="cpu",
    )
    generator = torch.Generator().manual_seed(0)
    np.random.seed(0)  # ART draws from numpy's global generator
    for x in digits.x_test[:3]:
        ours = votes(trained.model, torch.from_numpy(x), 4_000, 0.5, 10, 512, generator) / 4_000
        theirs = art._prediction_counts(x, n=4_000, batch_size=512) / 4_000
        assert np.abs(ours - theirs).max() < 0.05, (ours, theirs)  # the same distribution, two samples of it
    for k, n in ((990, 1000), (9_999, 10_000), (3, 10)):
        assert lower_confidence_bound(k, n, 0.001) == pytest.approx(art._lower_confidence_bound(k, n))


def test_bad_settings_are_clear_errors(trained, digits):
    x, y = digits.x_test[:2], digits.y_test[:2]
    for params, message in (
        ({"sigma": 0}, "sigma must be positive"),
        ({"sigma": 0.25, "alpha": 0.7}, "alpha must be"),
        ({"sigma": 0.25, "n": 0}, "n must be an integer >= 1"),
    ):
        with pytest.raises(SSMDefenseError, match=message):
            sd.certify(trained, x, y, **params)
    with pytest.raises(SSMDefenseError, match="unknown certification method 'ibp2'; known: smoothing"):
        sd.certify(trained, x, y, method="ibp2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("certify") / "run"
    args = ["train", "--dataset", "digits", "--epochs", "10", "--aa-samples", "0", "--eval-samples", "50", "-q"]
    args += ["-p", "lr=0.01", "-m", "d_model=32", "-m", "n_layers=1", "-m", "d_state=16", "-m", "dt_min=0.01"]
    args += ["-m", "dt_max=1.0", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def test_the_command_certifies_a_run_and_writes_its_json(run):
    args = ["certify", "--checkpoint", str(run), "--samples", "12", "--n", "500", "--sigma", "0.05"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "certified accuracy" in result.output and "the largest n can certify" in result.output
    assert "under SmoothAdv" in result.output and "VIOLATED" not in result.output
    written = json.loads((run / "certification" / "smoothing.json").read_text())
    assert written["violations"] == [] and [c["radius"] for c in written["attack_check"]] == [0.025, 0.05]
    for check in written["attack_check"]:  # the empirical side holds at least what is certified, up to vote noise
        assert check["attacked_accuracy"] >= check["certified_accuracy"] - 1 / 12
    assert written["samples"] == 12 and written["which"] == "best" and len(written["radii"]) == 12
    assert max(written["radii"]) <= written["largest_radius"] + 1e-9
    assert json.loads((run / "report.json").read_text())["best"]["clean_accuracy"] > 0.7  # a trained model ...
    # ... whose smoothed version certifies most digits at a small sigma (standard training never saw noise)
    assert written["curve"][0]["certified_accuracy"] > 0.5
    args = ["certify", "--checkpoint", str(run), "--samples", "4", "--n", "200", "--json", "--no-attack-check"]
    as_json = CliRunner().invoke(cli, args)
    assert json.loads(as_json.stdout)["samples"] == 4


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "ibp2"], "Invalid value for '--method': 'ibp2' is not one of smoothing"),
        (["--out", "x.txt"], "Invalid value for '--out': must end in .json"),
        (["--sigma", "0"], "Invalid value for '--sigma'"),
    ],
)
def test_the_command_refuses_bad_input_with_one_line(run, args, message):
    result = CliRunner().invoke(cli, ["certify", "--checkpoint", str(run), "--samples", "2", "--n", "10", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
