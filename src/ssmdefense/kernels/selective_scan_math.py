"""The selective scan's math for both targets (Mamba, Gu & Dao 2023, Algorithm 2): the recurrence and
its adjoint written once, per state element, and the scalar helpers the CPU kernels vectorise.

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

``state_step``, ``adjoint_step`` and ``gate_backward`` are that math for one (step, state) or one
(step, channel), as plain Python functions that ``selective_scan_cpu`` compiles with
``njit(inline="always")`` (inlined into its channel-innermost SIMD loops) and ``selective_scan_cuda``
with ``cuda_device`` (one thread per channel), so the forward and backward recurrences exist once for
both targets. The loops around them differ by target (the CPU vectorises over channels, with its
inputs gathered into contiguous vectors; CUDA gives each channel a thread and its scratch in global
memory), so they stay in the target files. Exponentials stay outside the shared functions: the CPU
uses ``_exp`` (below), which LLVM can vectorise, CUDA ``math.exp`` (libdevice). The arguments carry
the arrays' dtype (float32 or float64) and ``one`` is passed in: a Python float literal would widen
float32 arithmetic to float64.

The state is checkpointed every ``BLOCK_T`` steps (``checkpoint_shape``: (batch, ceil(L / BLOCK_T),
N, D)) on both targets, and both backward kernels recompute a block of states from its checkpoint.

There are batch L D N exponentials per pass, and LLVM cannot vectorise a loop that calls libm's
``exp``: ``_exp`` is an exp in plain arithmetic (Cody-Waite reduction, polynomial, exponent bits)
that it can vectorise; measured within 1 ulp of numpy's exp in float32 and float64, including
overflow to inf, gradual underflow and NaN, and 3x (float64) to 7x (float32) faster per element
than libm's on an AVX-512 machine, 5x (float32) on an AVX2 one (AMD Zen 3). ``_softplus`` is built
on it the same way. The CPU kernels compile these with ``FASTMATH`` (fused multiply-adds only).

Numba's disk cache (``cache=True``) keys a kernel on its own file only: after editing this file,
clear the cache (``__pycache__/selective_scan_*.nb*``, or ``NUMBA_CACHE_DIR``) or touch
``selective_scan_cpu.py`` and ``selective_scan_cuda.py``, or their kernels load stale code.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

BLOCK_T = 32  # steps per checkpoint block: the CPU block buffers (2 (BLOCK_T, N, 16..D)) stay in L2
SOFTPLUS_THRESHOLD = 20.0  # softplus(x) = x above it, as in torch (and so in the reference)
# The CPU kernels' fastmath flags: contraction of a * b + c into one fused multiply-add (one rounding
# instead of two) and nothing else; no reassociation, so no result depends on the vector width.
FASTMATH = {"contract"}


def checkpoint_shape(batch: int, dim: int, L: int, N: int) -> tuple[int, int, int, int]:
    """Shape of the forward's checkpoints: the state entering every block of ``BLOCK_T`` steps,
    (batch, ceil(L / BLOCK_T), N, D)."""
    return batch, -(-L // BLOCK_T), N, dim


# --------------------------------------------------------------------------------------------------
# The recurrence and its adjoint, per element: one body for both targets
# --------------------------------------------------------------------------------------------------


def state_step(a, x_prev, dtu, B_n):
    """x_t = a_t x_{t-1} + delta'_t u_t B_t,n for one state n (``dtu`` = delta'_t u_t)."""
    return a * x_prev + dtu * B_n


def adjoint_step(lam_next, g, a, x_prev, x_t, A_n, B_n, C_n, dt, u, dtu):
    """Step t of the adjoint for one state n of one channel, given a_{t+1} lambda_{t+1}
    (``lam_next``), g_t = dLoss/dy_t, the decay a_t, the states x_{t-1} and x_t, A_n, B_t,n,
    C_t,n, delta'_t, u_t and delta'_t u_t. Returns

        a_t lambda_t (the adjoint arriving at step t - 1), and state n's terms of
        dC_t,n, dB_t,n (before the sums over channels), dA_n, ddelta'_t and du_t.
    """
    lam = lam_next + g * C_n  # lambda_t
    g_dtA = lam * x_prev * a  # dLoss/d(delta'_t A_n)
    return a * lam, g * x_t, lam * dtu, g_dtA * dt, g_dtA * A_n + lam * u * B_n, lam * dt * B_n


def gate_backward(g, y, z, s, one):
    """Through out = y SiLU(z), given dLoss/dout ``g`` and s = sigmoid(z): (dLoss/dy, dLoss/dz),
    with SiLU'(z) = s (1 + z (1 - s))."""
    return g * (z * s), g * y * (s * (one + z * (one - s)))


# --------------------------------------------------------------------------------------------------
# A vectorisable exp and softplus (CPU)
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
    float64) evaluated in Estrin's scheme (independent pairs, then powers of r^2: a dependency
    chain about half as long as Horner's, which is what limited the scan's loops); 2^k built from
    exponent bits in two halves so gradual underflow and overflow to inf come out right. x is
    clamped first (the clamped values give exactly 0 or inf); NaN stays NaN."""
    if x == types.float32:
        f, i = np.float32, np.int32
        lo, hi, log2e = f(-104.0), f(89.0), f(1.44269504088896341)
        ln2_hi, ln2_lo = f(0.693359375), f(-2.12194440e-4)
        p0, p1, p2 = f(1.9875691500e-4), f(1.3981999507e-3), f(8.3334519073e-3)
        p3, p4, p5 = f(4.1665795894e-2), f(1.6666665459e-1), f(5.0000001201e-1)
        half, one, bias, shift = f(0.5), f(1.0), i(127), i(23)

        def exp32(x):
            xc = x if x > lo else lo  # max and min: NaN becomes lo (k stays defined), restored below
            xc = hi if xc > hi else xc
            k = np.floor(xc * log2e + half)
            r = xc - k * ln2_hi
            r = r - k * ln2_lo
            r2 = r * r
            p = ((p0 * r + p1) * (r2 * r2) + (p2 * r + p3) * r2) + (p4 * r + p5)  # Estrin: a short chain
            p = p * r2 + r + one
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
            xc = x if x > lo else lo  # max and min: NaN becomes lo (k stays defined), restored below
            xc = hi if xc > hi else xc
            k = np.floor(xc * log2e + 0.5)
            r = xc - k * ln2_hi
            r = r - k * ln2_lo
            r2 = r * r
            r4 = r2 * r2
            p = ((c2 + c3 * r) + (c4 + c5 * r) * r2) + ((c6 + c7 * r) + (c8 + c9 * r) * r2) * r4  # Estrin
            p = p + ((c10 + c11 * r) + (c12 + c13 * r) * r2) * (r4 * r4)
            p = p * r2 + r + 1.0
            ki = i(k)
            k1 = ki >> i(1)
            k2 = ki - k1
            res = p * _bits_as_float((k1 + bias) << shift) * _bits_as_float((k2 + bias) << shift)
            return x if x != x else res

        return exp64
    return None


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


@njit(cache=True, fastmath=FASTMATH)
def apply_elementwise(x, out, which=0):
    """``out[i] = f(x[i])`` (1-D arrays) for f = ``_exp`` (which = 0) or ``_softplus`` (1): lets
    tests compare the kernels' own functions with numpy's."""
    for i in range(x.shape[0]):
        out[i] = _exp(x[i]) if which == 0 else _softplus(x[i])
