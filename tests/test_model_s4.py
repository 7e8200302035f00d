"""S4 (Gu et al., ICLR 2022): HiPPO-LegS NPLR, the Cauchy/Woodbury kernel against the dense
recurrence, causality, AdS, errors, training and checkpoints of the ``s4`` model plugin."""

import pytest
import torch

import ssmdefense as sd
from ssmdefense.models import AdaptiveScaling
from ssmdefense.models.s4 import S4, hippo_legs, hippo_legs_nplr

# dt up to 1 suits the short (L = 8) digit rows, as in conftest.TINY
SMALL = dict(d_model=32, n_layers=1, d_state=16, dt_min=1e-2, dt_max=1.0)


def _layer(seed=0, H=4, N=16, dt_min=1e-2, dt_max=0.5) -> S4:
    """The S4 mixer of a model built by name, in float64."""
    torch.manual_seed(seed)
    model = sd.build_model("s4", d_input=3, n_classes=2, d_model=H, n_layers=1, d_state=N, dt_min=dt_min, dt_max=dt_max)
    layer = model.blocks[0].mixer
    assert isinstance(layer, S4)
    return layer.double()


@pytest.mark.parametrize("N", [2, 8, 32])
def test_hippo_legs_nplr_reconstructs_hippo(N):
    """V diag(Λ) V* - p p^T is HiPPO-LegS's A (conjugate halves appended), and V V* B = B."""
    Lambda, P, B, V = hippo_legs_nplr(N)
    A, B_legs = hippo_legs(N)
    V_full = torch.cat([V, V.conj()], dim=1)  # (N N)
    Lambda_full, P_full, B_full = (torch.cat([t, t.conj()]) for t in (Lambda, P, B))
    p = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    torch.testing.assert_close(V_full.conj().T @ V_full, torch.eye(N, dtype=torch.complex128))
    A_rebuilt = V_full @ torch.diag(Lambda_full) @ V_full.conj().T - torch.outer(p, p)
    torch.testing.assert_close(A_rebuilt, A.to(torch.complex128), rtol=0, atol=1e-12)
    torch.testing.assert_close(V_full @ B_full, B_legs.to(torch.complex128), rtol=0, atol=1e-12)
    torch.testing.assert_close(V_full @ P_full, p.to(torch.complex128), rtol=0, atol=1e-12)
    assert torch.all(Lambda.real == -0.5) and torch.all(Lambda.imag > 0)


def test_hippo_legs_matrix():
    """A_nk = -sqrt(2n+1) sqrt(2k+1) below the diagonal, -(n+1) on it, 0 above; B_n = sqrt(2n+1)."""
    A, B = hippo_legs(3)
    r3, r5 = 3**0.5, 5**0.5
    expected = torch.tensor([[-1.0, 0, 0], [-r3, -2, 0], [-r5, -r5 * r3, -3]], dtype=torch.float64)
    torch.testing.assert_close(A, expected)
    torch.testing.assert_close(B, torch.tensor([1.0, r3, r5], dtype=torch.float64))


@pytest.mark.parametrize("L", [1, 8, 13, 64])
def test_s4_convolution_equals_recurrence(L):
    """test_cnn_is_rnn: Cauchy + Woodbury + irfft kernel == dense bilinear recurrence (float64)."""
    layer = _layer(seed=L)
    u = torch.randn(3, L, 4, dtype=torch.float64)  # (B L H)
    y_conv = layer(u)
    assert y_conv.shape == (3, L, 4)
    torch.testing.assert_close(y_conv, layer.forward_recurrent(u), rtol=1e-8, atol=1e-10)


def test_s4_kernel_length_doubles_and_truncates():
    """One layer on a growing, then shrinking length: C̃ doubles (8 -> 32), shorter L truncates."""
    layer = _layer(seed=1)
    C_init = torch.view_as_complex(layer.C_tilde.detach().clone())  # (H N/2) the random C
    for L, l_kernel in [(8, 8), (20, 32), (5, 32), (32, 32)]:
        u = torch.randn(2, L, 4, dtype=torch.float64)
        torch.testing.assert_close(layer(u), layer.forward_recurrent(u), rtol=1e-8, atol=1e-10)
        assert int(layer.l_kernel) == l_kernel
    # the stored C̃ still represents the initial C: C = C̃ (I - Ā^l_kernel)^{-1}
    torch.testing.assert_close(layer.discretize()[2][:, : layer.N // 2], C_init, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(layer.kernel(7), layer.kernel(32)[:, :7])


def test_s4_float32_kernel_is_accurate_at_paper_length():
    torch.manual_seed(0)
    layer32 = S4(d_model=4, d_state=32)  # paper dt range, L = 784 (MNIST pixels)
    layer64 = S4(4, 32).double()
    layer64.load_state_dict(layer32.state_dict())
    K32, K64 = layer32.kernel(784), layer64.kernel(784)
    assert K32.dtype == torch.float32 and K32.shape == (4, 784)
    assert (K32.double() - K64).abs().max() < 1e-5 * K64.abs().max()


def test_s4_every_parameter_gets_a_gradient():
    layer = _layer(seed=2)
    layer(torch.randn(2, 10, 4, dtype=torch.float64)).square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_s4_layer_is_causal():
    layer = _layer(seed=3)
    u = torch.randn(1, 30, 4, dtype=torch.float64)
    u2 = u.clone()
    u2[:, 20:] += torch.randn(1, 10, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(u)[:, :20], layer(u2)[:, :20])
    assert not torch.allclose(layer(u)[:, 20:], layer(u2)[:, 20:])


def test_s4_body_before_pooling_is_causal():
    torch.manual_seed(0)
    model = sd.build_model("s4", d_input=3, n_classes=5, d_model=8, n_layers=2, d_state=8, ads="tanh").double()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 10:] = torch.randn(2, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(model.features(x)[:, :10], model.features(x2)[:, :10])
    assert not torch.allclose(model.features(x)[:, 10:], model.features(x2)[:, 10:])


def test_s4_with_ads_in_every_block_gives_logits():
    model = sd.build_model("s4", d_input=8, n_classes=10, ads="tanh")
    assert model.ads == "tanh"
    assert all(isinstance(b.ads_module, AdaptiveScaling) and isinstance(b.mixer, S4) for b in model.blocks)
    logits = model(torch.randn(4, 8, 8))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(d_state=7), "d_state must be an even integer"),
        (dict(d_state=0), "d_state must be an even integer"),
        (dict(d_state=16.0), "d_state must be an even integer"),
        (dict(dt_min=0.0), "need 0 < dt_min <= dt_max"),
        (dict(dt_min=0.5, dt_max=0.1), "need 0 < dt_min <= dt_max"),
        (dict(dt_max="big"), "dt_max must be a finite number"),
        (dict(kernel="exp"), "unknown parameter"),
    ],
)
def test_s4_bad_parameters_raise_clear_errors(params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.build_model("s4", d_input=4, n_classes=3, **params)
