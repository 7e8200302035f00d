"""DSS (Gupta et al., NeurIPS 2022): the DSS-exp and DSS-softmax kernels against the paper's
formulas and the diagonal recurrence, causality, AdS, errors, training and checkpoints of ``dss``."""

import pytest
import torch

import ssmdefense as sd
from conftest import train_on_digits
from ssmdefense.models import AdaptiveScaling
from ssmdefense.models.dss import DSS
from ssmdefense.models.s4 import hippo_legs

# dt up to 1 suits the short (L = 8) digit rows, as in conftest.TINY
SMALL = dict(d_model=32, n_layers=1, d_state=16, dt_min=1e-2, dt_max=1.0)
KERNELS = ["exp", "softmax"]


def _layer(kernel, seed=0, H=4, N=16, dt_min=1e-2, dt_max=0.5) -> DSS:
    """The DSS mixer of a model built by name, in float64."""
    torch.manual_seed(seed)
    model = sd.build_model(
        "dss", d_input=3, n_classes=2, d_model=H, n_layers=1, d_state=N, variant=kernel, dt_min=dt_min, dt_max=dt_max
    )
    layer = model.blocks[0].mixer
    assert isinstance(layer, DSS) and layer.variant == kernel
    return layer.double()


def _with_growing_modes(layer: DSS) -> DSS:
    """DSS-softmax leaves Re(Λ) free: push half of the modes to Re(λ) > 0."""
    with torch.no_grad():
        layer.Lambda_re[::2] = 0.3
    return layer


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("L", [1, 8, 13, 64])
def test_dss_convolution_equals_recurrence(kernel, L):
    """test_cnn_is_rnn: FFT convolution with the DSS kernel == diagonal recurrence (float64)."""
    layer = _layer(kernel, seed=L)
    u = torch.randn(3, L, 4, dtype=torch.float64)  # (B L H)
    y_conv = layer(u)
    assert y_conv.shape == (3, L, 4)
    torch.testing.assert_close(y_conv, layer.forward_recurrent(u), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("L", [1, 8, 13, 64])
def test_dss_softmax_with_growing_modes_values_and_gradients(L):
    """The shifted (numerically stable) row-softmax agrees with the plain per-mode normalised
    recurrence, in value and in gradient (the shift must not cut the gradient)."""
    layer = _with_growing_modes(_layer("softmax", seed=L))
    u = torch.randn(2, L, 4, dtype=torch.float64)
    y_conv, y_rec = layer(u), layer.forward_recurrent(u)
    torch.testing.assert_close(y_conv, y_rec, rtol=1e-8, atol=1e-10)
    params = [layer.Lambda_re, layer.Lambda_im, layer.log_dt, layer.W]
    g_conv = torch.autograd.grad(y_conv.square().sum(), params)
    g_rec = torch.autograd.grad(y_rec.square().sum(), params)
    for a, b in zip(g_conv, g_rec):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_dss_softmax_kernel_stays_finite_for_long_sequences():
    layer = _with_growing_modes(_layer("softmax")).float()
    K = layer.kernel(20_000)  # e^{0.3 dt k} would overflow float32 without the row-max shift
    assert K.dtype == torch.float32 and torch.isfinite(K).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_kernel_follows_the_papers_formula(kernel):
    """Proposition 1 written out term by term:
    exp:     K_k = Re Σ_i W_i (e^{λ_i Δ} - 1)/λ_i · e^{k λ_i Δ}
    softmax: K_k = Re Σ_i W_i / λ_i · e^{k λ_i Δ} / Σ_{r<L} e^{r λ_i Δ}"""
    layer = _layer(kernel, H=2, N=6)
    L = 9
    Lambda = torch.complex(
        -torch.exp(layer.log_Lambda_re) if kernel == "exp" else layer.Lambda_re, layer.Lambda_im
    ).detach()
    W = torch.view_as_complex(layer.W).detach()
    expected = torch.zeros(2, L, dtype=torch.float64)
    for h in range(2):
        dt = float(torch.exp(layer.log_dt[h].detach()))
        for k in range(L):
            total = 0j
            for i in range(3):
                lam, w = complex(Lambda[i]), complex(W[h, i])
                e = torch.exp(torch.tensor(lam * dt, dtype=torch.complex128)).item()
                if kernel == "exp":
                    total += w * (e - 1) / lam * e**k
                else:
                    total += w / lam * e**k / sum(e**r for r in range(L))
            expected[h, k] = total.real
    torch.testing.assert_close(layer.kernel(L).detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_initialisation_is_the_hippo_normal_spectrum(kernel):
    """Λ starts at the eigenvalues of HiPPO-LegS's normal part S = A + p p^T with Im > 0."""
    N = 16
    layer = _layer(kernel, N=N)
    A, _ = hippo_legs(N)
    p = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    evals = torch.linalg.eigvals(A + torch.outer(p, p))  # (N)
    evals = evals[evals.imag > 0]
    evals = evals[torch.argsort(evals.imag, descending=True)]  # (N/2)
    Lambda_re = -torch.exp(layer.log_Lambda_re) if kernel == "exp" else layer.Lambda_re
    # parameters are created in float32 (the default dtype), then the test layer is cast to float64
    torch.testing.assert_close(Lambda_re.detach(), evals.real, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.Lambda_im.detach(), evals.imag, rtol=1e-6, atol=1e-6)
    assert layer.W.shape == (4, N // 2, 2) and layer.log_dt.shape == (4,) and layer.Lambda_im.shape == (N // 2,)


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_every_parameter_gets_a_gradient(kernel):
    layer = _layer(kernel, seed=2)
    layer(torch.randn(2, 10, 4, dtype=torch.float64)).square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_layer_is_causal(kernel):
    layer = _layer(kernel, seed=3)
    u = torch.randn(1, 30, 4, dtype=torch.float64)
    u2 = u.clone()
    u2[:, 20:] += torch.randn(1, 10, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(u)[:, :20], layer(u2)[:, :20])
    assert not torch.allclose(layer(u)[:, 20:], layer(u2)[:, 20:])


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_body_before_pooling_is_causal(kernel):
    """Causal for a fixed L. (DSS-softmax normalises over the whole length, so changing L
    changes every output; changing inputs after t at the same L does not touch steps <= t.)"""
    torch.manual_seed(0)
    model = sd.build_model(
        "dss", d_input=3, n_classes=5, d_model=8, n_layers=2, d_state=8, variant=kernel, ads="tanh"
    ).double()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 10:] = torch.randn(2, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(model.features(x)[:, :10], model.features(x2)[:, :10])
    assert not torch.allclose(model.features(x)[:, 10:], model.features(x2)[:, 10:])


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_with_ads_in_every_block_gives_logits(kernel):
    model = sd.build_model("dss", d_input=8, n_classes=10, kernel=kernel, ads="tanh")
    assert model.ads == "tanh"
    assert all(isinstance(b.ads_module, AdaptiveScaling) and isinstance(b.mixer, DSS) for b in model.blocks)
    logits = model(torch.randn(4, 8, 8))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(variant="cauchy"), "variant must be one of exp, softmax"),
        (dict(kernel="cauchy"), "kernel must be one of auto, torch, numba"),
        (dict(d_state=5), "d_state must be an even integer"),
        (dict(d_state=0), "d_state must be an even integer"),
        (dict(dt_min=-1e-3), "need 0 < dt_min <= dt_max"),
        (dict(dt_min=0.5, dt_max=0.1), "need 0 < dt_min <= dt_max"),
        (dict(dt_min=float("nan")), "dt_min must be a finite number"),
        (dict(init="lin"), "unknown parameter"),
    ],
)
def test_dss_bad_parameters_raise_clear_errors(params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.build_model("dss", d_input=4, n_classes=3, **params)


def _train(data, kernel):
    clf = train_on_digits("dss", data, kernel=kernel, **SMALL)
    return clf


@pytest.fixture(scope="module")
def trained_dss(digits):
    return {kernel: _train(digits, kernel) for kernel in KERNELS}


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_trains_on_digits(trained_dss, digits, kernel):
    # measured 0.82-0.89 (exp) and 0.84-0.85 (softmax) over seeds 0-2 (chance 0.1)
    assert trained_dss[kernel].accuracy(digits.x_test, digits.y_test) > 0.7


@pytest.mark.parametrize("kernel", KERNELS)
def test_dss_checkpoint_round_trip(trained_dss, digits, tmp_path, kernel):
    clf = trained_dss[kernel]
    sd.save(clf, tmp_path / "dss")
    clf2 = sd.load(tmp_path / "dss", device_type="cpu")
    assert clf2.body.blocks[0].mixer.variant == kernel
    x = digits.x_test[:50]
    assert (clf2.predict(x) == clf.predict(x)).all()
