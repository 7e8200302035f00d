"""The convolutional view's fast paths against their plain references: the FFT convolution's
hand-written backward, the direct (Toeplitz) convolution for short sequences and the choice between
them, and the split sum of powers that builds S4D/DSS kernels."""

import pytest
import torch

from ssmdefense.kernels import long_conv as LC
from ssmdefense.kernels.long_conv import direct_conv, fft_conv, fft_conv_ref
from ssmdefense.kernels.vandermonde import vandermonde, vandermonde_ref


@pytest.mark.parametrize(
    "conv, L",
    [(fft_conv, 1), (fft_conv, 2), (fft_conv, 7), (fft_conv, 101), (direct_conv, 1), (direct_conv, 2),
     (direct_conv, 28), (direct_conv, 60)],
)  # fmt: skip
def test_the_convolutions_match_the_autograd_reference_values_and_gradients(conv, L):
    """The FFT convolution's hand-written backward and the direct (Toeplitz) one, against autograd
    through ``fft_conv_ref``, in float64."""
    torch.manual_seed(L)
    u = torch.randn(3, 4, L, dtype=torch.float64, requires_grad=True)  # (B H L)
    K = torch.randn(4, L, dtype=torch.float64, requires_grad=True)  # (H L)
    g = torch.randn(3, 4, L, dtype=torch.float64)  # (B H L)
    y, y_ref = conv(u, K), fft_conv_ref(u, K)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(y, (u, K), g), torch.autograd.grad(y_ref, (u, K), g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_direct_conv_gradcheck():
    torch.manual_seed(0)
    u = torch.randn(2, 2, 9, dtype=torch.float64, requires_grad=True)  # (B H L)
    K = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)  # (H L)
    assert torch.autograd.gradcheck(direct_conv, (u, K))


def test_long_conv_takes_the_direct_product_up_to_its_threshold_and_the_fft_beyond(monkeypatch):
    calls = []
    monkeypatch.setattr(LC, "_toeplitz_product", lambda u, T: calls.append(("direct", u.shape[-1])))
    monkeypatch.setattr(LC, "fft_conv", lambda u, K: calls.append(("fft", u.shape[-1])))
    for L in (1, LC.DIRECT_MAX_L, LC.DIRECT_MAX_L + 1, 784):
        LC.long_conv(torch.zeros(1, 2, L), torch.zeros(2, L))
    assert calls == [("direct", 1), ("direct", LC.DIRECT_MAX_L), ("fft", LC.DIRECT_MAX_L + 1), ("fft", 784)]


def test_direct_conv_in_float32_is_the_fft_convolution_to_rounding():
    torch.manual_seed(0)
    u, K = torch.randn(64, 64, 28), torch.randn(64, 28)  # (B H L), (H L): the default image run's size
    y, y_fft = direct_conv(u, K), fft_conv(u, K)
    assert (y - y_fft).abs().max() <= 1e-5 * y_fft.abs().max()


def test_fft_conv_gradcheck_and_single_input_gradients():
    torch.manual_seed(0)
    u = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    K = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fft_conv, (u, K))
    (g_u,) = torch.autograd.grad(fft_conv(u, K.detach()).sum(), u)  # only u needs a gradient
    torch.testing.assert_close(g_u, torch.autograd.grad(fft_conv_ref(u, K.detach()).sum(), u)[0])


@pytest.mark.parametrize("conv", [fft_conv, direct_conv, lambda u, K: LC.apply_conv(u, LC.toeplitz(K))])
def test_the_convolutions_reject_mismatched_shapes(conv):
    with pytest.raises(ValueError, match="need u"):
        conv(torch.zeros(2, 3, 8), torch.zeros(3, 7))


@pytest.mark.parametrize("L", [5, 100])
def test_a_kept_operator_convolves_as_the_kernel_does(L):
    """``apply_conv(u, conv_operator(K))``, what the convolutional SSMs keep between calls, is
    ``long_conv(u, K)``: Toeplitz matrices for short sequences, K itself for the FFT."""
    torch.manual_seed(L)
    u, K = torch.randn(2, 3, L, dtype=torch.float64), torch.randn(3, L, dtype=torch.float64)  # (B H L), (H L)
    operator = LC.conv_operator(K)
    assert operator.shape == ((3, L, L) if L <= LC.DIRECT_MAX_L else (3, L))
    torch.testing.assert_close(LC.apply_conv(u, operator), LC.long_conv(u, K), rtol=0, atol=0)


@pytest.mark.parametrize("L", [1, 2, 5, 16, 17, 784])
@pytest.mark.parametrize("shifted", [False, True])
def test_vandermonde_matches_direct_exponentials(L, shifted):
    torch.manual_seed(L)
    H, N = 3, 5
    log_z = torch.complex(
        -torch.rand(H, N, dtype=torch.float64) * 0.05, torch.randn(H, N, dtype=torch.float64)
    ).requires_grad_()  # (H N)
    W = torch.randn(H, N, dtype=torch.complex128, requires_grad=True)  # (H N)
    shift = torch.where(torch.rand(H, N) > 0.5, L - 1.0, 0.0).double() if shifted else None
    out, ref = vandermonde(W, log_z, L, shift), vandermonde_ref(W, log_z, L, shift)
    assert out.shape == (H, L)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn(H, L, dtype=torch.float64)
    grads = torch.autograd.grad((out.real * g).sum(), (W, log_z))
    grads_ref = torch.autograd.grad((ref.real * g).sum(), (W, log_z))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_vandermonde_float32_stays_close_at_long_lengths():
    torch.manual_seed(0)
    log_z = torch.complex(-torch.rand(4, 8) * 1e-3, torch.rand(4, 8))  # slowly decaying, rotating modes
    W = torch.randn(4, 8, dtype=torch.cfloat)
    out = vandermonde(W, log_z, 16000)
    ref = vandermonde_ref(W.cdouble(), log_z.cdouble(), 16000)
    assert torch.isfinite(out.real).all()
    torch.testing.assert_close(out.cdouble(), ref, rtol=1e-3, atol=1e-3)
