"""The STFT with a hand-written backward (``kernels/stft.py``, used by the mel front end's
``kernel="numba"``) against ``torch.stft`` and its autograd: values and gradients w.r.t. the clips in
float64 (gradcheck too) and float32, even and odd n_fft, windows shorter than n_fft, hops that do and
do not divide n_fft, the shortest clip reflect padding allows, batch 1; bad arguments."""

import pytest
import torch

from ssmdefense.kernels.stft import stft, stft_ref

CASES = [  # N, L, n_fft, hop, win_length
    (2, 37, 16, 5, 12),
    (3, 50, 15, 4, 15),  # odd n_fft: no Nyquist bin
    (1, 17, 16, 16, 16),  # hop = n_fft, batch 1
    (2, 5, 8, 3, 7),  # the shortest clip: L = n_fft // 2 + 1
    (2, 400, 64, 10, 40),  # the front end's shape of settings: a short window centred in a longer frame
]


def grads(f, x, w, n_fft, hop, g=None):
    x = x.clone().requires_grad_()
    y = f(x, n_fft, hop, w)  # (N F T)
    g = torch.randn_like(y) if g is None else g
    (grad,) = torch.autograd.grad(y, x, g)
    return y.detach(), grad, g


@pytest.mark.parametrize("N,L,n_fft,hop,wl", CASES)
def test_values_and_gradient_match_torch_stft_in_float64(N, L, n_fft, hop, wl):
    torch.manual_seed(0)
    x, w = torch.randn(N, L, dtype=torch.float64), torch.hann_window(wl, dtype=torch.float64)
    y_ref, g_ref, g = grads(stft_ref, x, w, n_fft, hop)
    y, g_x, _ = grads(stft, x, w, n_fft, hop, g)
    assert y.shape == (N, n_fft // 2 + 1, 1 + L // hop)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)  # the forward is torch.stft itself
    torch.testing.assert_close(g_x, g_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: stft(x, n_fft, hop, w), (x.requires_grad_(),))


def test_float32_gradient_of_one_second_clips_matches():
    torch.manual_seed(1)
    x, w = torch.randn(4, 16000), torch.hann_window(400)
    _, g_ref, g = grads(stft_ref, x, w, 512, 160)
    _, g_x, _ = grads(stft, x, w, 512, 160, g)
    assert torch.isfinite(g_x).all()
    torch.testing.assert_close(g_x, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(x=torch.randn(2, 1, 40)), "real clips"),
        (dict(x=torch.randn(2, 40, dtype=torch.complex64)), "real clips"),
        (dict(window=torch.hann_window(20)), "at most n_fft"),
        (dict(window=torch.hann_window(8).requires_grad_()), "constant"),
        (dict(hop=0), "hop_length"),
        (dict(x=torch.randn(2, 8)), "longer than"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = dict(x=torch.randn(2, 40), n_fft=16, hop=4, window=torch.hann_window(8)) | kwargs
    with pytest.raises(ValueError, match=match):
        stft(args["x"], args["n_fft"], args["hop"], args["window"])
