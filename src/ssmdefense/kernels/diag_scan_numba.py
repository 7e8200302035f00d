"""Numba CPU and CUDA kernels for the two diagonal linear recurrences of the LTI SSMs.

1. **Diagonal SSM scan** (S4D / DSS in recurrent form; reference ``diag_ssm.diag_ssm_recurrence``):

       x_k = dA * x_{k-1} + dB * u_k,    y_k = 2 Re(sum_n C_n x_{k,n}),    x_{-1} = 0

   u (B, H, L) real; dA, dB, C (H, N) complex; y (B, H, L) real. Backward, with PyTorch's
   convention for complex gradients (grad = dL/dRe + i dL/dIm, so w = a v gives grad_v = conj(a) grad_w)
   and the adjoint state lambda_k = dL/dx_k:

       lambda_k = 2 g_k conj(C) + conj(dA) lambda_{k+1}
       grad u_k = Re(sum_n conj(dB_n) lambda_{k,n}),   grad dB = sum_k lambda_k u_k,
       grad dA  = sum_k lambda_k conj(x_{k-1}),        grad C  = sum_k 2 g_k conj(x_k)

   The kernels run the state with unit input, x~_k = dA x~_{k-1} + u_k (so x = dB x~), because y is
   symmetric in C and dB (y_k = 2 Re(sum_n C_n dB_n x~_k,n)); with mu_k = g_k + conj(dA) mu_{k+1}
   (so lambda = 2 conj(C) mu) the gradients reduce to two sums over time,

       S = sum_k g_k conj(x~_k),   T = sum_k mu_k conj(x~_{k-1}) = sum_k g_k conj(z_k),

       grad C = 2 conj(dB) S,   grad dB = 2 conj(C) S,   grad dA = 2 conj(C dB) T,
       grad u_k = Re(sum_n 2 conj(C_n dB_n) mu_k,n),

   where z_k = d x~_k / d dA = dA z_{k-1} + x~_{k-1} is the forward-mode derivative of the state
   (T's two forms are the same double sum, sum_{i<j} (j - i) conj(dA)^(j-i-1) g_j u_i, in the
   other order). So the backward is one sweep forward in time (x~, z, S, T) and one backward
   (mu, grad u), each O(N) memory per row: nothing of size L N is stored, let alone (B, H, L, N),
   and nothing is recomputed from checkpoints. (Keeping x~_{k-1} in an (L, N) scratch for a
   reverse-time T instead measured 10% slower on the CPU and needs the scratch.)

2. **Complex diagonal scan** (S5; reference ``assoc_scan.sequential_scan``):

       x_k = a * x_{k-1} + b_k,    a (P,) complex time-invariant, b (B, L, P) complex -> x (B, L, P)

   Backward: lambda_k = g_k + conj(a) lambda_{k+1}, grad b_k = lambda_k,
   grad a = sum_k lambda_k conj(x_{k-1}) (x is the saved output, so nothing is recomputed).

Gradients of the time-invariant parameters (dA, dB, C, a) are summed over the batch outside the
kernels: every kernel writes a per-worker (CPU) or per-batch-element (CUDA) partial that the caller
sums in torch. This keeps the kernels free of complex atomics (Numba's ``cuda.atomic.add`` takes no
complex) and of races.

The file holds the ``@njit`` / ``@cuda_kernel`` bodies and thin array-level launchers only; the
``torch.autograd.Function``s that call them are ``diag_ssm.diag_ssm_scan`` and
``assoc_scan.diagonal_scan``. Launchers take arrays whose dtypes already agree (float32 with
complex64, or float64 with complex128) and C-contiguous layouts; CPU launchers take numpy arrays,
CUDA launchers Numba device arrays (or plain numpy arrays under ``NUMBA_ENABLE_CUDASIM=1``) and an
optional stream. Outputs are passed in (allocated by the caller, e.g. torch).

CPU: ``@njit(parallel=True, cache=True)``, ``prange`` over rows (batch x channel, or batch x block
of ``CPU_STATE_BLOCK`` states for S5), states and coefficients split into real and imaginary float
arrays so that the innermost loop over the N (or P) states is plain contiguous float arithmetic that
LLVM vectorises. What decided the layout (float32, one thread, B 32 H 64 N 32 L 784):

- the diagonal-SSM kernels index whole arrays (``X_re[w, n]``, ``A_re[h, n]``) instead of taking row
  views inside the ``prange`` body: with no views there, Numba marks the arrays entering the
  parallel region ``noalias``, and the inner loops vectorise without runtime alias checks (an
  earlier backward measured 2.4x faster this way than with row views). The outputs must therefore
  not overlap the inputs;
- ``fastmath={"reassoc", "contract"}`` on the diagonal-SSM kernels: lets LLVM vectorise the
  reduction over n and fuse multiply-adds (forward 5x, backward 2.6x faster than without); it
  reorders the sum over n (results differ by float rounding, ~3e-7 relative in float32) and assumes
  nothing about NaN, inf or signed zeros, which full ``fastmath=True`` would;
- the S5 kernels keep row views (whole-array indexing measured 3x slower there) and index time in
  the backward through ``_time_reversed``. Their backward walks memory towards lower addresses,
  which this machine's prefetchers serve about 4x slower than the forward's direction (staging
  each chunk of time steps through a buffer in increasing order helped at P/2 = 64 and hurt at 16,
  so it is not done).

CUDA: diagonal SSM: one warp per (b, h) and chunk of 32 states, a lane per state n, sequential
over L; the per-step reduction over n goes through a 32 x 33 shared-memory tile per warp that is
summed once every ``CHUNK`` steps (one lane per time step: a coalesced write, no shuffles per step);
with N > 32 several warps add into the same row with float atomics (y and grad u must be zeroed).
In the backward each lane keeps x~, z, S, T and mu of its state in registers.
S5 scan: one thread per (b, p), sequential over L, neighbouring threads on neighbouring p (coalesced).
The CUDA kernels compile on their first launch (``cuda_compile``).

The CPU and CUDA bodies share no code: the CPU kernels split every complex number into real and
imaginary float arrays so that the loop over states is plain SIMD float arithmetic, while a CUDA
thread keeps one state's complex values in registers and the per-step sums go through shared
memory; the arithmetic per state is a line or two of each, written in those two different forms.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .cuda_compile import cuda_device, cuda_kernel

cuda = None  # numba.cuda, bound by cuda_compile when the CUDA kernels first compile

# Time steps per CUDA reduction tile (the per-step sums over n are added up once per tile).
CHUNK = 32
# Warps per CUDA block in the diagonal-SSM kernels (blockDim = (32, WARPS_PER_BLOCK)).
WARPS_PER_BLOCK = 4
# Threads per CUDA block in the S5 scan kernels.
THREADS_PER_BLOCK = 128
# Complex states per CPU work item in the S5 scan (the contiguous inner loop).
CPU_STATE_BLOCK = 64

_REASSOC = {"reassoc", "contract"}


# ---------------------------------------------------------------------------------------------
# Diagonal SSM scan, CPU
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _split(M):
    """Real and imaginary parts of the complex ``M`` (H, N) as two contiguous float arrays."""
    re = np.empty(M.shape, M.real.dtype)  # (H N)
    im = np.empty(M.shape, M.real.dtype)  # (H N)
    for h in range(M.shape[0]):
        for n in range(M.shape[1]):
            re[h, n] = M[h, n].real
            im[h, n] = M[h, n].imag
    return re, im


@njit(cache=True)
def _output_weights(C, dB, conjugate):
    """2 C dB (H, N), the weights that read y from the unit-input state x~ (conjugated for the
    backward's grad u)."""
    W = np.empty(C.shape, C.dtype)  # (H N)
    for h in range(C.shape[0]):
        for n in range(C.shape[1]):
            w = 2 * C[h, n] * dB[h, n]
            W[h, n] = w.conjugate() if conjugate else w
    return W


@njit(cache=True)
def _time_reversed(L):
    """L-1, L-2, ..., 0: the backward sweeps read their time index from this array.

    Where LLVM can follow ``k`` (``range(L - 1, -1, -1)``) it hoists the inner loop's runtime
    alias checks out of the time loop, and the hoisted check gives up when the addresses go down
    with k, leaving the inner loop scalar (3-4x slower in the S5 backward). An index loaded from
    memory keeps the checks per step, where they pass.
    """
    return np.arange(L - 1, -1, -1)


@njit(parallel=True, cache=True, fastmath=_REASSOC)
def _diag_ssm_fwd_cpu(u, dA, dB, C, y):
    Bt, H, L = u.shape
    N = dA.shape[1]
    R = Bt * H
    dt = y.dtype
    zero = dt.type(0)
    A_re, A_im = _split(dA)  # (H N)
    E = _output_weights(C, dB, False)  # (H N)
    E_re, E_im = _split(E)  # (H N): y_k = Re(sum_n E_n x~_k,n)
    X_re = np.zeros((R, N), dt)  # (R N) state x~ of each row, real part
    X_im = np.zeros((R, N), dt)  # (R N)
    for r in prange(R):
        b = r // H
        h = r - b * H
        for k in range(L):
            u_k = u[b, h, k]
            acc = zero
            for n in range(N):
                xr = A_re[h, n] * X_re[r, n] - A_im[h, n] * X_im[r, n] + u_k
                xi = A_re[h, n] * X_im[r, n] + A_im[h, n] * X_re[r, n]
                X_re[r, n] = xr
                X_im[r, n] = xi
                acc += E_re[h, n] * xr - E_im[h, n] * xi
            y[b, h, k] = acc


@njit(parallel=True, cache=True, fastmath=_REASSOC)
def _diag_ssm_bwd_cpu(u, dA, dB, C, g_y, g_u, g_dA, g_dB, g_C):
    Bt, H, L = u.shape
    N = dA.shape[1]
    W = g_dA.shape[0]
    R = Bt * H
    dt = g_u.dtype
    zero = dt.type(0)
    A_re, A_im = _split(dA)  # (H N)
    K = _output_weights(C, dB, True)  # (H N)
    K_re, K_im = _split(K)  # (H N): grad u_k = Re(sum_n K_n mu_k,n)
    X_re = np.empty((W, N), dt)  # (W N) state x~ of the row a worker is on, real part
    X_im = np.empty((W, N), dt)  # (W N)
    Z_re = np.empty((W, N), dt)  # (W N) z = d x~ / d dA
    Z_im = np.empty((W, N), dt)  # (W N)
    MU_re = np.empty((W, N), dt)  # (W N) adjoint state mu
    MU_im = np.empty((W, N), dt)  # (W N)
    S_re = np.empty((W, N), dt)  # (W N) S = sum_k g_k conj(x~_k)
    S_im = np.empty((W, N), dt)  # (W N)
    T_re = np.empty((W, N), dt)  # (W N) T = sum_k g_k conj(z_k)
    T_im = np.empty((W, N), dt)  # (W N)
    t_rev = _time_reversed(L)  # (L)
    for w in prange(W):
        for r in range((w * R) // W, ((w + 1) * R) // W):
            b = r // H
            h = r - b * H
            for n in range(N):
                X_re[w, n] = zero
                X_im[w, n] = zero
                Z_re[w, n] = zero
                Z_im[w, n] = zero
                MU_re[w, n] = zero
                MU_im[w, n] = zero
                S_re[w, n] = zero
                S_im[w, n] = zero
                T_re[w, n] = zero
                T_im[w, n] = zero
            # forward in time: x~_k = dA x~_{k-1} + u_k and z_k = dA z_{k-1} + x~_{k-1}
            for k in range(L):
                u_k = u[b, h, k]
                g_k = g_y[b, h, k]
                for n in range(N):
                    a_re = A_re[h, n]
                    a_im = A_im[h, n]
                    p_re = X_re[w, n]  # x~_{k-1}
                    p_im = X_im[w, n]
                    zr = a_re * Z_re[w, n] - a_im * Z_im[w, n] + p_re
                    zi = a_re * Z_im[w, n] + a_im * Z_re[w, n] + p_im
                    xr = a_re * p_re - a_im * p_im + u_k
                    xi = a_re * p_im + a_im * p_re
                    X_re[w, n] = xr
                    X_im[w, n] = xi
                    Z_re[w, n] = zr
                    Z_im[w, n] = zi
                    S_re[w, n] += g_k * xr
                    S_im[w, n] -= g_k * xi
                    T_re[w, n] += g_k * zr
                    T_im[w, n] -= g_k * zi
            # backward in time: mu_k = g_k + conj(dA) mu_{k+1}, grad u_k = Re(sum_n K_n mu_k,n)
            for kr in range(L):
                k = t_rev[kr]
                g_k = g_y[b, h, k]
                acc = zero
                for n in range(N):
                    mr = g_k + A_re[h, n] * MU_re[w, n] + A_im[h, n] * MU_im[w, n]
                    mi = A_re[h, n] * MU_im[w, n] - A_im[h, n] * MU_re[w, n]
                    MU_re[w, n] = mr
                    MU_im[w, n] = mi
                    acc += K_re[h, n] * mr - K_im[h, n] * mi
                g_u[b, h, k] = acc
            for n in range(N):
                S = complex(S_re[w, n], S_im[w, n])
                g_dA[w, h, n] += K[h, n] * complex(T_re[w, n], T_im[w, n])
                g_dB[w, h, n] += 2 * C[h, n].conjugate() * S
                g_C[w, h, n] += 2 * dB[h, n].conjugate() * S


def diag_ssm_forward_cpu(u, dA, dB, C, y):
    """y (B, H, L) <- the diagonal SSM's output for u (B, H, L) real and dA, dB, C (H, N) complex.

    numpy arrays, C-contiguous, float32 with complex64 or float64 with complex128; y must not
    overlap the inputs.
    """
    _diag_ssm_fwd_cpu(u, dA, dB, C, y)


def diag_ssm_backward_cpu(u, dA, dB, C, g_y, g_u, g_dA, g_dB, g_C):
    """Gradients of the diagonal SSM scan from the output gradient g_y (B, H, L).

    Writes g_u (B, H, L) and *adds* to the per-worker partials g_dA, g_dB, g_C (W, H, N), complex,
    zero-initialised by the caller: worker w handles rows [w R / W, (w + 1) R / W) of the
    flattened (b, h) (R = B H), so W is the parallelism (the caller sums over the first axis).
    The outputs must not overlap the inputs or each other.
    """
    _diag_ssm_bwd_cpu(u, dA, dB, C, g_y, g_u, g_dA, g_dB, g_C)


# ---------------------------------------------------------------------------------------------
# Diagonal SSM scan, CUDA
# ---------------------------------------------------------------------------------------------


@cuda_device
def _store_tile_sums(tile, wb, lane, out, b, h, k, ok, n_warps):
    """Lane j of a warp writes step k's sum over the warp's 32 modes (row j of its tile) into out[b, h, k];
    with several warps per (b, h) row their partial sums are added atomically."""
    if ok:
        s = tile[wb, lane, 0]
        for j in range(1, 32):
            s += tile[wb, lane, j]
        if n_warps == 1:
            out[b, h, k] = s
        else:
            cuda.atomic.add(out, (b, h, k), s)


@cuda_device
def _warp_layout(Bt, H, N, n_warps):
    """This thread's place: lane and warp in the block, the (b, h) row its warp works on (n_warps
    warps per row), its state index n, whether the row exists and whether n does too."""
    lane = cuda.threadIdx.x
    wb = cuda.threadIdx.y
    gw = cuda.blockIdx.x * cuda.blockDim.y + wb
    r = gw // n_warps
    n = (gw - r * n_warps) * 32 + lane
    row_ok = r < Bt * H
    b = r // H
    h = r - b * H
    return lane, wb, b, h, n, row_ok, row_ok and n < N


@cuda_kernel
def _diag_ssm_fwd_cuda(u, dA, dB, C, y, n_warps):
    """Block (32, WARPS_PER_BLOCK): warp -> (row r = b H + h, states n = 32 j + lane)."""
    Bt, H, L = u.shape
    N = dA.shape[1]
    lane, wb, b, h, n, row_ok, active = _warp_layout(Bt, H, N, n_warps)
    tile = cuda.shared.array((WARPS_PER_BLOCK, CHUNK, 33), y.dtype)  # (warps CHUNK 32+1) per-step partials
    v = cuda.local.array(3, dA.dtype)  # dA, E = 2 C dB, x~: typed like dA
    v[0] = 0
    v[1] = 0
    v[2] = 0
    if active:
        v[0] = dA[h, n]
        v[1] = (C[h, n] + C[h, n]) * dB[h, n]
    a = v[0]
    E = v[1]
    x = v[2]
    for k0 in range(0, L, CHUNK):
        for kk in range(CHUNK):
            k = k0 + kk
            if active and k < L:
                x = a * x + u[b, h, k]
                tile[wb, kk, lane] = (E * x).real
            else:
                tile[wb, kk, lane] = 0
        cuda.syncthreads()
        k = k0 + lane
        _store_tile_sums(tile, wb, lane, y, b, h, k, row_ok and k < L, n_warps)
        cuda.syncthreads()


@cuda_kernel
def _diag_ssm_bwd_cuda(u, dA, dB, C, g_y, g_u, g_dA, g_dB, g_C, n_warps):
    """Same thread layout as the forward; x~, z, S, T and mu of a thread's state live in registers."""
    Bt, H, L = u.shape
    N = dA.shape[1]
    lane, wb, b, h, n, row_ok, active = _warp_layout(Bt, H, N, n_warps)
    tile = cuda.shared.array((WARPS_PER_BLOCK, CHUNK, 33), g_u.dtype)  # (warps CHUNK 32+1)
    v = cuda.local.array(3, dA.dtype)  # dA, K = 2 conj(C dB), zero: typed like dA
    v[0] = 0
    v[1] = 0
    v[2] = 0
    if active:
        v[0] = dA[h, n]
        v[1] = ((C[h, n] + C[h, n]) * dB[h, n]).conjugate()
    a = v[0]
    Kn = v[1]
    a_conj = a.conjugate()
    x = v[2]
    z = v[2]
    S = v[2]
    T = v[2]
    mu = v[2]
    # forward in time: x~_k = dA x~_{k-1} + u_k, z_k = dA z_{k-1} + x~_{k-1}; S, T
    if active:
        for k in range(L):
            g_k = g_y[b, h, k]
            z = a * z + x
            x = a * x + u[b, h, k]
            S += g_k * x.conjugate()
            T += g_k * z.conjugate()
    # backward in time, CHUNK steps at a time: mu_k = g_k + conj(dA) mu_{k+1}, grad u_k = Re(sum_n K_n mu_k,n)
    n_chunks = (L + CHUNK - 1) // CHUNK
    for ch in range(n_chunks - 1, -1, -1):
        k0 = ch * CHUNK
        for kk in range(CHUNK - 1, -1, -1):
            k = k0 + kk
            if active and k < L:
                mu = g_y[b, h, k] + a_conj * mu
                tile[wb, kk, lane] = (Kn * mu).real
            else:
                tile[wb, kk, lane] = 0
        cuda.syncthreads()
        k = k0 + lane
        _store_tile_sums(tile, wb, lane, g_u, b, h, k, row_ok and k < L, n_warps)
        cuda.syncthreads()
    if active:
        g_dA[b, h, n] = Kn * T
        g_dB[b, h, n] = (C[h, n] + C[h, n]).conjugate() * S
        g_C[b, h, n] = (dB[h, n] + dB[h, n]).conjugate() * S


def _diag_ssm_launch(u, dA):
    """Grid, block and warps per row for the CUDA diagonal-SSM kernels."""
    Bt, H, L = u.shape
    n_warps = max(1, math.ceil(dA.shape[1] / 32))
    blocks = math.ceil(Bt * H * n_warps / WARPS_PER_BLOCK)
    return blocks, (32, WARPS_PER_BLOCK), n_warps


def diag_ssm_forward_cuda(u, dA, dB, C, y, stream=0):
    """y (B, H, L) <- the diagonal SSM's output, on the GPU. ``y`` must be zero-initialised
    (with N > 32 several warps add into each output)."""
    blocks, threads, n_warps = _diag_ssm_launch(u, dA)
    if blocks == 0 or u.shape[2] == 0:
        return
    _diag_ssm_fwd_cuda[blocks, threads, stream](u, dA, dB, C, y, n_warps)


def diag_ssm_backward_cuda(u, dA, dB, C, g_y, g_u, g_dA, g_dB, g_C, stream=0):
    """Gradients of the diagonal SSM scan on the GPU.

    g_u (B, H, L) must be zero-initialised (with N > 32 several warps add into it); g_dA, g_dB,
    g_C (B, H, N) complex receive per-batch partials (the caller sums over the first axis).
    """
    blocks, threads, n_warps = _diag_ssm_launch(u, dA)
    if blocks == 0:
        return
    _diag_ssm_bwd_cuda[blocks, threads, stream](u, dA, dB, C, g_y, g_u, g_dA, g_dB, g_C, n_warps)


# ---------------------------------------------------------------------------------------------
# Complex diagonal scan (S5), CPU
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _split_vector(a):
    """Real and imaginary parts of the complex ``a`` (P,) as two contiguous float arrays."""
    re = np.empty(a.shape, a.real.dtype)  # (P)
    im = np.empty(a.shape, a.real.dtype)  # (P)
    for p in range(a.shape[0]):
        re[p] = a[p].real
        im[p] = a[p].imag
    return re, im


@njit(parallel=True, cache=True)
def _diag_scan_fwd_cpu(a, b, x):
    Bt, L, P = b.shape
    n_blocks = (P + CPU_STATE_BLOCK - 1) // CPU_STATE_BLOCK
    a_re, a_im = _split_vector(a)  # (P)
    for i in prange(Bt * n_blocks):
        bi = i // n_blocks
        p0 = (i - bi * n_blocks) * CPU_STATE_BLOCK
        m = min(CPU_STATE_BLOCK, P - p0)
        ar = a_re[p0 : p0 + m]  # (m)
        ai = a_im[p0 : p0 + m]  # (m)
        s_re = np.zeros(m, a_re.dtype)  # (m) state
        s_im = np.zeros(m, a_re.dtype)  # (m)
        for k in range(L):
            b_k = b[bi, k, p0 : p0 + m]  # (m)
            x_k = x[bi, k, p0 : p0 + m]  # (m)
            for p in range(m):
                bk = b_k[p]
                xr = ar[p] * s_re[p] - ai[p] * s_im[p] + bk.real
                xi = ar[p] * s_im[p] + ai[p] * s_re[p] + bk.imag
                s_re[p] = xr
                s_im[p] = xi
                x_k[p] = complex(xr, xi)


@njit(parallel=True, cache=True)
def _diag_scan_bwd_cpu(a, x, g_x, g_b, g_a):
    Bt, L, P = x.shape
    n_blocks = (P + CPU_STATE_BLOCK - 1) // CPU_STATE_BLOCK
    a_re, a_im = _split_vector(a)  # (P)
    dt = a_re.dtype
    t_rev = _time_reversed(L)  # (L)
    for i in prange(Bt * n_blocks):
        bi = i // n_blocks
        p0 = (i - bi * n_blocks) * CPU_STATE_BLOCK
        m = min(CPU_STATE_BLOCK, P - p0)
        ar = a_re[p0 : p0 + m]  # (m)
        ai = a_im[p0 : p0 + m]  # (m)
        l_re = np.zeros(m, dt)  # (m) adjoint state
        l_im = np.zeros(m, dt)  # (m)
        ga_re = np.zeros(m, dt)  # (m) grad a of this batch element
        ga_im = np.zeros(m, dt)  # (m)
        for kr in range(L):
            k = t_rev[kr]
            g_k = g_x[bi, k, p0 : p0 + m]  # (m)
            gb_k = g_b[bi, k, p0 : p0 + m]  # (m)
            for p in range(m):
                gk = g_k[p]
                lr = gk.real + ar[p] * l_re[p] + ai[p] * l_im[p]  # g_k + conj(a) lambda_{k+1}
                li = gk.imag + ar[p] * l_im[p] - ai[p] * l_re[p]
                l_re[p] = lr
                l_im[p] = li
                gb_k[p] = complex(lr, li)
            if k > 0:
                x_p = x[bi, k - 1, p0 : p0 + m]  # (m) x_{k-1}
                for p in range(m):
                    xp = x_p[p]
                    ga_re[p] += l_re[p] * xp.real + l_im[p] * xp.imag  # lambda_k conj(x_{k-1})
                    ga_im[p] += l_im[p] * xp.real - l_re[p] * xp.imag
        for p in range(m):
            g_a[bi, p0 + p] = complex(ga_re[p], ga_im[p])


def diagonal_scan_forward_cpu(a, b, x):
    """x (B, L, P) <- states of x_k = a x_{k-1} + b_k for a (P,) and b (B, L, P), complex numpy arrays."""
    _diag_scan_fwd_cpu(a, b, x)


def diagonal_scan_backward_cpu(a, x, g_x, g_b, g_a):
    """Gradients of the complex diagonal scan: g_b (B, L, P) and per-batch partials g_a (B, P)
    (the caller sums over the first axis), from the forward's output x and its gradient g_x."""
    _diag_scan_bwd_cpu(a, x, g_x, g_b, g_a)


# ---------------------------------------------------------------------------------------------
# Complex diagonal scan (S5), CUDA
# ---------------------------------------------------------------------------------------------


@cuda_kernel
def _diag_scan_fwd_cuda(a, b, x):
    """One thread per (batch element, state p), sequential over L."""
    Bt, L, P = b.shape
    i = cuda.grid(1)
    if i < Bt * P:
        bi = i // P
        p = i - bi * P
        a_p = a[p]
        s = b[bi, 0, p]
        x[bi, 0, p] = s
        for k in range(1, L):
            s = a_p * s + b[bi, k, p]
            x[bi, k, p] = s


@cuda_kernel
def _diag_scan_bwd_cuda(a, x, g_x, g_b, g_a):
    Bt, L, P = x.shape
    i = cuda.grid(1)
    if i < Bt * P:
        bi = i // P
        p = i - bi * P
        a_conj = a[p].conjugate()
        zero = cuda.local.array(1, g_a.dtype)
        zero[0] = 0
        ga = zero[0]
        lam = g_x[bi, L - 1, p]
        g_b[bi, L - 1, p] = lam
        if L > 1:
            ga += lam * x[bi, L - 2, p].conjugate()
        for k in range(L - 2, -1, -1):
            lam = g_x[bi, k, p] + a_conj * lam
            g_b[bi, k, p] = lam
            if k > 0:
                ga += lam * x[bi, k - 1, p].conjugate()
        g_a[bi, p] = ga


def _diag_scan_launch(b):
    Bt, L, P = b.shape
    return math.ceil(Bt * P / THREADS_PER_BLOCK), THREADS_PER_BLOCK


def diagonal_scan_forward_cuda(a, b, x, stream=0):
    """x (B, L, P) <- states of x_k = a x_{k-1} + b_k on the GPU (a (P,), b (B, L, P), complex)."""
    blocks, threads = _diag_scan_launch(b)
    if blocks == 0 or b.shape[1] == 0:
        return
    _diag_scan_fwd_cuda[blocks, threads, stream](a, b, x)


def diagonal_scan_backward_cuda(a, x, g_x, g_b, g_a, stream=0):
    """Gradients of the complex diagonal scan on the GPU: g_b (B, L, P) and per-batch partials
    g_a (B, P) (the caller sums over the first axis)."""
    blocks, threads = _diag_scan_launch(x)
    if blocks == 0 or x.shape[1] == 0:
        return
    _diag_scan_bwd_cuda[blocks, threads, stream](a, x, g_x, g_b, g_a)
