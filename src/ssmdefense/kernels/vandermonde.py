"""The SSM convolution kernel's sum of powers, ``K_l = Σ_n W_n z_n^(l - s_n)``, without L·N complex exps.

S4D, DSS (and S4's diagonal part) build their length-L kernel from N/2 complex modes per channel:
``K_l = Σ_n W_n exp(dtA_n (l - s_n))`` for l = 0..L-1 (``s_n`` an optional per-mode shift that DSS-softmax
uses to keep growing modes bounded). Computed directly, that is H·N/2·L complex exponentials, and
torch's complex ``exp`` is not vectorised on the CPU: profiling S4D (B 32, H 64, L 784, one thread)
found it the single largest cost of the whole model, forward plus backward, larger than the FFT
convolution itself.

``vandermonde`` splits every exponent ``l = T k + j`` (T ~ sqrt(L)): ``z^l = z^(T k) · z^j``, so it takes
H·N/2·(K + T) ~ 2 sqrt(L) exps and one batched product (H, K, N) × (H, N, T), a complex matmul. Each
power is still one exp of its exact exponent (or of a sum of two), so the values agree with the direct
computation to float rounding (``vandermonde_ref``, which tests compare it with). Measured at H 64,
N/2 16, L 784, forward + backward, one thread: 120 ms direct, 12 ms split.
"""

from __future__ import annotations

import math

import torch


def vandermonde_ref(W: torch.Tensor, log_z: torch.Tensor, L: int, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: ``Σ_n W_n exp(log_z_n (l - s_n))`` for l = 0..L-1, one exp per (mode, l).

    Args:
        W, log_z: complex (..., N). shift: real (..., N) or None (zero).
    Returns:
        complex (..., L).
    """
    pos = torch.arange(L, device=log_z.device, dtype=log_z.real.dtype)  # (L)
    if shift is not None:
        pos = pos - shift[..., None]  # (... N L)
    return torch.einsum("...n,...nl->...l", W, torch.exp(log_z[..., None] * pos))  # (... L)


def vandermonde(W: torch.Tensor, log_z: torch.Tensor, L: int, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Same result as ``vandermonde_ref``, from about 2 sqrt(L) exps per mode (see the module docstring)."""
    if L < 1:
        raise ValueError(f"L must be >= 1; got {L}")
    T = math.isqrt(L - 1) + 1  # ceil(sqrt(L)) steps inside a block
    K = -(-L // T)  # blocks
    real = log_z.real.dtype
    j = torch.arange(T, device=log_z.device, dtype=real)  # (T)
    k = T * torch.arange(K, device=log_z.device, dtype=real)  # (K)
    if shift is not None:
        k = k - shift[..., None]  # (... N K)
    inner = torch.exp(log_z[..., None] * j)  # (... N T) z^j
    outer = W[..., None] * torch.exp(log_z[..., None] * k)  # (... N K) W z^(T k - s)
    K_blocks = torch.einsum("...nk,...nt->...kt", outer, inner)  # (... K T)
    return K_blocks.flatten(-2)[..., :L]  # (... L)
