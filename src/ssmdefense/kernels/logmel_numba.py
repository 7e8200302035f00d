"""Numba bodies of the fused log-mel kernel: ``logmel.py`` holds the reference, the autograd Function
(which launches these) and the band ranges they take. Array-level only, no torch here.

Arrays, in the layout ``torch.stft`` gives (frames-major), with R = examples x channels x frames
rows, F one-sided bins and M mel bands:

- ``spec``: the complex STFT as (re, im) pairs, (R, F, 2) (``torch.view_as_real``, no copy);
- ``fbT``: the filterbank transposed, (M, F), with ``band_lo``, ``band_hi`` (M,): band m is zero
  outside bins [lo, hi); ``fb``: the filterbank, (F, M), with ``bin_lo``, ``bin_hi`` (F,): bin f is
  zero outside bands [lo, hi). A triangular mel band spans a few bins and a bin sits in at most two
  bands, so the loops below touch about 2F filter entries per frame instead of a dense F * M;
- ``db``: 10 log10(max(mel, amin)), (R, M), before the top_db clamp; ``dfac``: d db / d mel =
  10 / (ln 10 mel) where mel >= amin and 0 below (the gradient of torch's ``clamp(min=amin)``), (R, M);
- the top_db clamp, max(db, floor) with floor = amax - top_db per example (torch computes amax and
  floor, a per-example reduction): its gradient goes to db where db > floor, half where db == floor,
  and the rest, ``below`` (summed per example by ``top_db_grad_*``), goes to the example's maxima,
  split evenly (``g_max = below / count``), as torch's ``maximum`` and ``amax`` backwards route it.
  Without top_db the Function passes floor = -inf, amax = +inf (which no entry equals) and g_max = 0;
- ``g_spec`` (R, F, 2): 2 (fb g_mel) (re, im), since d|z|^2 = 2 re d re + 2 im d im.

CPU (``@njit(parallel=True)``): ``prange`` over blocks of ``FRAMES_PER_BLOCK`` rows. The forward
turns a block into power (F, K), bins by frames, and sums each band over its bins for the K frames at
once (a SIMD loop), accumulating in the arrays' dtype as a float32 matmul does; the backward scatters
each band's gradient over its bins into one (F,) row per frame, then multiplies by the spectrum.
CUDA: one thread per output element (a (row, band) forward, a (row, bin) backward, gathering its
bands), accumulating in float64. Compiled per dtype on first use (``cuda_compile`` for the CUDA
kernels) and cached on disk.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .cuda_compile import cuda_device, cuda_kernel

cuda = None  # numba.cuda, bound by cuda_compile when the CUDA kernels first compile

# 10 log10(x) = DB_PER_LN ln(x) (ln is the faster of the two here), and its derivative is DB_PER_LN / x;
# mel below amin gets 10 log10(amin), exactly torch's floor (-100 dB for amin = 1e-10)
DB_PER_LN = 10.0 / math.log(10.0)
FRAMES_PER_BLOCK = 16  # CPU rows per prange iteration; the forward's inner loop runs over them (SIMD)
THREADS_PER_BLOCK = 256  # CUDA


def _db_grad(d, g, floor, amax, g_max):
    """The gradient reaching db (value d, incoming gradient g) through the top_db clamp: none below
    the floor, half at it, plus the example's share ``g_max`` at a maximum. One Python body compiled
    for both targets (``_db_grad_cpu``, ``_db_grad_cuda``) so they cannot drift apart."""
    if d < floor:
        g = 0.0 * g
    elif d == floor:
        g = 0.5 * g
    if d == amax:
        g += g_max
    return g


_db_grad_cpu = njit(inline="always", cache=True)(_db_grad)

# --------------------------------------------------------------------------------------------- CPU


@njit(parallel=True, cache=True)
def _forward_cpu(spec, fbT, band_lo, band_hi, amin, db, dfac):
    R, F = spec.shape[0], spec.shape[1]
    M = fbT.shape[0]
    K = FRAMES_PER_BLOCK
    db_amin = 10.0 * math.log10(amin)
    for c in prange((R + K - 1) // K):
        r0 = c * K
        n = min(K, R - r0)
        power = np.zeros((F, K), spec.dtype)  # (F K) this block's |spec|^2, frames innermost
        acc = np.empty(K, spec.dtype)  # (K) one band for the block's frames
        for j in range(n):
            for f in range(F):
                re, im = spec[r0 + j, f, 0], spec[r0 + j, f, 1]
                power[f, j] = re * re + im * im
        for m in range(M):
            acc[:] = 0
            for f in range(band_lo[m], band_hi[m]):
                w = fbT[m, f]
                for j in range(K):
                    acc[j] += w * power[f, j]
            for j in range(n):
                mel = acc[j]
                if mel >= amin:
                    db[r0 + j, m] = DB_PER_LN * math.log(mel)
                    dfac[r0 + j, m] = DB_PER_LN / mel
                else:
                    db[r0 + j, m] = db_amin
                    dfac[r0 + j, m] = 0.0


@njit(parallel=True, cache=True)
def _top_db_grad_cpu(db, g_db, floor, amax, below, count):
    N, K = db.shape
    for n in prange(N):
        total, maxima = 0.0, 0
        for k in range(K):
            d = db[n, k]
            if d < floor[n]:
                total += g_db[n, k]
            elif d == floor[n]:
                total += 0.5 * g_db[n, k]
            if d == amax[n]:
                maxima += 1
        below[n] = total
        count[n] = maxima


@njit(parallel=True, cache=True)
def _backward_cpu(spec, fbT, band_lo, band_hi, db, dfac, g_db, floor, amax, g_max, rows_per_example, g_spec):
    R, F = spec.shape[0], spec.shape[1]
    M = fbT.shape[0]
    K = FRAMES_PER_BLOCK
    for c in prange((R + K - 1) // K):
        g_mel = np.empty(M, spec.dtype)  # (M) 2 d loss / d mel of one frame, in the arrays' dtype
        g_pow = np.empty(F, spec.dtype)  # (F) 2 d loss / d |spec|^2 of one frame
        for r in range(c * K, min(R, (c + 1) * K)):
            n = r // rows_per_example
            for m in range(M):  # through the top_db clamp (torch's maximum and amax routing), then the log
                g = _db_grad_cpu(db[r, m], g_db[r, m], floor[n], amax[n], g_max[n])
                g_mel[m] = 2.0 * g * dfac[r, m]
            g_pow[:] = 0
            for m in range(M):  # each band scatters over its bins
                w = g_mel[m]
                for f in range(band_lo[m], band_hi[m]):
                    g_pow[f] += fbT[m, f] * w
            s, out = spec[r], g_spec[r]  # (F 2)
            for f in range(F):
                out[f, 0] = g_pow[f] * s[f, 0]
                out[f, 1] = g_pow[f] * s[f, 1]


def forward_cpu(spec, fbT, band_lo, band_hi, amin, db, dfac) -> None:
    """Fill ``db`` and ``dfac`` (R, M) from ``spec`` (R, F, 2). C-contiguous numpy arrays; ``amin`` a
    scalar of the arrays' dtype (as torch's clamp casts it)."""
    _forward_cpu(spec, fbT, band_lo, band_hi, amin, db, dfac)


def top_db_grad_cpu(db, g_db, floor, amax, below, count) -> None:
    """Per example n of ``db``, ``g_db`` (N, K): ``below[n]``, the gradient the top_db clamp sends to
    the floor, and ``count[n]``, the number of maxima (entries equal to ``amax[n]``)."""
    _top_db_grad_cpu(db, g_db, floor, amax, below, count)


def backward_cpu(
    spec, fbT, band_lo, band_hi, db, dfac, g_db, floor, amax, g_max, rows_per_example: int, g_spec
) -> None:
    """Fill ``g_spec`` (R, F, 2) from ``g_db`` (R, M), the gradient after the top_db clamp;
    ``floor``, ``amax``, ``g_max`` (N,) per example of ``rows_per_example`` rows."""
    _backward_cpu(spec, fbT, band_lo, band_hi, db, dfac, g_db, floor, amax, g_max, rows_per_example, g_spec)


# -------------------------------------------------------------------------------------------- CUDA

_db_grad_cuda = cuda_device(_db_grad)


@cuda_kernel
def _forward_cuda(spec, fbT, band_lo, band_hi, amin, db, dfac):
    R, M = db.shape[0], db.shape[1]
    i = cuda.grid(1)  # one thread per (row, band), bands fastest: a warp reads one or two frames
    if i >= R * M:
        return
    r, m = i // M, i % M
    acc = 0.0
    for f in range(band_lo[m], band_hi[m]):
        re, im = spec[r, f, 0], spec[r, f, 1]
        acc += fbT[m, f] * (re * re + im * im)
    if acc >= amin:
        db[r, m] = DB_PER_LN * math.log(acc)
        dfac[r, m] = DB_PER_LN / acc
    else:
        db[r, m] = 10.0 * math.log10(amin)
        dfac[r, m] = 0.0


@cuda_kernel
def _top_db_grad_cuda(db, g_db, floor, amax, below, count):
    N, K = db.shape[0], db.shape[1]
    i = cuda.grid(1)  # one thread per entry; atomics into the example's two sums (zeroed by the caller)
    if i >= N * K:
        return
    n, k = i // K, i % K
    d = db[n, k]
    if d < floor[n]:
        cuda.atomic.add(below, n, g_db[n, k])
    elif d == floor[n]:
        cuda.atomic.add(below, n, 0.5 * g_db[n, k])
    if d == amax[n]:
        cuda.atomic.add(count, n, 1)


@cuda_kernel
def _backward_cuda(spec, fb, bin_lo, bin_hi, db, dfac, g_db, floor, amax, g_max, rows_per_example, g_spec):
    R, F = spec.shape[0], spec.shape[1]
    i = cuda.grid(1)  # one thread per (row, bin), bins fastest: coalesced reads and writes of spec
    if i >= R * F:
        return
    r, f = i // F, i % F
    n = r // rows_per_example
    acc = 0.0
    for m in range(bin_lo[f], bin_hi[f]):
        g = _db_grad_cuda(db[r, m], 1.0 * g_db[r, m], floor[n], amax[n], g_max[n])
        acc += fb[f, m] * (g * dfac[r, m])
    acc *= 2.0
    g_spec[r, f, 0] = acc * spec[r, f, 0]
    g_spec[r, f, 1] = acc * spec[r, f, 1]


def _blocks(n: int) -> int:
    return -(-n // THREADS_PER_BLOCK)


def forward_cuda(spec, fbT, band_lo, band_hi, amin, db, dfac, stream=0) -> None:
    """``forward_cpu`` on a GPU: Numba device arrays (numpy arrays under the CUDA simulator),
    launched on ``stream`` (0: the default stream)."""
    n = db.shape[0] * db.shape[1]
    if n:
        _forward_cuda[_blocks(n), THREADS_PER_BLOCK, stream](spec, fbT, band_lo, band_hi, amin, db, dfac)


def top_db_grad_cuda(db, g_db, floor, amax, below, count, stream=0) -> None:
    """``top_db_grad_cpu`` on a GPU; ``below`` and ``count`` must come zeroed (it adds into them)."""
    n = db.shape[0] * db.shape[1]
    if n:
        _top_db_grad_cuda[_blocks(n), THREADS_PER_BLOCK, stream](db, g_db, floor, amax, below, count)


def backward_cuda(
    spec, fb, bin_lo, bin_hi, db, dfac, g_db, floor, amax, g_max, rows_per_example: int, g_spec, stream=0
) -> None:
    """``backward_cpu`` on a GPU, with the filterbank as (F, M) and per-bin band ranges."""
    n = spec.shape[0] * spec.shape[1]
    if n:
        _backward_cuda[_blocks(n), THREADS_PER_BLOCK, stream](
            spec, fb, bin_lo, bin_hi, db, dfac, g_db, floor, amax, g_max, rows_per_example, g_spec
        )
