"""The S4D layer, the shared body, AdS and the input serialisers."""

import pytest
import torch

import ssmdefense as sd
from ssmdefense.kernels import diag_ssm_recurrence, fft_conv
from ssmdefense.kernels.long_conv import conv_operator
from ssmdefense.models import S4D, AdaptiveScaling, ImageToSequence


@pytest.mark.parametrize("init", ["lin", "inv"])
def test_s4d_convolution_equals_recurrence(init):
    """test_cnn_is_rnn: the FFT convolution view and the step-by-step recurrence agree (float64)."""
    torch.manual_seed(0)
    layer = S4D(d_model=6, d_state=16, dt_min=1e-2, dt_max=0.5, init=init).double()
    u = torch.randn(3, 50, 6, dtype=torch.float64)  # (B L H)
    y_conv = layer(u)
    y_rec = layer.forward_recurrent(u)
    assert y_conv.shape == (3, 50, 6)
    torch.testing.assert_close(y_conv, y_rec, rtol=1e-9, atol=1e-10)


def test_fft_conv_matches_direct_causal_convolution():
    torch.manual_seed(1)
    u = torch.randn(2, 3, 20, dtype=torch.float64)  # (B H L)
    K = torch.randn(3, 20, dtype=torch.float64)  # (H L)
    direct = torch.zeros_like(u)
    for t in range(20):
        for s in range(t + 1):
            direct[..., t] += K[:, t - s] * u[..., s]
    torch.testing.assert_close(fft_conv(u, K), direct)


def test_recurrence_reference_is_a_plain_scan():
    dA = torch.tensor([[0.5 + 0.0j]], dtype=torch.complex128)
    dB = torch.tensor([[1.0 + 0.0j]], dtype=torch.complex128)
    C = torch.tensor([[0.5 + 0.0j]], dtype=torch.complex128)
    u = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    # x = 1, 0.5, 0.25 and y = 2 Re(C x) = x
    torch.testing.assert_close(
        diag_ssm_recurrence(u, dA, dB, C), torch.tensor([[[1.0, 0.5, 0.25]]], dtype=torch.float64)
    )


def test_s4d_layer_is_causal():
    torch.manual_seed(0)
    layer = S4D(d_model=4, d_state=8).double()
    u = torch.randn(1, 30, 4, dtype=torch.float64)
    u2 = u.clone()
    u2[:, 20:] += torch.randn(1, 10, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(u)[:, :20], layer(u2)[:, :20])
    assert not torch.allclose(layer(u)[:, 20:], layer(u2)[:, 20:])


def test_body_before_pooling_is_causal():
    torch.manual_seed(0)
    model = sd.build_model("s4d", d_input=3, n_classes=5, d_model=8, n_layers=2, ads="tanh").double()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 10:] = 0.0
    torch.testing.assert_close(model.features(x)[:, :10], model.features(x2)[:, :10])


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_ads_formula(act):
    torch.manual_seed(0)
    ads = AdaptiveScaling(5, act)
    y = torch.randn(2, 7, 5)
    fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[act]
    torch.testing.assert_close(ads(y), fn(y @ ads.W.weight.T) * y)
    assert ads.W.bias is None


def test_build_model_places_ads_in_every_block_and_outputs_logits():
    model = sd.build_model("s4d", d_input=28, n_classes=10, d_model=16, n_layers=3, ads="relu")
    assert [type(b.ads_module).__name__ for b in model.blocks] == ["AdaptiveScaling"] * 3
    assert model(torch.randn(4, 28, 28)).shape == (4, 10)
    plain = sd.build_model("s4d", d_input=28, n_classes=10, d_model=16, n_layers=3)
    assert plain.ads is None
    plain.enable_ads("sigmoid")
    assert plain.ads == "sigmoid"
    with pytest.raises(ValueError, match="already has AdS"):
        plain.enable_ads("tanh")


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(ads="softmax"), "ads must be one of"),
        (dict(d_state=7), "d_state must be an even"),
        (dict(init="foo"), "init must be one of"),
        (dict(d_model=0), "d_model must be an integer"),
        (dict(bogus=1), "unknown parameter"),
    ],
)
def test_bad_model_parameters_raise_clear_errors(params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.build_model("s4d", d_input=4, n_classes=3, **params)


def test_serialisers_pixels_and_rows():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (N C H W)
    pixels = ImageToSequence((3, 4, 5), "pixels")(x)
    assert pixels.shape == (2, 20, 3)
    # raster order: step t is pixel (t // W, t % W), features are the C channels
    assert torch.equal(pixels[1, 7], x[1, :, 7 // 5, 7 % 5])
    rows = ImageToSequence((3, 4, 5), "rows")(x)
    assert rows.shape == (2, 4, 15)
    assert torch.equal(rows[0, 2], x[0, :, 2, :].T.reshape(-1))  # row 2, channels interleaved per pixel
    with pytest.raises(ValueError, match="expected input"):
        ImageToSequence((3, 4, 5), "rows")(torch.zeros(2, 1, 4, 5))


class ToyGatedMixer(torch.nn.Module):
    """A mixer with its own output projection and an AdS slot (the protocol Mega and Mamba follow)."""

    has_output_projection = True

    def __init__(self, d_model):
        super().__init__()
        self.inner = torch.nn.Linear(d_model, d_model)
        self.ads = torch.nn.Identity()
        self.out_proj = torch.nn.Linear(d_model, d_model)

    def forward(self, x):  # (B L H)
        return self.out_proj(self.ads(self.inner(x)))


def test_gated_mixers_receive_ads_in_their_slot():
    from ssmdefense.models import SequenceClassifier

    body = SequenceClassifier(3, 4, ToyGatedMixer, d_model=6, n_layers=2, ads="sigmoid")
    for block in body.blocks:
        assert isinstance(block.mixer.ads, AdaptiveScaling) and block.ads_module is block.mixer.ads
        assert not hasattr(block, "output_linear")  # the mixer's own projection is the output
    plain = SequenceClassifier(3, 4, ToyGatedMixer, d_model=6, n_layers=1)
    assert plain.ads is None
    plain.enable_ads("relu")
    assert isinstance(plain.blocks[0].mixer.ads, AdaptiveScaling) and plain.ads == "relu"
    assert plain(torch.randn(2, 5, 3)).shape == (2, 4)


@pytest.mark.parametrize("L", [20, 100])  # the Toeplitz matrices kept (L <= 60), and K for the FFT
@pytest.mark.parametrize("name", ["s4d", "s4", "dss"])
def test_the_kept_kernel_gives_the_same_outputs_and_follows_every_weight_change(name, L):
    """Without a gradient to the weights the LTI kernel is computed once and kept: the same logits as
    computing it each call, a new kernel after an optimizer step or ``load_state_dict``, and training
    still gets the kernel's weight gradients."""
    torch.manual_seed(0)
    model = sd.build_model(name, d_input=3, n_classes=4, d_model=8, n_layers=1, d_state=8)
    x = torch.randn(5, L, 3)  # (B L D)
    mixer = next(m for m in model.modules() if hasattr(m, "kept_operator"))

    def fresh():  # the kernel computed in every call, as before it was kept
        with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(mixer), "kept_operator", lambda self, L: conv_operator(self.kernel(L)))
            return model(x)

    with torch.no_grad():
        first = model(x)
        assert mixer._kept is not None and torch.equal(model(x), first)
    torch.testing.assert_close(first, fresh(), rtol=0, atol=0)

    loss = model(x).logsumexp(1).sum()  # training: the graph reaches the kernel's weights
    loss.backward()
    kernel_weights = [p for n, p in mixer.named_parameters() if n != "D"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in kernel_weights)
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    with torch.no_grad():
        stepped = model(x)
    assert not torch.equal(stepped, first)
    torch.testing.assert_close(stepped, fresh(), rtol=0, atol=0)

    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
        moved = model(x)
    model.load_state_dict(saved)
    with torch.no_grad():
        torch.testing.assert_close(model(x), stepped, rtol=0, atol=0)
    assert not torch.equal(moved, stepped)

    for p in model.parameters():  # an attack's input gradient: the kernel kept, the input's gradient exact
        p.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    model(xg).sum().backward()
    assert mixer._kept is not None and xg.grad is not None and xg.grad.abs().sum() > 0
