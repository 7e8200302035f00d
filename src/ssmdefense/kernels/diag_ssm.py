"""Diagonal linear time-invariant SSM: the fast convolution, the Numba scan and the plain
step-by-step reference.

A diagonal SSM with per-channel state ``x`` (H, N) runs

    x_k = dA * x_{k-1} + dB * u_k,        y_k = 2 Re(sum_n C_n x_{k,n})

which is a causal convolution ``y = K * u`` with kernel ``K_l = 2 Re(sum_n C_n dB_n dA_n^l)``
(``kernels.vandermonde`` builds K, ``kernels.long_conv.long_conv`` applies it: by FFT in O(L log L),
or directly for short sequences).
``diag_ssm_recurrence`` is the reference (O(L) sequential steps) that tests compare both with.
``diag_ssm_scan`` computes the recurrence itself with the Numba kernels of ``diag_scan_numba`` (CPU
``njit(parallel=True)``, CUDA ``cuda.jit``) as a
``torch.autograd.Function`` with a hand-written backward: O(L N) work per channel, memory O(B H L)
(the states are recomputed in the backward, never stored as (B, H, L, N)), and no kernel of length
L to build. On CPU (float32, B 32, H 64, N 32, one thread) it measured faster than S4D's
``vandermonde`` kernel + FFT convolution in the forward at L 784, 4,096 and 16,000, and in forward +
backward at 4,096 and 16,000 but not at 784.
"""

import torch
from torch.autograd.function import once_differentiable

from . import backend


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


def _check_diag_ssm(u: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor) -> None:
    """ValueError with a clear message unless u is real (B, H, L) and dA, dB, C complex (H, N) on u's device."""
    if u.ndim != 3 or u.is_complex() or not u.is_floating_point():
        raise ValueError(f"u must be real floating point (B, H, L); got shape {tuple(u.shape)}, dtype {u.dtype}")
    H = u.shape[1]
    if dA.ndim != 2 or dA.shape[0] != H:
        raise ValueError(f"dA must be (H={H}, N); got shape {tuple(dA.shape)}")
    for name, M in (("dA", dA), ("dB", dB), ("C", C)):
        if tuple(M.shape) != tuple(dA.shape):
            raise ValueError(f"{name} must have dA's shape {tuple(dA.shape)}; got {tuple(M.shape)}")
        if not M.is_complex():
            raise ValueError(f"{name} must be complex; got dtype {M.dtype}")
        if M.device != u.device:
            raise ValueError(f"{name} is on {M.device} but u is on {u.device}")


def _diag_ssm_dtypes(u, dA, dB, C) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) compute dtypes: double when any input is double, else single (as torch promotes)."""
    double = u.dtype == torch.float64 or any(M.dtype == torch.complex128 for M in (dA, dB, C))
    return (torch.float64, torch.complex128) if double else (torch.float32, torch.complex64)


class _DiagSSMScan(torch.autograd.Function):
    """The Numba diagonal SSM scan with its hand-written backward. Saves only the (cast) inputs: the
    backward kernel recomputes the states it needs."""

    @staticmethod
    def forward(ctx, u, dA, dB, C):
        from . import diag_scan_numba as nbk

        real, cplx = _diag_ssm_dtypes(u, dA, dB, C)
        u_c = u.detach().to(real).contiguous()  # (B H L)
        dA_c, dB_c, C_c = (M.detach().to(cplx).contiguous() for M in (dA, dB, C))  # (H N)
        if u_c.is_cuda:
            y = torch.zeros_like(u_c)  # (B H L), zeros: with N > 32 the kernel adds partial sums into it
            with torch.cuda.device(u_c.device):
                arrays, stream = backend.cuda_arrays(u_c, dA_c, dB_c, C_c, y)
                nbk.diag_ssm_forward_cuda(*arrays, stream=stream)
        else:
            y = torch.empty_like(u_c)  # (B H L)
            backend.sync_threads()
            nbk.diag_ssm_forward_cpu(u_c.numpy(), dA_c.numpy(), dB_c.numpy(), C_c.numpy(), y.numpy())
        ctx.save_for_backward(u_c, dA_c, dB_c, C_c)
        ctx.in_dtypes = (u.dtype, dA.dtype, dB.dtype, C.dtype)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y):
        from . import diag_scan_numba as nbk

        u_c, dA_c, dB_c, C_c = ctx.saved_tensors
        g_y = g_y.to(u_c.dtype).contiguous()  # (B H L)
        B, H, L = u_c.shape
        N = dA_c.shape[1]
        if u_c.is_cuda:
            g_u = torch.zeros_like(u_c)  # (B H L), zeros: with N > 32 the kernel adds partial sums into it
            parts = torch.zeros(3, B, H, N, dtype=dA_c.dtype, device=u_c.device)  # (3 B H N) per-batch partials
            with torch.cuda.device(u_c.device):
                arrays, stream = backend.cuda_arrays(u_c, dA_c, dB_c, C_c, g_y, g_u, parts[0], parts[1], parts[2])
                nbk.diag_ssm_backward_cuda(*arrays, stream=stream)
        else:
            g_u = torch.empty_like(u_c)  # (B H L)
            W = max(1, min(backend.sync_threads(), B * H))
            parts = torch.zeros(3, W, H, N, dtype=dA_c.dtype)  # (3 W H N) per-worker partials
            nbk.diag_ssm_backward_cpu(
                u_c.numpy(),
                dA_c.numpy(),
                dB_c.numpy(),
                C_c.numpy(),
                g_y.numpy(),
                g_u.numpy(),
                parts[0].numpy(),
                parts[1].numpy(),
                parts[2].numpy(),
            )
        g_dA, g_dB, g_C = parts.sum(dim=1)  # (H N) each
        grads = (g_u, g_dA, g_dB, g_C)
        return tuple(
            g.to(dtype) if need else None for g, dtype, need in zip(grads, ctx.in_dtypes, ctx.needs_input_grad)
        )


def diag_ssm_scan(u: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The diagonal SSM recurrence (``diag_ssm_recurrence``'s result) by the Numba kernels, on the
    tensors' device (CPU: ``njit(parallel=True)``, using torch's thread count; CUDA: ``cuda.jit`` on
    torch's current stream), differentiable in every input.

    Args:
        u: input (B, H, L), real.
        dA, dB, C: discretised state, input and output matrices, complex (H, N) (N stored modes;
            the output is 2 Re of their sum, so each stands for a conjugate pair).
    Returns:
        y: (B, H, L), real (float64 when any input is double precision, else float32), without the
        ``D * u`` skip term.
    Raises:
        ValueError: shapes or dtypes that do not fit.
        KernelUnavailableError: Numba cannot run on the tensors' device.
    """
    _check_diag_ssm(u, dA, dB, C)
    problem = backend.device_problem(u.device.type)
    if problem:
        raise backend.KernelUnavailableError(f"diag_ssm_scan: the Numba kernel cannot run on {u.device}: {problem}")
    return _DiagSSMScan.apply(u, dA, dB, C)
