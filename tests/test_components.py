"""Component analysis (AdS paper): rows per layer and component, zero distances for identical
inputs, numbers against a hand computation, the sign of a known scaling, gated mixers, report
section and plot."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssmdefense as sd
from conftest import make_classifier
from ssmdefense.evaluation.components import (
    analyse_components,
    component_analysis,
    plot_components,
    render_components_markdown,
)

N = 60


@pytest.fixture(scope="module")
def pair(digits):
    """Clean digits and a random +-0.1 perturbation of them, clipped to [0, 1]."""
    x = digits.x_test[:N]
    rng = np.random.default_rng(0)
    x_adv = np.clip(x + rng.choice([-0.1, 0.1], size=x.shape), 0.0, 1.0).astype(np.float32)
    return x, x_adv


def layout(rows):
    return [(r["layer"], r["component"]) for r in rows]


@pytest.mark.parametrize(
    "ads, per_layer", [(None, ["mixer", "output_linear"]), ("relu", ["mixer", "ads", "output_linear"])]
)
def test_rows_cover_every_layer_and_component(digits, pair, ads, per_layer):
    clf = make_classifier(digits, n_layers=2, ads=ads)
    clf.model.train()
    rows = component_analysis(clf, *pair)
    assert layout(rows) == [(i, c) for i in range(2) for c in per_layer]
    for r in rows:
        assert list(r) == [
            "layer",
            "component",
            "kl_before",
            "kl_after",
            "kl_relative_change",
            "mse_before",
            "mse_after",
            "mse_relative_change",
        ]
        for m in ("kl", "mse"):
            assert r[f"{m}_before"] > 0 and r[f"{m}_after"] > 0
            expected = (r[f"{m}_after"] - r[f"{m}_before"]) / r[f"{m}_before"]
            assert r[f"{m}_relative_change"] == pytest.approx(expected)
    assert clf.model.training  # mode restored and hooks removed
    assert all(not m._forward_hooks for m in clf.model.modules())


def test_identical_inputs_give_zero_distances_and_no_relative_change(digits, pair):
    clf = make_classifier(digits, ads="relu")
    rows = component_analysis(clf, pair[0], pair[0].copy(), batch_size=25)
    assert len(rows) == 3
    for r in rows:
        assert r["kl_before"] == r["kl_after"] == r["mse_before"] == r["mse_after"] == 0.0
        assert r["kl_relative_change"] is None and r["mse_relative_change"] is None


def kl(h_c, h_a):  # mean over (B L) of KL(softmax(h_c) || softmax(h_a)) over features
    p, q = F.log_softmax(h_c.double(), -1), F.log_softmax(h_a.double(), -1)  # (B L H)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_numbers_match_a_hand_computation(trained, pair):
    x, x_adv = pair
    rows = component_analysis(trained, x, x_adv, batch_size=16)  # 60 = 3 x 16 + 12: sums, not batch means
    whole = component_analysis(trained, x, x_adv, batch_size=1000)
    for a, b in zip(rows, whole):
        assert layout([a]) == layout([b])
        assert {k: a[k] for k in list(a)[2:]} == pytest.approx({k: b[k] for k in list(b)[2:]}, rel=1e-6)
    body, block = trained.body, trained.body.blocks[0]
    with torch.no_grad():
        seqs = [trained.model.serialiser(torch.as_tensor(v)) for v in (x, x_adv)]  # (B L D)
        h0 = [body.encoder(s) for s in seqs]  # (B L H) block input
        m = [block.mixer(h) for h in h0]  # (B L H)
        g = [block.activation(v) for v in m]  # (B L H)
        o = [block.output_linear(block.ads(v)) for v in g]  # (B L H)
    mixer, linear = rows[0], rows[1]
    assert (mixer["component"], linear["component"]) == ("mixer", "output_linear")
    assert mixer["mse_before"] == pytest.approx(float(((h0[1] - h0[0]) ** 2).mean()), rel=1e-5)
    assert mixer["mse_after"] == pytest.approx(float(((m[1] - m[0]) ** 2).mean()), rel=1e-5)
    assert mixer["kl_before"] == pytest.approx(kl(*h0), rel=1e-5)
    assert mixer["kl_after"] == pytest.approx(kl(*m), rel=1e-5)
    assert linear["mse_before"] == pytest.approx(float(((g[1] - g[0]) ** 2).mean()), rel=1e-5)
    assert linear["mse_after"] == pytest.approx(float(((o[1] - o[0]) ** 2).mean()), rel=1e-5)
    assert linear["kl_after"] == pytest.approx(kl(*o), rel=1e-5)


def test_a_linear_that_doubles_its_input_quadruples_the_mse(digits, pair):
    clf = make_classifier(digits, n_layers=2)
    double = nn.Linear(32, 32)
    with torch.no_grad():
        double.weight.copy_(2 * torch.eye(32))
        double.bias.zero_()
    clf.body.blocks[1].output_linear = double
    rows = {(r["layer"], r["component"]): r for r in component_analysis(clf, *pair)}
    assert rows[(1, "output_linear")]["mse_relative_change"] == pytest.approx(3.0, rel=1e-5)  # 4x - 1
    halve = nn.Linear(32, 32)
    with torch.no_grad():
        halve.weight.copy_(0.5 * torch.eye(32))
        halve.bias.zero_()
    clf.body.blocks[1].output_linear = halve
    rows = {(r["layer"], r["component"]): r for r in component_analysis(clf, *pair)}
    assert rows[(1, "output_linear")]["mse_relative_change"] == pytest.approx(-0.75, rel=1e-5)  # damps


@pytest.mark.parametrize(
    "name, params, proj",
    [
        ("mamba", {"d_model": 16, "n_layers": 2, "d_state": 8}, "out_proj"),
        ("mega", {"d_model": 8, "n_layers": 2, "d_qk": 4, "d_ema": 2}, "h_proj"),
    ],
)
def test_gated_mixers_get_mixer_ads_and_their_own_output_projection(digits, pair, name, params, proj):
    torch.manual_seed(0)
    body = sd.build_model(name, d_input=8, n_classes=10, ads="relu", **params)
    clf = sd.SSMClassifier(
        body, input_shape=digits.input_shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    rows = component_analysis(clf, *pair)
    assert layout(rows) == [(i, c) for i in range(2) for c in ("mixer", "ads", "output_linear")]
    assert all(r["mse_before"] > 0 and r["mse_after"] > 0 for r in rows)
    # the output_linear row is the mixer's own projection: check its output against a direct hook
    seen = []
    handle = getattr(body.blocks[0].mixer, proj).register_forward_hook(lambda mod, i, o: seen.append(o))
    with torch.no_grad():
        clf.model.eval()(torch.as_tensor(pair[0]))
        clf.model(torch.as_tensor(pair[1]))
    handle.remove()
    assert rows[2]["mse_after"] == pytest.approx(float(((seen[1] - seen[0]) ** 2).mean()), rel=1e-5)
    plain = sd.build_model(name, d_input=8, n_classes=10, **params)  # no AdS: no ads rows
    clf = sd.SSMClassifier(
        plain, input_shape=digits.input_shape, nb_classes=10, sequence="rows", clip_values=(0.0, 1.0), device_type="cpu"
    )
    assert layout(component_analysis(clf, *pair)) == [(i, c) for i in range(2) for c in ("mixer", "output_linear")]


def test_analyse_components_report_section_and_plot(trained, digits, tmp_path):
    attack = sd.get_attack("pgd", trained, eps=0.1, eps_step=0.02, max_iter=3)
    analysis = analyse_components(
        trained,
        {"train": (digits.x_train[:40], digits.y_train[:40]), "test": (digits.x_test[:40], digits.y_test[:40])},
        attack,
    )
    assert list(analysis) == ["train", "test"]
    assert all(layout(rows) == [(0, "mixer"), (0, "output_linear")] for rows in analysis.values())
    assert all(r["mse_before"] > 0 for rows in analysis.values() for r in rows)  # PGD moved the inputs
    md = render_components_markdown(analysis)
    assert md.startswith("## Component analysis")
    assert (
        "| split | layer | component | KL before | KL after | KL change | MSE before | MSE after | MSE change |" in md
    )
    assert "| train | 0 | mixer |" in md and "| test | 0 | output_linear |" in md
    assert "amplifies" in md and "damps" in md
    path = tmp_path / "plots" / "components.png"
    assert plot_components(analysis, path) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    same = {"test": component_analysis(trained, digits.x_test[:5], digits.x_test[:5])}
    assert plot_components(same, tmp_path / "none.png") is False and not (tmp_path / "none.png").exists()
    assert plot_components({}, tmp_path / "none.png") is False
    assert "No components" in render_components_markdown({})


def test_bad_input_is_a_clear_value_error(trained, digits, pair):
    x, x_adv = pair
    with pytest.raises(ValueError, match="same shape"):
        component_analysis(trained, x, x_adv[:-1])
    with pytest.raises(ValueError, match="at least one input"):
        component_analysis(trained, x[:0], x_adv[:0])
    with pytest.raises(ValueError, match="expected inputs of shape"):
        component_analysis(trained, x.reshape(N, 1, 4, 16), x_adv.reshape(N, 1, 4, 16))
    with pytest.raises(ValueError, match="batch_size"):
        component_analysis(trained, x, x_adv, batch_size=0)
    attack = sd.get_attack("fgsm", trained, eps=0.1)
    with pytest.raises(ValueError, match="non-empty"):
        analyse_components(trained, {}, attack)
    with pytest.raises(ValueError, match="labels"):
        analyse_components(trained, {"test": (x, digits.y_test[:3])}, attack)
    torch.manual_seed(0)
    lstm = sd.SSMClassifier(
        sd.build_model("lstm", d_input=8, n_classes=10),
        input_shape=digits.input_shape,
        nb_classes=10,
        sequence="rows",
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    with pytest.raises(ValueError, match="SequenceClassifier"):
        component_analysis(lstm, x, x_adv)
