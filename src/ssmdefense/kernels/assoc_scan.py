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
"""

import torch


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
