"""Numba bodies of the STFT backward (``stft.py`` holds the autograd Function that launches them).
Array-level only, no torch here.

The centred STFT of a clip x (L,) cuts the reflect-padded signal p (L + 2 pad,), pad = n_fft // 2,
into T frames of n_fft samples ``hop`` apart and multiplies each by the window w (n_fft,) (the
``win_length`` window zero-padded to n_fft, centred, as ``torch.stft`` does). Its backward takes the
gradient of every windowed frame, ``frames`` (N, T, n_fft) real (from an inverse real FFT of the
spectrum's gradient), and gathers it back onto x:

    g_p[q] = sum over frames t with 0 <= q - t hop < n_fft of  frames[t, q - t hop] * w[q - t hop]
    g_x[i] = g_p[pad + i]  +  g_p[pad - i]          (1 <= i <= pad: reflected on the left)
                           +  g_p[pad + 2 L - 2 - i] (L - 1 - pad <= i <= L - 2: on the right)

since reflect padding reads p[pad - i] = x[i] and p[pad + L + k] = x[L - 2 - k].

CPU (``@njit(parallel=True)``): ``prange`` over clips; each clip overlap-adds its frames into a
padded buffer (the sum above, run frame by frame so the inner loop is contiguous and vectorises:
gathering sample by sample measured 5x slower), then folds the padding back. CUDA: one thread per
(clip, sample) gathering from the at most ceil(n_fft / hop) frames that hold it (each output written
once, no atomics), accumulating in float64. Compiled per dtype on first use (``cuda_compile`` for the
CUDA kernel) and cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cuda_compile import cuda_device, cuda_kernel

cuda = None  # numba.cuda, bound by cuda_compile when the CUDA kernel first compiles

THREADS_PER_BLOCK = 256  # CUDA


@njit(parallel=True, cache=True)
def _backward_cpu(frames, window, hop, g_x):
    N, L = g_x.shape
    T, n_fft = frames.shape[1], frames.shape[2]
    pad = n_fft // 2
    lo, hi = 0, n_fft  # the window's non-zero span: the zero padding around it sends nothing
    while lo < hi and window[lo] == 0:
        lo += 1
    while hi > lo and window[hi - 1] == 0:
        hi -= 1
    for n in prange(N):
        g_p = np.zeros(L + 2 * pad, g_x.dtype)  # (L + 2 pad) the padded clip's gradient
        for t in range(T):  # overlap-add, each frame a contiguous (SIMD) run
            base = t * hop
            for j in range(lo, hi):
                g_p[base + j] += frames[n, t, j] * window[j]
        for i in range(L):
            g_x[n, i] = g_p[pad + i]
        for i in range(1, pad + 1):  # p[pad - i] = x[i]
            g_x[n, i] += g_p[pad - i]
        for k in range(pad):  # p[pad + L + k] = x[L - 2 - k]
            g_x[n, L - 2 - k] += g_p[pad + L + k]


def backward_cpu(frames, window, hop: int, g_x) -> None:
    """Fill ``g_x`` (N, L) from the windowed frames' gradient ``frames`` (N, T, n_fft) and the
    n_fft-long ``window``. C-contiguous numpy arrays of one dtype."""
    _backward_cpu(frames, window, hop, g_x)


def _padded_grad(frames, window, hop, n, q, acc):
    """``acc`` plus the gradient reaching sample q of clip n's padded signal from its frames. CUDA
    only: the CPU kernel overlap-adds whole frames instead (contiguous, SIMD), which measured 5x
    faster there than gathering sample by sample like this."""
    T, n_fft = frames.shape[1], frames.shape[2]
    t_hi = min(T - 1, q // hop)  # the last frame starting at or before q
    t = t_hi
    while t >= 0:
        j = q - t * hop
        if j >= n_fft:
            break
        acc += frames[n, t, j] * window[j]
        t -= 1
    return acc


_padded_grad_cuda = cuda_device(_padded_grad)


@cuda_kernel
def _backward_cuda(frames, window, hop, g_x):
    N, L = g_x.shape[0], g_x.shape[1]
    pad = frames.shape[2] // 2
    k = cuda.grid(1)  # one thread per (clip, sample), samples fastest
    if k >= N * L:
        return
    n, i = k // L, k % L
    acc = _padded_grad_cuda(frames, window, hop, n, pad + i, 0.0)
    if 1 <= i <= pad:
        acc = _padded_grad_cuda(frames, window, hop, n, pad - i, acc)
    if L - 1 - pad <= i <= L - 2:
        acc = _padded_grad_cuda(frames, window, hop, n, pad + 2 * L - 2 - i, acc)
    g_x[n, i] = acc


def backward_cuda(frames, window, hop: int, g_x, stream=0) -> None:
    """``backward_cpu`` on a GPU: Numba device arrays (numpy arrays under the CUDA simulator),
    launched on ``stream`` (0: the default stream)."""
    n = g_x.shape[0] * g_x.shape[1]
    if n:
        _backward_cuda[-(-n // THREADS_PER_BLOCK), THREADS_PER_BLOCK, stream](frames, window, hop, g_x)
