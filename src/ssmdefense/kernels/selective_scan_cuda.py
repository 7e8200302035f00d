"""The selective scan's CUDA kernels and their launchers; the math they share with the CPU kernels
(the recurrence and its adjoint per element) is in ``selective_scan_math.py``, the plain reference
is ``selective_scan_ref`` (``selective_scan.py``).

Layout of the inputs and outputs as on the CPU (``selective_scan_cpu.py``): ``u``, ``delta``,
``z``, ``out`` (batch, D, L); ``A`` (D, N); ``B``, ``C`` (batch, N, L); ``D``, ``delta_bias`` (D,);
the last state (batch, D, N); checkpoints every ``BLOCK_T`` steps (``checkpoint_shape``).

One thread per (batch row, channel), sequential over time; the running state, the block buffers
and the adjoint live in global scratch arrays laid out (batch, ..., D) so a warp's accesses to
them are contiguous; dB and dC are sums over channels, so threads ``cuda.atomic.add`` into them.
The launchers take array-likes (Numba device arrays on a GPU, numpy arrays under
``NUMBA_ENABLE_CUDASIM=1``), and the outputs and scratch preallocated (``cuda_scratch_shapes``),
so the caller (torch) owns every allocation. Everything computes in the dtype of the arrays passed
(float32 or float64). Kernels compile on their first launch (``cuda_compile``).
"""

from __future__ import annotations

import math

from . import selective_scan_math
from .cuda_compile import cuda_device, cuda_kernel
from .selective_scan_math import SOFTPLUS_THRESHOLD, checkpoint_shape

__all__ = ["checkpoint_shape", "cuda_scratch_shapes", "forward_cuda", "backward_cuda"]

cuda = None  # numba.cuda, bound by cuda_compile when the kernels first compile
CUDA_THREADS = 128  # threads per CUDA block (channels of one batch row)

# the per-element math shared with the CPU kernels
_state_step = cuda_device(selective_scan_math.state_step)
_adjoint_step = cuda_device(selective_scan_math.adjoint_step)
_gate_backward = cuda_device(selective_scan_math.gate_backward)


@cuda_kernel
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
            xn = _state_step(math.exp(dt * A[d, n]), x[b, n, d], dtu, B[b, n, t])
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


@cuda_kernel
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
                xn = _state_step(a, xs[b, i, n, d], dtu, B[b, n, t])
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
                g, dz[b, d, t] = _gate_backward(g, y, zj, s, one)
            gu = zero
            if has_D:
                dD_acc += g * uu
                gu = g * D[d]
            gdt = zero
            for n in range(N):
                lam_a, dC_n, dB_n, dA_n, gdt_n, gu_n = _adjoint_step(
                    lam[b, n, d],
                    g,
                    As[b, i, n, d],
                    xs[b, i, n, d],
                    xs[b, i + 1, n, d],
                    A[d, n],
                    B[b, n, t],
                    C[b, n, t],
                    dt,
                    uu,
                    dtu,
                )
                cuda.atomic.add(dC, (b, n, t), dC_n)
                gdt += gdt_n
                dA_part[b, d, n] += dA_n
                cuda.atomic.add(dB, (b, n, t), dB_n)
                gu += gu_n
                lam[b, n, d] = lam_a  # a_t lambda_t, arriving at step t - 1
            du[b, d, t] = gu
            if softplus and pre <= threshold:
                gdt = gdt * (one / (one + math.exp(-pre)))
            ddelta[b, d, t] = gdt
            dbias_acc += gdt
    if has_D:
        dD_part[b, d] = dD_acc
    if has_bias:
        dbias_part[b, d] = dbias_acc


def _launch(kernel, batch, dim, stream, *args):
    threads = min(CUDA_THREADS, dim)
    kernel[(-(-dim // threads), batch), threads, 0 if stream is None else stream](*args)


def cuda_scratch_shapes(batch: int, dim: int, L: int, N: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the scratch arrays the CUDA launchers take (their dtype: the inputs')."""
    T = selective_scan_math.BLOCK_T
    return dict(
        state=(batch, N, dim), lam=(batch, N, dim), xs=(batch, T + 1, N, dim), As=(batch, T, N, dim), ys=(batch, T, dim)
    )


def forward_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out, last, state, ckpt=None, stream=None):
    """Forward with the CUDA kernel: the arguments and layouts of ``forward_cpu``, with the outputs
    given: out (batch, D, L), last (batch, D, N), ckpt (``checkpoint_shape``) or None, and scratch
    ``state`` (``cuda_scratch_shapes``). Array-likes: Numba device arrays (or numpy arrays under the
    CUDA simulator); ``stream``: a Numba stream, or None for the default stream."""
    batch, dim, L = u.shape
    if batch == 0 or dim == 0:  # nothing to compute, and an empty grid cannot be launched
        return
    # absent arrays: stand-ins of the right rank that are never touched; read-only inputs, because
    # with host arrays (the simulator) every argument is copied back and must not clobber an output
    save = ckpt is not None
    ckpt = ckpt if save else u.reshape(batch, dim, L, 1)
    D_, z_, bias_ = (A[0] if D is None else D), (u if z is None else z), (A[0] if delta_bias is None else delta_bias)
    _launch(
        _fwd_cuda,
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
        selective_scan_math.BLOCK_T,
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
    batch, dim, L = u.shape
    if batch == 0 or dim == 0:
        return
    D_, z_, bias_ = (A[0] if D is None else D), (u if z is None else z), (A[0] if delta_bias is None else delta_bias)
    dlast_ = A.reshape(1, dim, A.shape[1]) if dlast is None else dlast  # stand-ins as in forward_cuda
    dz_ = dout if dz is None else dz
    dD_, dbias_ = (A if dD_part is None else dD_part), (A if dbias_part is None else dbias_part)
    _launch(
        _bwd_cuda,
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
        selective_scan_math.BLOCK_T,
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
