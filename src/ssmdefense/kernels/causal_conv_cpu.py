"""The causal depthwise convolution + SiLU's CPU kernels (``@njit(parallel=True)``) and their
launchers; the reference and the ``autograd.Function`` are in ``causal_conv.py``.

Layout: channels last, as the Mamba block holds its activations: ``out`` and the gradients
(batch, L, E), C-contiguous; ``x`` (batch, L, S) C-contiguous with S >= E, of which the kernels read
the first E channels (so a view of the first half of the input projection's output is passed as
its whole rows, no copy; Numba vectorises only C-contiguous arrays: a strided view measured 2x
slower); the weight comes transposed, ``wT`` (K, E), and ``bias`` (E,). Each task runs one batch row over a block of
``T_BLOCK`` steps with the innermost loop over the (contiguous) channels, which LLVM vectorises;
no float sum is reordered (``fastmath=False``). The backward recomputes the pre-activation
(K multiply-adds per element) instead of storing it, and leaves dw and dbias per task, summed by
the launcher. The exp is ``selective_scan_math._exp`` (vectorisable); Numba's disk cache keys these
kernels on this file only, so after editing that one, touch this one too.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .selective_scan_math import _exp

T_BLOCK = 256  # steps per task: enough tasks for the threads at batch 1, small per-task buffers


@njit(inline="always", cache=True)
def _conv_step(x, wT, bias, b, t, acc):
    """acc[e] = bias[e] + sum_k wT[k, e] x[b, t - K + 1 + k, e] (zero before the start)."""
    K, E = wT.shape
    for e in range(E):
        acc[e] = bias[e]
    for k in range(max(0, K - 1 - t), K):
        s = t - K + 1 + k
        for e in range(E):
            acc[e] += wT[k, e] * x[b, s, e]


@njit(parallel=True, cache=True, error_model="numpy")
def _fwd(x, wT, bias, out):
    """out (batch L E) = SiLU(causal depthwise conv(x[..., :E]) + bias)."""
    batch, L, E = out.shape
    n_blk = (L + T_BLOCK - 1) // T_BLOCK
    one = x.dtype.type(1)
    for task in prange(batch * n_blk):
        b = task // n_blk
        t0 = (task - b * n_blk) * T_BLOCK
        acc = np.empty(E, x.dtype)  # (E)
        for t in range(t0, min(L, t0 + T_BLOCK)):
            _conv_step(x, wT, bias, b, t, acc)
            for e in range(E):
                out[b, t, e] = acc[e] / (one + _exp(-acc[e]))  # SiLU, as torch writes it


@njit(parallel=True, cache=True, error_model="numpy")
def _bwd(x, wT, bias, g, dx, dwT_part, dbias_part):
    """From dLoss/dout ``g`` (batch L E): dx (batch L E); dwT_part (tasks K E), dbias_part (tasks E)."""
    batch, L, E = g.shape
    K = wT.shape[0]
    n_blk = (L + T_BLOCK - 1) // T_BLOCK
    one = x.dtype.type(1)
    for task in prange(batch * n_blk):
        b = task // n_blk
        t0 = (task - b * n_blk) * T_BLOCK
        t1 = min(L, t0 + T_BLOCK)
        t2 = min(L, t1 + K - 1)  # dx at the block's last steps needs gp up to K - 1 steps beyond
        acc = np.empty(E, x.dtype)  # (E)
        gp = np.empty((t2 - t0, E), x.dtype)  # (T+K-1 E): dLoss/d(pre-activation)
        for t in range(t0, t2):
            _conv_step(x, wT, bias, b, t, acc)
            for e in range(E):
                s = one / (one + _exp(-acc[e]))  # sigmoid
                gp[t - t0, e] = g[b, t, e] * (s * (one + acc[e] * (one - s)))  # SiLU' = s (1 + p (1 - s))
        for t in range(t0, t1):
            for e in range(E):
                dbias_part[task, e] += gp[t - t0, e]
            for k in range(max(0, K - 1 - t), K):  # x[t - K + 1 + k] fed out[t] through wT[k]
                s = t - K + 1 + k
                for e in range(E):
                    dwT_part[task, k, e] += gp[t - t0, e] * x[b, s, e]
            for e in range(E):
                acc[e] = 0
            for k in range(K):  # x[t] fed out[t + K - 1 - k] through wT[k]
                s = t + K - 1 - k
                if s < L:
                    for e in range(E):
                        acc[e] += wT[k, e] * gp[s - t0, e]
            for e in range(E):
                dx[b, t, e] = acc[e]


def forward_cpu(x, wT, bias):
    """SiLU(causal depthwise conv): x (batch, L, S >= E), wT (K, E), bias (E,) -> out (batch, L, E)."""
    out = np.empty((*x.shape[:2], wT.shape[1]), x.dtype)
    _fwd(x, wT, bias, out)
    return out


def backward_cpu(x, wT, bias, g):
    """Gradients of ``forward_cpu`` from dLoss/dout ``g``: dx (batch, L, E), dwT (K, E), dbias (E,)."""
    batch, L, E = g.shape
    tasks = batch * -(-L // T_BLOCK)
    dx = np.empty(g.shape, x.dtype)
    dwT_part = np.zeros((tasks, wT.shape[0], E), x.dtype)
    dbias_part = np.zeros((tasks, E), x.dtype)
    _bwd(x, wT, bias, g, dx, dwT_part, dbias_part)
    return dx, dwT_part.sum(0), dbias_part.sum(0)
