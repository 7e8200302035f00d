"""Linear recurrence ``x_k = a_k * x_{k-1} + b_k`` (``x_{-1} = 0``): parallel scan and plain reference.

With elementwise (possibly complex) ``a`` and ``b``, the recurrence is a prefix "sum" under the
associative operator on pairs

    (a_i, b_i) • (a_j, b_j) = (a_j a_i, a_j b_i + b_j)        (i earlier than j)

whose second component, accumulated from the start, is ``x``. ``associative_scan`` evaluates all L
prefixes in O(log L) parallel steps with O(L) total work (the recursive odd/even scheme of Blelloch
1990, also used by ``jax.lax.associative_scan``): combine neighbouring pairs, scan the half-length
sequence recursively (giving every odd prefix), then fix up the even positions with one more
combine. ``sequential_scan`` is the reference: L steps, one after the other. Both are plain
PyTorch, so autograd differentiates through them.

``diagonal_scan`` is the time-invariant diagonal case S5 needs (``a`` (P,), ``b`` (B, L, P),
complex) as a Numba kernel (``diag_scan_numba``; CPU ``njit(parallel=True)``, CUDA ``cuda.jit``)
wrapped in a ``torch.autograd.Function`` with the adjoint recurrence as its backward: L sequential
steps per state, but each is one fused multiply-add instead of the O(log L) levels of full-size
tensor operations (and their autograd graph) of ``associative_scan``.
"""

import torch
from torch.autograd.function import once_differentiable

from . import backend


def _combine(a_i, b_i, a_j, b_j):
    """(a_i, b_i) • (a_j, b_j): first apply step i, then step j."""
    return a_j * a_i, a_j * b_i + b_j


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """Merge along dim 0: result[2i] = even[i], result[2i+1] = odd[i] (len(even) - len(odd) in {0, 1})."""
    n_odd = odd.shape[0]
    pairs = torch.stack([even[:n_odd], odd], dim=1)  # (L/2 2 ...)
    merged = pairs.reshape(2 * n_odd, *odd.shape[1:])  # (2*(L/2) ...)
    if even.shape[0] > n_odd:
        merged = torch.cat([merged, even[n_odd:]], dim=0)  # (L ...)
    return merged


def _scan(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan along dim 0 of (a, b), each (L, ...): returns every prefix (A_k, X_k)."""
    L = a.shape[0]
    if L < 2:
        return a, b
    # 1. combine pairs (2i, 2i+1): a half-length sequence of two-step elements
    a_red, b_red = _combine(a[0:-1:2], b[0:-1:2], a[1::2], b[1::2])  # (L//2 ...)
    # 2. its scan gives the prefixes ending at the odd positions 2i+1
    a_odd, b_odd = _scan(a_red, b_red)  # (L//2 ...)
    # 3. even positions 2i (i >= 1): prefix up to 2i-1, then step 2i; position 0 is its own prefix
    n = (L - 1) // 2
    a_even, b_even = _combine(a_odd[:n], b_odd[:n], a[2::2], b[2::2])  # ((L-1)//2 ...)
    a_even = torch.cat([a[:1], a_even], dim=0)  # ((L+1)//2 ...)
    b_even = torch.cat([b[:1], b_even], dim=0)  # ((L+1)//2 ...)
    return _interleave(a_even, a_odd), _interleave(b_even, b_odd)


def associative_scan(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """All states of ``x_k = a_k * x_{k-1} + b_k`` along ``dim`` by a log-depth parallel scan.

    Args:
        a: per-step multipliers, real or complex, broadcastable to ``b`` (e.g. a time-invariant
            ``(P,)`` against ``b`` of shape ``(B, L, P)``).
        b: per-step inputs, real or complex, e.g. ``(B, L, P)``.
        dim: the time axis of ``b``.
    Returns:
        x with the shape of ``b`` (dtype of ``a * b``), ``x[k] = sum_{j<=k} (prod_{j<i<=k} a_i) b_j``.
    """
    a, b = torch.broadcast_tensors(a, b)
    a_t = a.movedim(dim, 0)  # (L ...)
    b_t = b.movedim(dim, 0)  # (L ...)
    _, x = _scan(a_t, b_t)  # (L ...)
    return x.movedim(0, dim)


def sequential_scan(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Reference for ``associative_scan``: run ``x_k = a_k * x_{k-1} + b_k`` one step at a time."""
    a, b = torch.broadcast_tensors(a, b)
    a_t = a.movedim(dim, 0)  # (L ...)
    b_t = b.movedim(dim, 0)  # (L ...)
    x = torch.zeros_like(a_t[0] * b_t[0])  # (...)
    xs = []
    for k in range(b_t.shape[0]):
        x = a_t[k] * x + b_t[k]  # (...)
        xs.append(x)
    return torch.stack(xs, dim=0).movedim(0, dim)


class _DiagonalScan(torch.autograd.Function):
    """The Numba complex diagonal scan; saves ``a`` and the output ``x`` (the backward needs x_{k-1})."""

    @staticmethod
    def forward(ctx, a, b):
        from . import diag_scan_numba as nbk

        cplx = torch.complex128 if torch.complex128 in (a.dtype, b.dtype) else torch.complex64
        a_c = a.detach().to(cplx).contiguous()  # (P)
        b_c = b.detach().to(cplx).contiguous()  # (B L P)
        x = torch.empty_like(b_c)  # (B L P)
        if b_c.is_cuda:
            with torch.cuda.device(b_c.device):
                arrays, stream = backend.cuda_arrays(a_c, b_c, x)
                nbk.diagonal_scan_forward_cuda(*arrays, stream=stream)
        else:
            backend.sync_threads()
            nbk.diagonal_scan_forward_cpu(a_c.numpy(), b_c.numpy(), x.numpy())
        ctx.save_for_backward(a_c, x)
        ctx.in_dtypes = (a.dtype, b.dtype)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, g_x):
        from . import diag_scan_numba as nbk

        a_c, x = ctx.saved_tensors
        g_x = g_x.to(x.dtype).contiguous()  # (B L P)
        g_b = torch.empty_like(x)  # (B L P)
        g_a = x.new_zeros(x.shape[0], x.shape[2])  # (B P) per-batch partials (zeros: L = 0 launches nothing)
        if x.is_cuda:
            with torch.cuda.device(x.device):
                arrays, stream = backend.cuda_arrays(a_c, x, g_x, g_b, g_a)
                nbk.diagonal_scan_backward_cuda(*arrays, stream=stream)
        else:
            backend.sync_threads()
            nbk.diagonal_scan_backward_cpu(a_c.numpy(), x.numpy(), g_x.numpy(), g_b.numpy(), g_a.numpy())
        g_a = g_a.sum(dim=0)  # (P)
        grads = (g_a, g_b)
        return tuple(
            g.to(dtype) if need else None for g, dtype, need in zip(grads, ctx.in_dtypes, ctx.needs_input_grad)
        )


def diagonal_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of ``x_k = a * x_{k-1} + b_k`` (``x_{-1} = 0``) along dim 1 for a time-invariant
    diagonal ``a``, by the Numba kernels on the tensors' device (CPU: ``njit(parallel=True)`` with
    torch's thread count; CUDA: ``cuda.jit`` on torch's current stream); differentiable in a and b.
    Same result as ``associative_scan(a, b, dim=1)``.

    Args:
        a: (P,), complex: the per-state multiplier (S5's Λ̄).
        b: (B, L, P), complex: the per-step inputs (S5's B̄ u_k).
    Returns:
        x: (B, L, P), complex128 when either input is, else complex64.
    Raises:
        ValueError: shapes or dtypes that do not fit.
        KernelUnavailableError: Numba cannot run on the tensors' device.
    """
    if b.ndim != 3 or not b.is_complex():
        raise ValueError(f"b must be complex (B, L, P); got shape {tuple(b.shape)}, dtype {b.dtype}")
    if a.ndim != 1 or a.shape[0] != b.shape[2] or not a.is_complex():
        raise ValueError(
            f"a must be complex (P,) with P = b.shape[2] = {b.shape[2]}; got shape {tuple(a.shape)}, dtype {a.dtype}"
        )
    if a.device != b.device:
        raise ValueError(f"a is on {a.device} but b is on {b.device}")
    problem = backend.device_problem(b.device.type)
    if problem:
        raise backend.KernelUnavailableError(f"diagonal_scan: the Numba kernel cannot run on {b.device}: {problem}")
    return _DiagonalScan.apply(a, b)
