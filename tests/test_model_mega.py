"""Mega (Ma et al. 2023): the damped EMA, the gated attention layer, and the ``mega`` model plugin."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ssmdefense as sd
from ssmdefense.models import AdaptiveScaling
from ssmdefense.models.mega import MegaLayer

SMALL = dict(d_model=32, n_layers=1, d_qk=16, d_ema=8)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L", [1, 8, 21])
def test_ema_convolution_equals_recurrence(bidirectional, L):
    """test_cnn_is_rnn for the damped EMA: FFT convolution == step-by-step recurrence (float64)."""
    torch.manual_seed(L)
    layer = MegaLayer(6, d_qk=8, d_ema=4, bidirectional=bidirectional).double()
    u = torch.randn(3, L, 6, dtype=torch.float64)  # (B L H)
    y = layer.ema(u)
    assert y.shape == (3, L, 6)
    torch.testing.assert_close(y, layer.ema_recurrent(u), rtol=1e-10, atol=1e-12)


def _unidirectional_copy(layer: MegaLayer, direction: int) -> MegaLayer:
    uni = MegaLayer(layer.H, d_qk=layer.z, d_ema=layer.N).double()
    with torch.no_grad():
        for name in ("alpha", "delta", "beta", "eta"):
            getattr(uni, name).copy_(getattr(layer, name)[direction : direction + 1])
    return uni


def test_bidirectional_ema_is_forward_ema_plus_shifted_reversed_ema():
    """The second kernel runs on the reversed sequence and skips u_t itself (the reference's shift)."""
    torch.manual_seed(0)
    layer = MegaLayer(5, d_qk=4, d_ema=3, bidirectional=True).double()
    fwd, bwd = _unidirectional_copy(layer, 0), _unidirectional_copy(layer, 1)
    u = torch.randn(2, 13, 5, dtype=torch.float64)
    backward_full = bwd.ema_recurrent(u.flip(1)).flip(1)  # includes the lag-0 term K²_0 u_t
    lag0 = bwd.ema_kernel(1)[0, :, 0]  # (H) K²_0
    expected = fwd.ema_recurrent(u) + backward_full - lag0 * u
    torch.testing.assert_close(layer.ema(u), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.ema_recurrent(u), expected, rtol=1e-10, atol=1e-12)


def test_ema_kernel_is_the_damped_ema_impulse_response():
    torch.manual_seed(0)
    layer = MegaLayer(2, d_qk=4, d_ema=3).double()
    alpha, delta = torch.sigmoid(layer.alpha[0]), torch.sigmoid(layer.delta[0])  # (H N)
    steps = torch.arange(6, dtype=torch.float64)
    expected = torch.einsum(
        "hn,hnl->hl", layer.eta[0] / np.sqrt(3) * alpha * layer.beta[0], (1 - alpha * delta)[..., None] ** steps
    )
    torch.testing.assert_close(layer.ema_kernel(6)[0], expected)


def test_layer_and_block_implement_megas_gated_update():
    """gated_output is Y = φ ⊙ Ĥ + (1 - φ) ⊙ u; the body's block adds the update once: LayerNorm(Y)."""
    torch.manual_seed(0)
    model = sd.build_model("mega", d_input=3, n_classes=4, d_model=8, n_layers=1, d_qk=4, d_ema=2).double()
    block, layer = model.blocks[0], model.blocks[0].mixer
    assert layer.has_output_projection and block.gated
    u = torch.randn(2, 9, 8, dtype=torch.float64)
    # recompute Y from the paper's equations with the layer's weights
    x1 = F.silu(layer.ema(u) + layer.omega * u)  # X'
    phi, zr, hx = torch.split(layer.mx_proj(x1), [8, 4 + 16, 8], dim=-1)
    z, r = torch.split(F.silu(zr), [4, 16], dim=-1)
    q, k = z * layer.qk_scale[0] + layer.qk_offset[0], z * layer.qk_scale[1] + layer.qk_offset[1]
    scores = q @ k.transpose(1, 2) / 2.0 + layer.relative_position_bias(9)
    scores = scores + torch.full((9, 9), float("-inf"), dtype=torch.float64).triu(1)
    o = torch.softmax(scores, -1) @ F.silu(layer.v_proj(u))
    h = F.silu(hx + layer.h_proj(r * o))
    y = torch.sigmoid(phi) * h + (1 - torch.sigmoid(phi)) * u
    torch.testing.assert_close(layer.gated_output(u), y)
    torch.testing.assert_close(block(u), block.norm(y))


def test_default_value_width_is_twice_the_model_width():
    layer = MegaLayer(12)
    assert (layer.z, layer.N, layer.E) == (32, 16, 24)
    assert layer.v_proj.out_features == 24 and layer.h_proj.in_features == 24


def test_relative_position_bias_depends_only_on_offset():
    torch.manual_seed(0)
    layer = MegaLayer(4, d_qk=4, d_ema=2, max_positions=10)
    with torch.no_grad():
        layer.rel_pos_bias.copy_(torch.arange(19, dtype=torch.float32))
    bias = layer.relative_position_bias(6)  # (L L)
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    torch.testing.assert_close(bias, (j - i + 9).float())
    with pytest.raises(ValueError, match="max_positions"):
        layer(torch.randn(1, 11, 4))


def _later_inputs_changed(x, t):
    x2 = x.clone()
    x2[:, t:] += torch.randn_like(x2[:, t:])
    return x2


def test_unidirectional_mega_is_causal():
    torch.manual_seed(0)
    layer = MegaLayer(4, d_qk=4, d_ema=2).double()
    u = torch.randn(1, 30, 4, dtype=torch.float64)
    u2 = _later_inputs_changed(u, 20)
    torch.testing.assert_close(layer(u)[:, :20], layer(u2)[:, :20])
    assert not torch.allclose(layer(u)[:, 20:], layer(u2)[:, 20:])

    model = sd.build_model("mega", d_input=3, n_classes=5, d_model=8, n_layers=2, d_qk=4, d_ema=2, ads="tanh").double()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    x2 = _later_inputs_changed(x, 10)
    torch.testing.assert_close(model.features(x)[:, :10], model.features(x2)[:, :10])


def test_bidirectional_mega_is_not_causal():
    torch.manual_seed(0)
    layer = MegaLayer(4, d_qk=4, d_ema=2, bidirectional=True).double()
    u = torch.randn(1, 30, 4, dtype=torch.float64)
    u2 = _later_inputs_changed(u, 20)
    assert not torch.allclose(layer.ema(u)[:, :20], layer.ema(u2)[:, :20])  # the reversed EMA looks ahead
    assert not torch.allclose(layer(u)[:, :20], layer(u2)[:, :20])

    model = sd.build_model(
        "mega", d_input=3, n_classes=5, d_model=8, n_layers=2, d_qk=4, d_ema=2, bidirectional=True
    ).double()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    x2 = _later_inputs_changed(x, 10)
    assert not torch.allclose(model.features(x)[:, :10], model.features(x2)[:, :10])


def test_ads_sits_on_the_ema_output_in_every_block():
    torch.manual_seed(0)
    model = sd.build_model("mega", d_input=8, n_classes=10, d_model=16, n_layers=3, d_qk=8, d_ema=4, ads="relu")
    assert [type(b.ads_module).__name__ for b in model.blocks] == ["AdaptiveScaling"] * 3
    assert all(b.ads_module is b.mixer.ads and b.ads_module.act_name == "relu" for b in model.blocks)
    assert model.ads == "relu"

    seen = {}
    layer = model.blocks[0].mixer
    layer.ads.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    u = torch.randn(2, 8, 16)
    layer(u)
    torch.testing.assert_close(seen["inp"], F.silu(layer.ema(u) + layer.omega * u))  # X' goes into AdS
    torch.testing.assert_close(seen["out"], torch.relu(seen["inp"] @ layer.ads.W.weight.T) * seen["inp"])

    logits = model(torch.randn(4, 8, 8))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    plain = sd.build_model("mega", d_input=8, n_classes=10, d_model=16, d_qk=8, d_ema=4)
    assert plain.ads is None
    plain.enable_ads("sigmoid")
    assert all(isinstance(b.mixer.ads, AdaptiveScaling) for b in plain.blocks)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(d_qk=0), "d_qk must be an integer"),
        (dict(d_ema=0), "d_ema must be an integer"),
        (dict(d_value=0), "d_value must be an integer"),
        (dict(d_ema=2.5), "d_ema must be an integer"),
        (dict(bidirectional="yes"), "bidirectional must be"),
        (dict(ads="softmax"), "ads must be one of"),
    ],
)
def test_bad_mega_parameters_raise_clear_errors(params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.build_model("mega", d_input=4, n_classes=3, **params)
