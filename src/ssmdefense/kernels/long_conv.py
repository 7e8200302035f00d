"""Causal long convolution: by FFT with a hand-written backward, or, for short sequences, directly.

``y = K * u`` per channel (``y_l = Σ_{m<=l} K_m u_{l-m}``) is what S4, S4D, DSS and Mega run in their
convolutional view, through ``long_conv``: ``direct_conv`` up to ``DIRECT_MAX_L`` steps, ``fft_conv``
beyond. ``fft_conv_ref`` is the plain autograd reference of both.

``direct_conv`` multiplies by each channel's lower-triangular Toeplitz matrix ``T[h, l, m] = K[h, l - m]``
in one batched matrix product (autograd does the backward): O(B H L²) multiply-adds against the FFT's
O(B H L log L), but without its fixed costs (three real transforms forward, three backward, complex
products), which dominate at short L. Measured on one thread, forward + backward at B 64, H 64
(medians of 15, two other jobs on the cores): L 28 (the default image run's rows) 1.8 ms direct
against 8.5–9.1 ms by FFT; L 44 2.9 against 8.4; L 52 3.4 against 13.9; L 60 6.7 against 10.2; L 64
10.2 against 10.6; L 101 22.8 against 21.8; L 128 30.0 against 18.1; L 256 137 against 36. The
results differ from the FFT's by float rounding (2.5e-7 of the largest output in float32 at L 28).

``fft_conv`` does the two correlations of its backward directly in the frequency domain, reusing the
forward's transforms:

    grad_u = irfft(rfft(g) · conj(rfft(K)))[:L]        (the correlation of g with K)
    grad_K = irfft(Σ_b rfft(g) · conj(rfft(u)))[:L]    (the correlation of g with u, summed over the batch)

Autograd through ``rfft``/``irfft`` instead runs complex-to-complex transforms of the full padded
length for the backward; this one needs one real transform of g and two inverse ones (the one for K
is batch-free). Measured on one thread at B 32, H 64, L 784, forward + backward: 40-45 ms autograd,
30 ms here (``benchmarks/kernels.py``).
"""

from __future__ import annotations

import torch
from scipy.fft import next_fast_len
from torch.autograd.function import once_differentiable


def fft_length(L: int) -> int:
    """Transform length for a causal convolution of length L: at least 2L - 1 (so the circular
    convolution is a linear one), with prime factors <= 11 (scipy's ``next_fast_len``, the sizes
    pocketfft is fast at: 2L itself can be slow, e.g. 202 = 2 * 101 took 25-27 ms where 210 took
    10 ms, rfft, product and irfft forward + backward at L 101, B 64, H 64, one thread)."""
    return next_fast_len(2 * L - 1)


def fft_conv_ref(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Reference: causal convolution of ``u`` (B, H, L) with per-channel kernels ``K`` (H, L), autograd
    through torch.fft."""
    L = u.shape[-1]
    n = fft_length(L)
    u_f = torch.fft.rfft(u, n=n)  # (B H n/2+1)
    K_f = torch.fft.rfft(K, n=n)  # (H n/2+1)
    return torch.fft.irfft(u_f * K_f, n=n)[..., :L]  # (B H L)


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, K):
        L = u.shape[-1]
        n = fft_length(L)
        u_f = torch.fft.rfft(u, n=n)  # (B H n/2+1)
        K_f = torch.fft.rfft(K, n=n)  # (H n/2+1)
        ctx.save_for_backward(u_f, K_f)
        ctx.L, ctx.n = L, n
        return torch.fft.irfft(u_f * K_f, n=n)[..., :L]  # (B H L)

    @staticmethod
    @once_differentiable  # the saved transforms carry no graph: a double backward would be wrong
    def backward(ctx, g):  # g: (B H L)
        u_f, K_f = ctx.saved_tensors
        L, n = ctx.L, ctx.n
        g_f = torch.fft.rfft(g, n=n)  # (B H n/2+1)
        grad_u = grad_K = None
        if ctx.needs_input_grad[0]:
            grad_u = torch.fft.irfft(g_f * K_f.conj(), n=n)[..., :L]  # (B H L)
        if ctx.needs_input_grad[1]:
            grad_K = torch.fft.irfft((g_f * u_f.conj()).sum(0), n=n)[..., :L]  # (H L)
        return grad_u, grad_K


DIRECT_MAX_L = 60  # longest sequence ``long_conv`` convolves directly (the measurements above)


def _check_shapes(u: torch.Tensor, K: torch.Tensor) -> None:
    if u.ndim != 3 or K.ndim != 2 or K.shape != u.shape[1:]:
        raise ValueError(f"need u (B, H, L) and K (H, L); got {tuple(u.shape)} and {tuple(K.shape)}")


def fft_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Causal convolution of ``u`` (B, H, L) with per-channel kernels ``K`` (H, L) via FFT: (B, H, L)."""
    _check_shapes(u, K)
    return _FFTConv.apply(u, K)


def toeplitz(K: torch.Tensor) -> torch.Tensor:
    """Each channel's lower-triangular Toeplitz matrix of ``K`` (H, L): T (H, L, L), ``T[h, l, m] =
    K[h, l - m]`` for l >= m, else 0 (a gather: autograd takes gradients back to K)."""
    steps = torch.arange(K.shape[-1], device=K.device)  # (L)
    lag = steps[:, None] - steps[None, :]  # (L L): l - m
    return K[:, lag.clamp(min=0)] * (lag >= 0)  # (H L L)


def direct_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Causal convolution of ``u`` (B, H, L) with ``K`` (H, L) as a product with each channel's
    Toeplitz matrix: (B, H, L). Autograd differentiates it (gather, product)."""
    _check_shapes(u, K)
    return _toeplitz_product(u, toeplitz(K))  # (B H L)


def _toeplitz_product(u: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """y[b, h] = T[h] u[b, h] for u (B, H, L) and T (H, L, L): one batched matrix product over the
    channels, on u copied once into (H, B, L) memory. (Given u as the SSMs hold it, a transposed view
    of (B, L, H) memory, ``einsum`` made a copy per channel: 3 ms against 0.3 ms at B 55, H 64, L 28.)"""
    u_c = u.transpose(0, 1).contiguous()  # (H B L)
    return torch.bmm(u_c, T.transpose(1, 2)).transpose(0, 1)  # (B H L): y[b, h, l] = sum_m u[b, h, m] T[h, l, m]


def conv_operator(K: torch.Tensor) -> torch.Tensor:
    """What ``apply_conv`` applies for ``K`` (H, L): its Toeplitz matrices (H, L, L) up to
    ``DIRECT_MAX_L`` steps, ``K`` itself beyond. A caller that keeps the kernel while the weights
    stay the same (``ConvolutionalSSM``) keeps this, so the matrices are not rebuilt on every call."""
    return toeplitz(K) if K.shape[-1] <= DIRECT_MAX_L else K


def apply_conv(u: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """Causal convolution of ``u`` (B, H, L) by ``conv_operator(K)``: (B, H, L)."""
    if operator.ndim == 3:  # Toeplitz matrices (H L L)
        if operator.shape[0] != u.shape[1] or operator.shape[-1] != u.shape[-1]:
            raise ValueError(f"need u (B, H, L) and T (H, L, L); got {tuple(u.shape)} and {tuple(operator.shape)}")
        return _toeplitz_product(u, operator)  # (B H L)
    return fft_conv(u, operator)


def long_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Causal convolution of ``u`` (B, H, L) with ``K`` (H, L): directly (Toeplitz) up to
    ``DIRECT_MAX_L`` steps, by FFT beyond (whichever measured faster; the module docstring)."""
    _check_shapes(u, K)
    return apply_conv(u, conv_operator(K))  # (B H L)
