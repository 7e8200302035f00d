"""Numba bodies of the selective scan (Mamba, Gu & Dao 2023, Algorithm 2) and thin array-level launchers.

The recurrence is the one ``selective_scan_ref`` runs (see ``selective_scan.py``), per batch row b,
channel d and state index n, with the step after bias and softplus, delta'_t = softplus(delta_t + bias)
(or without either, as asked):

    a_t   = exp(delta'_t A_n)                       x_t = a_t x_{t-1} + delta'_t u_t B_t,n
    y_t   = sum_n C_t,n x_t + D u_t                 out_t = y_t SiLU(z_t)

and the backward pass is its hand-derived adjoint, with lambda_t = dLoss/dx_t:

    lambda_t = g_t C_t + a_{t+1} lambda_{t+1}       (g_t = dLoss/dy_t = dLoss/dout_t SiLU(z_t))
    dC_t += g_t x_t     dB_t += lambda_t delta'_t u_t     dA += lambda_t x_{t-1} a_t delta'_t
    ddelta'_t = sum_n lambda_t (x_{t-1} a_t A_n + u_t B_t,n)   du_t = g_t D + sum_n lambda_t delta'_t B_t,n
    ddelta_t = ddelta'_t sigmoid(delta_t + bias)    dbias += ddelta_t    dD += g_t u_t
    dz_t = dLoss/dout_t y_t SiLU'(z_t)

Layout: ``mamba_ssm``'s, C-contiguous: ``u``, ``delta``, ``z``, ``out`` (batch, D, L); ``A``
(D, N); ``B``, ``C`` (batch, N, L); ``D``, ``delta_bias`` (D,); the last state (batch, D, N).
Nothing is transposed or copied on the way in: at each step a CPU task gathers its channels'
inputs (stride L) into small contiguous vectors, and all the arithmetic runs on those, with the
innermost loop over channels. Channels are independent and nothing in the forward pass sums over
them, so LLVM vectorises that loop without reordering any float sum (``fastmath=False``; results
do not depend on the vector width). The two sums over channels of the backward pass (dB, dC) are
pairwise (``_lane_sum``), in an order fixed by the number of channels alone.

Exponentials are most of the work (batch L D N of them), and LLVM cannot vectorise a loop that
calls libm's ``exp``: ``_exp`` is an exp in plain arithmetic (Cody-Waite reduction, polynomial,
exponent bits) that it can vectorise; measured within 1 ulp of numpy's exp in float32 and
float64, including overflow to inf, gradual underflow and NaN, and 3x (float64) to 7x (float32)
faster per element than libm's here (AVX-512). ``_softplus`` is built on it the same way.

States are never stored for every step: the forward pass keeps a checkpoint of the state every
``BLOCK_T`` steps (``checkpoint_shape``: (batch, ceil(L / BLOCK_T), N, D)) when a backward pass
will follow, and the backward pass recomputes one block of states and decays at a time from its
checkpoint (a cache-sized buffer) and runs the adjoint over it backwards: one exponential per
element in each pass, and O(batch D N L / BLOCK_T) memory instead of O(batch D N L).

CPU (``@njit(parallel=True)``): ``prange`` over (batch row, block of channels). Every task writes
disjoint parts of the outputs, and the sums over tasks are left to the launchers: dA, dD and
dbias come back per batch row, dB and dC per channel block, and ``backward_cpu`` adds them up.
Channels are split into blocks only when the batch alone cannot keep the threads busy. The CPU
launchers take numpy arrays and return new ones.

CUDA (``@cuda.jit``): one thread per (batch row, channel), sequential over time; the running
state, the block buffers and the adjoint live in global scratch arrays laid out (batch, ..., D) so
a warp's accesses to them are contiguous; dB and dC are sums over channels, so threads
``cuda.atomic.add`` into them. The launchers take array-likes (Numba device arrays on a GPU, numpy
arrays under ``NUMBA_ENABLE_CUDASIM=1``), and the outputs and scratch preallocated
(``cuda_scratch_shapes``), so the caller (torch) owns every allocation.

Everything computes in the dtype of the arrays passed (float32 or float64).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

try:  # numba-cuda; without it (or a broken install) the CPU kernels still work
    from numba import cuda
except Exception:  # pragma: no cover - depends on the installation
    cuda = None

BLOCK_T = 32  # steps per checkpoint block: the CPU block buffers (2 (BLOCK_T, N, 16..D)) stay in L2
LANES = 16  # accumulators of the CPU sums over channels (one AVX-512 register of float32)
CUDA_THREADS = 128  # threads per CUDA block (channels of one batch row)


# --------------------------------------------------------------------------------------------------
# A vectorisable exp
# --------------------------------------------------------------------------------------------------


@intrinsic
def _bits_as_float(typingctx, bits):
    """The float with the same bits as ``bits`` (int32 -> float32, int64 -> float64)."""
    if bits == types.int32:
        ret = types.float32
    elif bits == types.int64:
        ret = types.float64
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(sig.return_type))

    return ret(bits), codegen


def _exp(x):
    """exp(x); inside jitted code the overload below, which LLVM can vectorise."""
    return math.exp(x)


@overload(_exp)
def _exp_overload(x):
    """exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln(2) / 2 (Cody-Waite: ln 2 in two parts so
    k ln 2 is exact); exp(r) by a polynomial (Cephes' expf for float32, Taylor to degree 13 for
    float64); 2^k built from exponent bits in two halves so gradual underflow and overflow to inf
    come out right. x is clamped first (the clamped values give exactly 0 or inf); NaN stays NaN."""
    if x == types.float32:
        f, i = np.float32, np.int32
        lo, hi, log2e = f(-104.0), f(89.0), f(1.44269504088896341)
        ln2_hi, ln2_lo = f(0.693359375), f(-2.12194440e-4)
        p0, p1, p2 = f(1.9875691500e-4), f(1.3981999507e-3), f(8.3334519073e-3)
        p3, p4, p5 = f(4.1665795894e-2), f(1.6666665459e-1), f(5.0000001201e-1)
        half, one, bias, shift = f(0.5), f(1.0), i(127), i(23)

        def exp32(x):
            xc = x if x > lo else lo
            xc = xc if xc < hi else hi
            k = np.floor(xc * log2e + half)
            r = xc - k * ln2_hi
            r = r - k * ln2_lo
            p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
            p = (p * r) * r + r + one
            ki = i(k)
            k1 = ki >> i(1)
            k2 = ki - k1
            # numba widens int32 arithmetic to int64: i(...) narrows the bits back before the cast
            res = p * _bits_as_float(i((k1 + bias) << shift)) * _bits_as_float(i((k2 + bias) << shift))
            return x if x != x else res

        return exp32
    if x == types.float64:
        i = np.int64
        lo, hi, log2e = -746.0, 710.0, 1.44269504088896341
        ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10
        c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13 = (1.0 / math.factorial(j) for j in range(2, 14))
        bias, shift = i(1023), i(52)

        def exp64(x):
            xc = x if x > lo else lo
            xc = xc if xc < hi else hi
            k = np.floor(xc * log2e + 0.5)
            r = xc - k * ln2_hi
            r = r - k * ln2_lo
            p = (
                (
                    ((((((((c13 * r + c12) * r + c11) * r + c10) * r + c9) * r + c8) * r + c7) * r + c6) * r + c5) * r
                    + c4
                )
                * r
                + c3
            ) * r + c2
            p = (p * r) * r + r + 1.0
            ki = i(k)
            k1 = ki >> i(1)
            k2 = ki - k1
            res = p * _bits_as_float((k1 + bias) << shift) * _bits_as_float((k2 + bias) << shift)
            return x if x != x else res

        return exp64
    return None


SOFTPLUS_THRESHOLD = 20.0  # softplus(x) = x above it, as in torch (and so in the reference)


def _softplus(x):
    """softplus(x) = log(1 + exp(x)); inside jitted code the overload below, which vectorises."""
    return x if x > SOFTPLUS_THRESHOLD else math.log1p(math.exp(x))


@overload(_softplus)
def _softplus_overload(x):
    """softplus(x) = max(x, 0) + log1p(exp(-|x|)), and x itself above ``SOFTPLUS_THRESHOLD`` like
    torch. log1p(y) for y in [0, 1] as 2 atanh(s), s = y / (2 + y) in [0, 1/3]: the odd series
    2 (s + s^3/3 + s^5/5 + ...) to 8 (float32) or 17 (float64) terms (truncation below half an
    ulp), with no cancellation for small y; measured within 2 ulp overall (results below the
    smallest normal float may flush to 0). All plain arithmetic, so LLVM vectorises it like ``_exp``."""
    if x == types.float32:
        f, terms = np.float32, 8
    elif x == types.float64:
        f, terms = np.float64, 17
    else:
        return None
    c = np.array([1.0 / (2 * k + 1) for k in range(terms)], dtype=f)[::-1].copy()  # highest power first
    zero, two, threshold = f(0.0), f(2.0), f(SOFTPLUS_THRESHOLD)

    def softplus(x):
        y = _exp(-abs(x))  # in [0, 1]
        s = y / (two + y)
        s2 = s * s
        p = c[0]
        for k in range(1, terms):
            p = p * s2 + c[k]
        r = (x if x > zero else zero) + two * s * p
        return x if x > threshold else r

    return softplus


@njit(cache=True)
def apply_elementwise(x, out, which=0):
    """``out[i] = f(x[i])`` (1-D arrays) for f = ``_exp`` (which = 0) or ``_softplus`` (1): lets
    tests compare the kernels' own functions with numpy's."""
    for i in range(x.shape[0]):
        out[i] = _exp(x[i]) if which == 0 else _softplus(x[i])


# --------------------------------------------------------------------------------------------------
# CPU kernels
# --------------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True, error_model="numpy")
def _fwd_cpu(u, delta, A, B, C, D, z, bias, has_D, has_z, has_bias, softplus, d_block, T, save, out, last, ckpt):
    """Forward. u, delta, z, out (batch D L); A (D N); B, C (batch N L); D, bias (D); last
    (batch D N); ckpt (batch K N D), written when ``save`` (the state entering each block of T steps).

    Per step, the channels' inputs are gathered (stride L) into contiguous vectors first, then
    everything (softplus, the scan over n, SiLU) runs vectorised on those, then outputs are scattered."""
    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    one = dtype.type(1)
    n_blk = (dim + d_block - 1) // d_block
    for task in prange(batch * n_blk):
        b = task // n_blk
        d0 = (task - b * n_blk) * d_block
        nd = min(d_block, dim - d0)
        P = (nd + LANES - 1) // LANES * LANES  # padded channels: u = A = 0 there, so x and y stay 0
        A_ = np.zeros((N, P), dtype)  # (N P)
        for j in range(nd):
            for n in range(N):
                A_[n, j] = A[d0 + j, n]
        D_ = np.zeros(P, dtype)  # (P)
        bias_ = np.zeros(P, dtype)  # (P)
        for j in range(nd):
            D_[j] = D[d0 + j] if has_D else 0
            bias_[j] = bias[d0 + j] if has_bias else 0
        x = np.zeros((N, P), dtype)  # (N P), the state
        dt = np.zeros(P, dtype)  # (P)
        uu = np.zeros(P, dtype)  # (P)
        zz = np.zeros(P, dtype)  # (P)
        dtu = np.zeros(P, dtype)  # (P)
        y = np.zeros(P, dtype)  # (P)
        for t in range(L):
            if save and t % T == 0:
                ckpt[b, t // T, :, d0 : d0 + nd] = x[:, :nd]
            for j in range(nd):  # gather
                dt[j] = delta[b, d0 + j, t]
                uu[j] = u[b, d0 + j, t]
                if has_z:
                    zz[j] = z[b, d0 + j, t]
            if has_bias:
                for j in range(nd):
                    dt[j] += bias_[j]
            if softplus:
                for j in range(nd):
                    dt[j] = _softplus(dt[j])
            for j in range(P):
                dtu[j] = dt[j] * uu[j]
                y[j] = 0
            for n in range(N):
                Bn = B[b, n, t]
                Cn = C[b, n, t]
                for j in range(P):
                    xn = _exp(dt[j] * A_[n, j]) * x[n, j] + dtu[j] * Bn
                    x[n, j] = xn
                    y[j] += Cn * xn
            if has_D:
                for j in range(P):
                    y[j] += D_[j] * uu[j]
            if has_z:
                for j in range(P):
                    y[j] = y[j] * (zz[j] / (one + _exp(-zz[j])))  # SiLU, as torch writes it
            for j in range(nd):  # scatter
                out[b, d0 + j, t] = y[j]
        for j in range(nd):
            for n in range(N):
                last[b, d0 + j, n] = x[n, j]


@njit(parallel=True, cache=True, error_model="numpy")
def _bwd_cpu(
    u,
    delta,
    A,
    B,
    C,
    D,
    z,
    bias,
    has_D,
    has_z,
    has_bias,
    softplus,
    ckpt,
    dout,
    dlast,
    has_dlast,
    d_block,
    T,
    du,
    ddelta,
    dz,
    dA_part,
    dB_part,
    dC_part,
    dD_part,
    dbias_part,
):
    """Backward from the checkpoints. dout, du, ddelta, dz (batch D L); dlast (batch D N); dA_part
    (batch D N); dB_part, dC_part (batch blocks N L); dD_part, dbias_part (batch D). Gathers,
    vectorised work and scatters as in the forward."""
    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    one = dtype.type(1)
    threshold = dtype.type(SOFTPLUS_THRESHOLD)
    n_blk = (dim + d_block - 1) // d_block
    K = (L + T - 1) // T
    for task in prange(batch * n_blk):
        b = task // n_blk
        blk = task - b * n_blk
        d0 = blk * d_block
        nd = min(d_block, dim - d0)
        P = (nd + LANES - 1) // LANES * LANES  # padded lanes: every contribution there is exactly 0
        A_ = np.zeros((N, P), dtype)  # (N P)
        lam = np.zeros((N, P), dtype)  # (N P): a_{t+1} lambda_{t+1}, the adjoint arriving at step t
        for j in range(nd):
            for n in range(N):
                A_[n, j] = A[d0 + j, n]
                if has_dlast:
                    lam[n, j] = dlast[b, d0 + j, n]
        D_ = np.zeros(P, dtype)  # (P)
        bias_ = np.zeros(P, dtype)  # (P)
        for j in range(nd):
            D_[j] = D[d0 + j] if has_D else 0
            bias_[j] = bias[d0 + j] if has_bias else 0
        xs = np.zeros((T + 1, N, P), dtype)  # (T+1 N P): xs[i + 1] = x at step t0 + i, xs[0] = checkpoint
        As = np.zeros((T, N, P), dtype)  # (T N P): decays a
        ys = np.zeros((T, P), dtype)  # (T P): C . x
        pre = np.zeros((T, P), dtype)  # (T P): delta + bias, before softplus
        dts = np.zeros((T, P), dtype)  # (T P)
        us = np.zeros((T, P), dtype)  # (T P)
        dtus = np.zeros((T, P), dtype)  # (T P)
        g = np.zeros(P, dtype)  # (P): dLoss/dout, then dLoss/dy
        zz = np.zeros(P, dtype)  # (P)
        gz = np.zeros(P, dtype)  # (P)
        gdt = np.zeros(P, dtype)  # (P)
        gu = np.zeros(P, dtype)  # (P)
        dA_acc = np.zeros((N, P), dtype)  # (N P)
        dD_acc = np.zeros(P, dtype)  # (P)
        dbias_acc = np.zeros(P, dtype)  # (P)
        v_B = np.zeros(P, dtype)  # (P): dB terms of each channel, summed by _lane_sum
        v_C = np.zeros(P, dtype)  # (P)
        for k in range(K - 1, -1, -1):
            t0 = k * T
            Tk = min(T, L - t0)
            # 1. this block's steps, states and decays again, from its checkpoint
            xs[0, :, :nd] = ckpt[b, k, :, d0 : d0 + nd]
            for i in range(Tk):
                t = t0 + i
                for j in range(nd):  # gather
                    pre[i, j] = delta[b, d0 + j, t]
                    us[i, j] = u[b, d0 + j, t]
                for j in range(nd):
                    v = pre[i, j] + bias_[j]
                    pre[i, j] = v
                    dts[i, j] = _softplus(v) if softplus else v
                for j in range(P):
                    dtus[i, j] = dts[i, j] * us[i, j]
                    ys[i, j] = 0
                for n in range(N):
                    Bn = B[b, n, t]
                    Cn = C[b, n, t]
                    for j in range(P):
                        a = _exp(dts[i, j] * A_[n, j])
                        As[i, n, j] = a
                        xn = a * xs[i, n, j] + dtus[i, j] * Bn
                        xs[i + 1, n, j] = xn
                        ys[i, j] += Cn * xn
            # 2. the adjoint, backwards over the block
            for i in range(Tk - 1, -1, -1):
                t = t0 + i
                for j in range(nd):  # gather
                    g[j] = dout[b, d0 + j, t]
                    if has_z:
                        zz[j] = z[b, d0 + j, t]
                if has_z:
                    for j in range(P):
                        yj = ys[i, j] + D_[j] * us[i, j]
                        sz = one / (one + _exp(-zz[j]))  # sigmoid(z)
                        gz[j] = g[j] * yj * (sz * (one + zz[j] * (one - sz)))  # SiLU'(z) = s (1 + z (1 - s))
                        g[j] = g[j] * (zz[j] * sz)
                for j in range(P):
                    dD_acc[j] += g[j] * us[i, j]
                    gu[j] = g[j] * D_[j]
                    gdt[j] = 0
                for n in range(N):
                    Bn = B[b, n, t]
                    Cn = C[b, n, t]
                    for j in range(P):
                        lam_t = lam[n, j] + g[j] * Cn  # lambda_t
                        v_C[j] = g[j] * xs[i + 1, n, j]
                        a = As[i, n, j]
                        g_dtA = lam_t * xs[i, n, j] * a  # dLoss/d(delta A)
                        gdt[j] += g_dtA * A_[n, j] + lam_t * us[i, j] * Bn
                        dA_acc[n, j] += g_dtA * dts[i, j]
                        v_B[j] = lam_t * dtus[i, j]
                        gu[j] += lam_t * dts[i, j] * Bn
                        lam[n, j] = a * lam_t
                    dB_part[b, blk, n, t] = _lane_sum(v_B, P)
                    dC_part[b, blk, n, t] = _lane_sum(v_C, P)
                if softplus:
                    for j in range(P):  # softplus' = sigmoid; softplus is the identity above the threshold
                        if pre[i, j] <= threshold:
                            gdt[j] = gdt[j] * (one / (one + _exp(-pre[i, j])))
                for j in range(P):
                    dbias_acc[j] += gdt[j]
                for j in range(nd):  # scatter
                    du[b, d0 + j, t] = gu[j]
                    ddelta[b, d0 + j, t] = gdt[j]
                    if has_z:
                        dz[b, d0 + j, t] = gz[j]
        for j in range(nd):
            for n in range(N):
                dA_part[b, d0 + j, n] = dA_acc[n, j]
            if has_D:
                dD_part[b, d0 + j] = dD_acc[j]
            if has_bias:
                dbias_part[b, d0 + j] = dbias_acc[j]


@njit(cache=True)
def _lane_sum(v, P):
    """sum(v[:P]) (P a multiple of LANES), destroying v: halves folded onto each other down to
    LANES values, then summed in order. Unlike a running sum this vectorises without reordering
    anything at run time (fixed order, same result on every machine), and it is pairwise-accurate."""
    w = P
    while w > LANES:
        h = (w // LANES + 1) // 2 * LANES
        for j in range(w - h):
            v[j] += v[j + h]
        w = h
    s = v[0]
    for j in range(1, w):
        s += v[j]
    return s


def channel_blocks(batch: int, dim: int, threads: int) -> int:
    """Channels per CPU task: all D when the batch rows alone give every thread two or more tasks
    (or one thread runs); otherwise D split into blocks (multiples of ``LANES``) so that about
    2 x threads tasks exist, which keeps the per-block partial sums of dB and dC small."""
    if threads <= 1 or batch >= 2 * threads or dim <= LANES:
        return max(dim, 1)
    n_blk = min(-(-dim // LANES), -(-2 * threads // batch))
    return -(-dim // n_blk // LANES) * LANES if n_blk > 1 else dim


def checkpoint_shape(batch: int, dim: int, L: int, N: int) -> tuple[int, int, int, int]:
    """Shape of the forward's checkpoints: the state entering every block of ``BLOCK_T`` steps,
    (batch, ceil(L / BLOCK_T), N, D)."""
    return batch, -(-L // BLOCK_T), N, dim


def forward_cpu(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, save_states=False, threads=None
):
    """Forward on the CPU: numpy arrays of one float dtype, C-contiguous, in ``selective_scan_fn``'s
    layout; ``delta`` before ``delta_bias``/softplus (applied here).

    Args:
        u, delta: (batch, D, L). A: (D, N). B, C: (batch, N, L). D, delta_bias: (D,) or None.
        z: (batch, D, L) or None. delta_softplus: apply softplus to delta + delta_bias.
        save_states: also return the checkpoints ``backward_cpu`` needs.
        threads: threads the kernel may use (for the channel split); None: Numba's current count.
    Returns:
        out (batch, D, L), last state (batch, D, N), checkpoints (``checkpoint_shape``) or None.
    """
    import numba

    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    threads = numba.get_num_threads() if threads is None else threads
    out = np.empty((batch, dim, L), dtype)
    last = np.empty((batch, dim, N), dtype)
    ckpt = np.empty(checkpoint_shape(batch, dim, L, N), dtype) if save_states else np.empty((0, 0, 0, 0), dtype)
    _fwd_cpu(
        u,
        delta,
        A,
        B,
        C,
        _or_empty(D, 1, dtype),
        _or_empty(z, 3, dtype),
        _or_empty(delta_bias, 1, dtype),
        D is not None,
        z is not None,
        delta_bias is not None,
        bool(delta_softplus),
        channel_blocks(batch, dim, threads),
        BLOCK_T,
        save_states,
        out,
        last,
        ckpt,
    )
    return out, last, (ckpt if save_states else None)


def backward_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, dout, dlast=None, threads=None):
    """Backward on the CPU from ``forward_cpu``'s checkpoints (same arguments, layouts and dtype).

    Args:
        dout: dLoss/dout (batch, D, L). dlast: dLoss/d(last state) (batch, D, N) or None.
    Returns:
        du, ddelta (batch, D, L) (ddelta with respect to delta before bias and softplus); dA (D, N);
        dB, dC (batch, N, L); dD (D,) or None; dz (batch, D, L) or None; d delta_bias (D,) or None.
    """
    import numba

    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    threads = numba.get_num_threads() if threads is None else threads
    d_block = channel_blocks(batch, dim, threads)
    n_blk = -(-dim // d_block)
    du = np.empty((batch, dim, L), dtype)
    ddelta = np.empty((batch, dim, L), dtype)
    dz = np.empty((batch, dim, L), dtype) if z is not None else np.empty((0, 0, 0), dtype)
    dA_part = np.empty((batch, dim, N), dtype)
    dB_part = np.zeros((batch, n_blk, N, L), dtype)  # zeros: no task writes them when D = 0
    dC_part = np.zeros((batch, n_blk, N, L), dtype)
    dD_part = np.empty((batch, dim), dtype) if D is not None else np.empty((0, 0), dtype)
    dbias_part = np.empty((batch, dim), dtype) if delta_bias is not None else np.empty((0, 0), dtype)
    _bwd_cpu(
        u,
        delta,
        A,
        B,
        C,
        _or_empty(D, 1, dtype),
        _or_empty(z, 3, dtype),
        _or_empty(delta_bias, 1, dtype),
        D is not None,
        z is not None,
        delta_bias is not None,
        bool(delta_softplus),
        ckpt,
        dout,
        _or_empty(dlast, 3, dtype),
        dlast is not None,
        d_block,
        BLOCK_T,
        du,
        ddelta,
        dz,
        dA_part,
        dB_part,
        dC_part,
        dD_part,
        dbias_part,
    )
    dB = dB_part[:, 0] if n_blk == 1 else dB_part.sum(1)
    dC = dC_part[:, 0] if n_blk == 1 else dC_part.sum(1)
    return (
        du,
        ddelta,
        dA_part.sum(0),
        dB,
        dC,
        dD_part.sum(0) if D is not None else None,
        dz if z is not None else None,
        dbias_part.sum(0) if delta_bias is not None else None,
    )


def _or_empty(a, ndim, dtype):
    """``a``, or an empty array of that rank standing for "absent" (the kernels' types stay fixed)."""
    return np.empty((0,) * ndim, dtype) if a is None else a


# --------------------------------------------------------------------------------------------------
# CUDA kernels: one thread per (batch row, channel)
# --------------------------------------------------------------------------------------------------


def _fwd_cuda(u, delta, A, B, C, D, z, bias, has_D, has_z, has_bias, softplus, T, save, out, last, x, ckpt):
    """Forward; x (batch N D) is scratch for the running state."""
    d = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    b = cuda.blockIdx.y
    batch, dim, L = u.shape
    N = A.shape[1]
    if d >= dim:
        return
    zero = u.dtype.type(0)
    one = u.dtype.type(1)
    threshold = u.dtype.type(SOFTPLUS_THRESHOLD)
    for n in range(N):
        x[b, n, d] = zero
    for t in range(L):
        if save and t % T == 0:
            for n in range(N):
                ckpt[b, t // T, n, d] = x[b, n, d]
        dt = delta[b, d, t] + bias[d] if has_bias else delta[b, d, t]
        if softplus and dt <= threshold:
            dt = math.log1p(math.exp(dt))
        dtu = dt * u[b, d, t]
        y = zero
        for n in range(N):
            xn = math.exp(dt * A[d, n]) * x[b, n, d] + dtu * B[b, n, t]
            x[b, n, d] = xn
            y += C[b, n, t] * xn
        if has_D:
            y += D[d] * u[b, d, t]
        if has_z:
            zj = z[b, d, t]
            y = y * (zj / (one + math.exp(-zj)))
        out[b, d, t] = y
    for n in range(N):
        last[b, d, n] = x[b, n, d]


def _bwd_cuda(
    u,
    delta,
    A,
    B,
    C,
    D,
    z,
    bias,
    has_D,
    has_z,
    has_bias,
    softplus,
    ckpt,
    dout,
    dlast,
    has_dlast,
    T,
    lam,
    xs,
    As,
    ys,
    du,
    ddelta,
    dz,
    dA_part,
    dB,
    dC,
    dD_part,
    dbias_part,
):
    """Backward; dB, dC (batch N L) must be zero (threads add into them); lam (batch N D),
    xs (batch T+1 N D), As (batch T N D), ys (batch T D) are scratch."""
    d = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    b = cuda.blockIdx.y
    batch, dim, L = u.shape
    N = A.shape[1]
    if d >= dim:
        return
    zero = u.dtype.type(0)
    one = u.dtype.type(1)
    threshold = u.dtype.type(SOFTPLUS_THRESHOLD)
    K = (L + T - 1) // T
    dD_acc = zero
    dbias_acc = zero
    for n in range(N):
        dA_part[b, d, n] = zero
        lam[b, n, d] = dlast[b, d, n] if has_dlast else zero
    for kk in range(K):
        k = K - 1 - kk
        t0 = k * T
        Tk = min(T, L - t0)
        for n in range(N):
            xs[b, 0, n, d] = ckpt[b, k, n, d]
        for i in range(Tk):
            t = t0 + i
            dt = delta[b, d, t] + bias[d] if has_bias else delta[b, d, t]
            if softplus and dt <= threshold:
                dt = math.log1p(math.exp(dt))
            dtu = dt * u[b, d, t]
            y = zero
            for n in range(N):
                a = math.exp(dt * A[d, n])
                As[b, i, n, d] = a
                xn = a * xs[b, i, n, d] + dtu * B[b, n, t]
                xs[b, i + 1, n, d] = xn
                y += C[b, n, t] * xn
            ys[b, i, d] = y
        for ii in range(Tk):
            i = Tk - 1 - ii
            t = t0 + i
            g = dout[b, d, t]
            uu = u[b, d, t]
            pre = delta[b, d, t] + bias[d] if has_bias else delta[b, d, t]
            dt = pre
            if softplus and pre <= threshold:
                dt = math.log1p(math.exp(pre))
            dtu = dt * uu
            y = ys[b, i, d]
            if has_D:
                y += D[d] * uu
            if has_z:
                zj = z[b, d, t]
                s = one / (one + math.exp(-zj))
                dz[b, d, t] = g * y * (s * (one + zj * (one - s)))
                g = g * (zj * s)
            gu = zero
            if has_D:
                dD_acc += g * uu
                gu = g * D[d]
            gdt = zero
            for n in range(N):
                Bn = B[b, n, t]
                lam_t = lam[b, n, d] + g * C[b, n, t]
                cuda.atomic.add(dC, (b, n, t), g * xs[b, i + 1, n, d])
                a = As[b, i, n, d]
                g_dtA = lam_t * xs[b, i, n, d] * a
                gdt += g_dtA * A[d, n] + lam_t * uu * Bn
                dA_part[b, d, n] += g_dtA * dt
                cuda.atomic.add(dB, (b, n, t), lam_t * dtu)
                gu += lam_t * dt * Bn
                lam[b, n, d] = a * lam_t
            du[b, d, t] = gu
            if softplus and pre <= threshold:
                gdt = gdt * (one / (one + math.exp(-pre)))
            ddelta[b, d, t] = gdt
            dbias_acc += gdt
    if has_D:
        dD_part[b, d] = dD_acc
    if has_bias:
        dbias_part[b, d] = dbias_acc


_cuda_kernels_cache: dict = {}


def _cuda_kernels():
    """The jitted CUDA kernels (decorated on first use, so the CPU path never pays for it)."""
    if not _cuda_kernels_cache:
        if cuda is None:
            raise RuntimeError("numba's CUDA target (numba-cuda) cannot be imported")
        _cuda_kernels_cache["fwd"] = cuda.jit(cache=True)(_fwd_cuda)
        _cuda_kernels_cache["bwd"] = cuda.jit(cache=True)(_bwd_cuda)
    return _cuda_kernels_cache["fwd"], _cuda_kernels_cache["bwd"]


def _launch(kernel, batch, dim, stream, *args):
    threads = min(CUDA_THREADS, dim)
    kernel[(-(-dim // threads), batch), threads, 0 if stream is None else stream](*args)


def cuda_scratch_shapes(batch: int, dim: int, L: int, N: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the scratch arrays the CUDA launchers take (their dtype: the inputs')."""
    T = BLOCK_T
    return dict(
        state=(batch, N, dim), lam=(batch, N, dim), xs=(batch, T + 1, N, dim), As=(batch, T, N, dim), ys=(batch, T, dim)
    )


def forward_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out, last, state, ckpt=None, stream=None):
    """Forward with the CUDA kernel: the arguments and layouts of ``forward_cpu``, with the outputs
    given: out (batch, D, L), last (batch, D, N), ckpt (``checkpoint_shape``) or None, and scratch
    ``state`` (``cuda_scratch_shapes``). Array-likes: Numba device arrays (or numpy arrays under the
    CUDA simulator); ``stream``: a Numba stream, or None for the default stream."""
    fwd, _ = _cuda_kernels()
    batch, dim, L = u.shape
    if batch == 0 or dim == 0:  # nothing to compute, and an empty grid cannot be launched
        return
    # absent arrays: stand-ins of the right rank that are never touched; read-only inputs, because
    # with host arrays (the simulator) every argument is copied back and must not clobber an output
    save = ckpt is not None
    ckpt = ckpt if save else u.reshape(batch, dim, L, 1)
    D_, z_, bias_ = (A[0] if D is None else D), (u if z is None else z), (A[0] if delta_bias is None else delta_bias)
    _launch(
        fwd,
        batch,
        dim,
        stream,
        u,
        delta,
        A,
        B,
        C,
        D_,
        z_,
        bias_,
        D is not None,
        z is not None,
        delta_bias is not None,
        bool(delta_softplus),
        BLOCK_T,
        save,
        out,
        last,
        state,
        ckpt,
    )


def backward_cuda(
    u,
    delta,
    A,
    B,
    C,
    D,
    z,
    delta_bias,
    delta_softplus,
    ckpt,
    dout,
    dlast,
    scratch,
    du,
    ddelta,
    dz,
    dA_part,
    dB,
    dC,
    dD_part,
    dbias_part,
    stream=None,
):
    """Backward with the CUDA kernel from ``forward_cuda``'s checkpoints: the forward's arguments,
    dout (batch, D, L), dlast (batch, D, N) or None, and ``scratch``: a dict of the arrays
    ``lam``, ``xs``, ``As``, ``ys`` (``cuda_scratch_shapes``). Outputs, given: du, ddelta, and dz
    or None (batch, D, L); dA_part (batch, D, N), dD_part and dbias_part (batch, D) or None, per
    batch row (the caller sums over it); dB, dC (batch, N, L), which must be zero on entry."""
    _, bwd = _cuda_kernels()
    batch, dim, L = u.shape
    if batch == 0 or dim == 0:
        return
    D_, z_, bias_ = (A[0] if D is None else D), (u if z is None else z), (A[0] if delta_bias is None else delta_bias)
    dlast_ = A.reshape(1, dim, A.shape[1]) if dlast is None else dlast  # stand-ins as in forward_cuda
    dz_ = dout if dz is None else dz
    dD_, dbias_ = (A if dD_part is None else dD_part), (A if dbias_part is None else dbias_part)
    _launch(
        bwd,
        batch,
        dim,
        stream,
        u,
        delta,
        A,
        B,
        C,
        D_,
        z_,
        bias_,
        D is not None,
        z is not None,
        delta_bias is not None,
        bool(delta_softplus),
        ckpt,
        dout,
        dlast_,
        dlast is not None,
        BLOCK_T,
        scratch["lam"],
        scratch["xs"],
        scratch["As"],
        scratch["ys"],
        du,
        ddelta,
        dz_,
        dA_part,
        dB,
        dC,
        dD_,
        dbias_,
    )
