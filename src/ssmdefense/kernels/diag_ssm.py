"""Diagonal linear time-invariant SSM: the fast convolution and the plain step-by-step reference.

A diagonal SSM with per-channel state ``x`` (H, N) runs

    x_k = dA * x_{k-1} + dB * u_k,        y_k = 2 Re(sum_n C_n x_{k,n})

which is a causal convolution ``y = K * u`` with kernel ``K_l = 2 Re(sum_n C_n dB_n dA_n^l)``.
``fft_conv`` is the fast path (O(L log L)); ``diag_ssm_recurrence`` is the reference (O(L)
sequential steps) that tests compare it with.
"""

import torch
from scipy.fft import next_fast_len


def fft_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Causal convolution of ``u`` (B, H, L) with per-channel kernels ``K`` (H, L) via FFT."""
    L = u.shape[-1]
    # Zero-pad to at least 2L - 1 so the circular FFT convolution becomes a linear (causal) one, and
    # to a length whose prime factors are all <= 11 (scipy's next_fast_len, the sizes pocketfft is
    # fast at): 2L itself can be slow, e.g. 2 * 101 = 202 has the prime 101 (rfft, product and irfft,
    # forward + backward, at L = 101, B 64, H 64: 25-27 ms at n = 202, 10 ms at n = 210 on one CPU
    # thread); where 2L is already fast (1568 for L = 784) it is kept.
    n = next_fast_len(2 * L - 1)
    u_f = torch.fft.rfft(u, n=n)  # (B H n/2+1)
    K_f = torch.fft.rfft(K, n=n)  # (H n/2+1)
    y = torch.fft.irfft(u_f * K_f, n=n)[..., :L]  # (B H L)
    return y


def diag_ssm_recurrence(u: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Reference: run the discretised diagonal SSM one step at a time.

    Args:
        u: input (B, H, L), real.
        dA, dB, C: discretised state matrix, input matrix and output matrix, complex (H, N).
    Returns:
        y: (B, H, L), real, without the ``D * u`` skip term.
    """
    B, H, L = u.shape
    x = torch.zeros(B, H, dA.shape[-1], dtype=dA.dtype, device=u.device)  # (B H N)
    ys = []
    for k in range(L):
        x = dA * x + dB * u[..., k, None]  # (B H N)
        ys.append(2 * torch.einsum("hn,bhn->bh", C, x).real)  # (B H)
    return torch.stack(ys, dim=-1)  # (B H L)
