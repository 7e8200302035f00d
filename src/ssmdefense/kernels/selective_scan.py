"""Selective scan (Gu & Dao, 2023, "Mamba", Algorithm 2): the fast chunked scan and the plain
step-by-step reference.

Per channel d and state index n, with input-dependent step ``delta`` and matrices ``B``, ``C``:

    dA_t = exp(delta_t A)                                   (zero-order hold for A)
    dB_t = delta_t B_t                                      (Euler step for B, as Mamba does)
    x_t  = dA_t * x_{t-1} + dB_t * u_t,     x_{-1} = 0      (state, (B D N))
    y_t  = sum_n C_t,n x_t,n  +  D u_t                      (output, (B D))
    out  = y * SiLU(z)                                      (when a gate z is given)

Shapes follow ``mamba_ssm.ops.selective_scan_interface``: ``u``, ``delta``, ``z`` (B, D, L);
``A`` (D, N), real; ``B``, ``C`` (B, N, L) (input-dependent, shared by all D channels);
``D``, ``delta_bias`` (D,). ``delta_bias`` is added to ``delta`` and ``delta_softplus`` applies
softplus after that, as in Mamba.

``selective_scan`` is the fast path: the recurrence ``x_t = a_t x_{t-1} + b_t`` is split into
K chunks of T steps (T ~ sqrt(L)). All chunks are scanned at once from a zero state (T vectorised
steps, each also emitting ``C_t . x_t``); the decay from each chunk's start to every step inside
it is ``exp(cumsum(delta * A))`` over the chunk (a cumulative sum of log-decays); the states
entering the chunks follow from a short scan over the chunk ends (K steps); then every step adds
``C_t . (decay_t * entering state)``. About 2 sqrt(L) Python steps instead of L, and every
exponential has a non-positive argument when ``delta * A <= 0`` (softplus delta, negative A), so
nothing overflows: the result equals the sequential recurrence up to float rounding. On CPU, once
one step already covers ``batch * D * N >= CPU_ONE_CHUNK_ELEMENTS`` elements the work is bound by
memory traffic rather than Python steps, and the default is a single chunk (a vectorised loop over
L, no fix-up passes), which measured faster there (see ``default_chunk_size``).

``selective_scan_fn`` is the Numba kernel (``selective_scan_cpu.py``, ``selective_scan_cuda.py``, sharing
the recurrence and its adjoint in ``selective_scan_math.py``), with the arguments of
``mamba_ssm``'s ``selective_scan_fn``, on the tensors' device: ``@njit(parallel=True)`` on CPU,
``cuda.jit`` on CUDA (on torch's current stream, outputs allocated by torch). ``SelectiveScanFn``
(an ``autograd.Function``) sits between it and the kernels, which take the tensors as they are
(contiguous, in this layout; bias and softplus are applied inside) and have a hand-derived
backward pass for every input. For the backward it keeps the inputs and the state every
``BLOCK_T`` steps, not every state (the backward kernel recomputes states block by block), so its
memory is O(batch D L), not O(batch D L N) like the two torch paths. It needs Numba (and
numba-cuda with a GPU for CUDA tensors); otherwise ``KernelUnavailableError``. Numba is imported
on the first call only.

``selective_scan_ref`` is the sequential reference (L steps), like Mamba's ``selective_scan_ref``.
All three compute in float32 for float16/bfloat16/float32 inputs (as Mamba does) and in float64
for float64 inputs, and return the dtype of ``u``. ``selective_scan`` and ``selective_scan_ref``
are plain differentiable PyTorch; ``selective_scan_fn`` has hand-written gradients for all inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..validation import positive
from . import backend
from .backend import KernelUnavailableError, cuda_arrays, sync_threads

# Measured on one CPU thread (L = 784): sqrt(L) chunks win below batch * D * N ~ 4096-8192, one chunk above.
CPU_ONE_CHUNK_ELEMENTS = 8192


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    """ValueError unless the shapes are those of the module docstring."""
    if u.ndim != 3:
        raise ValueError(f"u must be (batch, D, L); got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    if A.ndim != 2 or A.shape[0] != dim or A.is_complex():
        raise ValueError(f"A must be real (D={dim}, N); got shape {tuple(A.shape)}, dtype {A.dtype}")
    N = A.shape[1]
    if tuple(delta.shape) != (batch, dim, L):
        raise ValueError(f"delta must have u's shape {(batch, dim, L)}; got {tuple(delta.shape)}")
    for name, M in (("B", B), ("C", C)):
        if tuple(M.shape) != (batch, N, L):
            raise ValueError(f"{name} must be (batch, N, L) = {(batch, N, L)}; got {tuple(M.shape)}")
    if D is not None and tuple(D.shape) != (dim,):
        raise ValueError(f"D must be (D,) = ({dim},); got {tuple(D.shape)}")
    if z is not None and tuple(z.shape) != (batch, dim, L):
        raise ValueError(f"z must have u's shape {(batch, dim, L)}; got {tuple(z.shape)}")
    if delta_bias is not None and tuple(delta_bias.shape) != (dim,):
        raise ValueError(f"delta_bias must be (D,) = ({dim},); got {tuple(delta_bias.shape)}")


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Check shapes, cast to the compute dtype, apply delta_bias/softplus."""
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    dtype = _compute_dtype(u)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]  # (B D L)
    if delta_softplus:
        delta = F.softplus(delta)  # (B D L)
    return u, delta, A, B, C


def _finish(y, u, D, z, dtype_in):
    """y + D u, then the SiLU(z) gate; cast back to the input dtype."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u  # (B D L)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))  # (B D L)
    return y.to(dtype_in)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Reference: the selective SSM one step at a time (L sequential steps).

    Args:
        u: input (B, D, L). delta: step sizes (B, D, L), before ``delta_bias``/softplus.
        A: (D, N), real. B, C: input-dependent (B, N, L). D: skip (D,) or None.
        z: gate (B, D, L) or None. delta_bias: (D,) or None. delta_softplus: apply softplus.
        return_last_state: also return the final state x_{L-1}, (B, D, N), in the compute dtype.
    Returns:
        out (B, D, L) in ``u``'s dtype (and the last state when asked).
    """
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    batch, dim = u.shape[:2]
    dA = torch.exp(torch.einsum("bdl,dn->lbdn", delta, A))  # (L B D N)
    dB_u = torch.einsum("bdl,bnl->lbdn", delta * u, B)  # (L B D N)
    x = u.new_zeros(batch, dim, A.shape[1])  # (B D N)
    ys = []
    # unbind, not indexing per step: one backward op for all steps instead of L full-size ones
    for dA_t, dB_u_t, C_t in zip(dA.unbind(0), dB_u.unbind(0), C.unbind(2)):
        x = dA_t * x + dB_u_t  # (B D N)
        ys.append(torch.einsum("bdn,bn->bd", x, C_t))  # (B D)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)  # (B D L)
    out = _finish(y, u, D, z, dtype_in)
    return (out, x) if return_last_state else out


def default_chunk_size(L: int, work_per_step: int, is_cuda: bool) -> int:
    """Steps per chunk T for ``selective_scan`` when none is given.

    ceil(sqrt(L)) (about 2 sqrt(L) sequential steps), except on CPU when one step of the plain loop
    already touches ``work_per_step = batch * D * N >= CPU_ONE_CHUNK_ELEMENTS`` elements: then the
    cost is memory traffic, the extra full-size passes of chunking (decay, fix-up) cost more than
    the Python steps they save, and one chunk (a vectorised loop over L) is faster.
    """
    if L <= 1:
        return 1
    if not is_cuda and work_per_step >= CPU_ONE_CHUNK_ELEMENTS:
        return L
    return math.isqrt(L - 1) + 1  # ceil(sqrt(L))


def chunked_selective_scan(log_dA: torch.Tensor, dB_u: torch.Tensor, C: torch.Tensor, chunk_size: int):
    """Outputs and last state of ``x_t = exp(log_dA_t) x_{t-1} + dB_u_t``, ``y_t = C_t . x_t``
    (``x_{-1} = 0``), chunked. Time is the leading dimension so every step's slice is contiguous.

    Args:
        log_dA: log-decays delta * A, (L, B, D, N); ``<= 0`` keeps every exponential <= 1.
        dB_u: inputs delta * B * u, (L, B, D, N).
        C: (L, B, N).
        chunk_size: T, steps per chunk (1..L).
    Returns:
        y (B, D, L) and the last state x_{L-1} (B, D, N).
    """
    L = dB_u.shape[0]
    T = min(chunk_size, L)
    K = -(-L // T)  # number of chunks
    pad = K * T - L
    if pad:  # trailing steps with a = 1, b = 0, C = 0 leave the real steps and the last state unchanged
        log_dA = F.pad(log_dA, (0, 0, 0, 0, 0, 0, 0, pad))
        dB_u = F.pad(dB_u, (0, 0, 0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    log_dA = log_dA.unflatten(0, (K, T))  # (K T B D N)
    dB_u = dB_u.unflatten(0, (K, T))  # (K T B D N)
    C = C.unflatten(0, (K, T))[:, :, :, None]  # (K T B 1 N)
    # 1. every chunk scanned from a zero state, all chunks at once: T vectorised steps.
    #    (unbind, not indexing per step, so backward is one op for all steps, not one full-size op each)
    h = torch.zeros_like(dB_u[:, 0])  # (K B D N)
    ys = []
    for a_t, b_t, C_t in zip(torch.exp(log_dA).unbind(1), dB_u.unbind(1), C.unbind(1)):
        h = a_t * h + b_t  # (K B D N)
        ys.append((h * C_t).sum(-1))  # (K B D)
    y = torch.stack(ys, dim=1)  # (K T B D)
    if K > 1:
        # 2. decay from each chunk's start to every step in it: exp of a cumulative sum of log-decays
        decay = torch.exp(torch.cumsum(log_dA, dim=1))  # (K T B D N), in (0, 1] when log_dA <= 0
        # 3. the state entering each chunk: a scan over the chunk ends (K sequential steps)
        carry = torch.zeros_like(h[0])  # (B D N)
        entering = []
        for end_decay, end_local in zip(decay[:, -1].unbind(0), h.unbind(0)):
            entering.append(carry)
            carry = end_decay * carry + end_local  # (B D N)
        entering = torch.stack(entering, dim=0)  # (K B D N)
        # 4. each step adds C_t . (decay_t * entering state of its chunk)
        y = y + (decay * entering[:, None] * C).sum(-1)  # (K T B D)
        last = carry  # (B D N)
    else:
        last = h[0]  # (B D N)
    y = y.flatten(0, 1)  # (K*T B D)
    if pad:
        y = y[:L]  # (L B D)
    return y.permute(1, 2, 0), last  # (B D L), (B D N)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int | None = None,
):
    """Fast selective scan (chunked); same arguments and result as ``selective_scan_ref``, plus
    ``chunk_size``: steps per chunk, None for ``default_chunk_size`` (ceil(sqrt(L)) unless one
    chunk is faster).

    Memory: O(batch * D * L * N) for the states, like the reference.
    """
    positive("chunk_size", chunk_size, integer=True, optional=True)
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    batch, dim, L = u.shape
    N = A.shape[1]
    if L == 0:
        y, last = u.new_zeros(batch, dim, 0), u.new_zeros(batch, dim, N)
    else:
        if chunk_size is None:
            chunk_size = default_chunk_size(L, batch * dim * N, u.is_cuda)
        log_dA = torch.einsum("bdl,dn->lbdn", delta, A)  # (L B D N)
        dB_u = torch.einsum("bdl,bnl->lbdn", delta * u, B)  # (L B D N)
        y, last = chunked_selective_scan(log_dA, dB_u, C.permute(2, 0, 1), chunk_size)  # (B D L), (B D N)
    out = _finish(y, u, D, z, dtype_in)
    return (out, last) if return_last_state else out


class SelectiveScanFn(torch.autograd.Function):
    """The Numba selective scan with its hand-derived backward pass (``selective_scan_cpu.py``,
    ``selective_scan_cuda.py``).

    Tensors in the compute dtype: u, delta (before bias and softplus), z (B D L); A (D N);
    B, C (B N L); D, delta_bias (D) or None. On CPU the (B D L) and (B N L) tensors are passed
    with their strides (no copy; a channels-last caller gets out, du, ddelta, dz channels-last);
    CUDA takes them contiguous. Returns out (B D L) and the last state (B D N).
    Saved for backward: the inputs and the state every ``BLOCK_T`` steps, (B, L / BLOCK_T, N, D).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ctx.set_materialize_grads(False)
        ctx.delta_softplus = delta_softplus = bool(delta_softplus)
        save = any(ctx.needs_input_grad)
        batch, dim, L = u.shape
        N = A.shape[1]
        inputs = tuple(None if t is None else t.detach() for t in (u, delta, A, B, C, D, z, delta_bias))
        inputs = tuple(None if t is None else t.contiguous() if u.is_cuda or t.ndim < 3 else t for t in inputs)
        if u.is_cuda:
            from . import selective_scan_cuda as K

            out, last = u.new_empty(batch, dim, L), u.new_empty(batch, dim, N)  # (B D L), (B D N)
            ckpt = u.new_empty(K.checkpoint_shape(batch, dim, L, N)) if save else None  # (B K N D)
            state = u.new_empty(K.cuda_scratch_shapes(batch, dim, L, N)["state"])  # (B N D)
            arrays, stream = cuda_arrays(*inputs, out, last, state, ckpt)
            K.forward_cuda(*arrays[:8], delta_softplus, *arrays[8:], stream=stream)
        else:
            from . import selective_scan_cpu as K

            threads = sync_threads()
            u_, delta_, A_, B_, C_, D_, z_, bias_ = (None if t is None else t.numpy() for t in inputs)
            out, last, ckpt = K.forward_cpu(
                u_, delta_, A_, B_, C_, D_, z_, bias_, delta_softplus, save_states=save, threads=threads
            )
            out, last = torch.from_numpy(out), torch.from_numpy(last)  # (B D L), (B D N)
            ckpt = None if ckpt is None else torch.from_numpy(ckpt)  # (B K N D)
        if save:
            ctx.save_for_backward(*inputs, ckpt)
        return out, last

    @staticmethod
    @once_differentiable  # the backward runs in Numba: no graph for a double backward
    def backward(ctx, dout, dlast):
        *inputs, ckpt = ctx.saved_tensors
        u, D, z, delta_bias = inputs[0], inputs[5], inputs[6], inputs[7]
        batch, dim, L = u.shape
        N = inputs[2].shape[1]
        dout = u.new_zeros(batch, dim, L) if dout is None else dout.to(u.dtype)  # (B D L)
        dout = dout.contiguous() if u.is_cuda else dout  # the CPU kernel takes any strides
        dlast = None if dlast is None else dlast.to(u.dtype).contiguous()  # (B D N)
        if u.is_cuda:
            from . import selective_scan_cuda as K

            names = ("lam", "xs", "As", "ys")
            shapes = K.cuda_scratch_shapes(batch, dim, L, N)
            scratch = [u.new_empty(shapes[k]) for k in names]
            du, ddelta = torch.empty_like(u), torch.empty_like(u)  # (B D L)
            dz = None if z is None else torch.empty_like(u)  # (B D L)
            dA = u.new_empty(batch, dim, N)  # (B D N), per batch row
            dB, dC = u.new_zeros(batch, N, L), u.new_zeros(batch, N, L)  # (B N L), added into
            dD = None if D is None else u.new_empty(batch, dim)  # (B D), per batch row
            dbias = None if delta_bias is None else u.new_empty(batch, dim)  # (B D), per batch row
            arrays, stream = cuda_arrays(*inputs, ckpt, dout, dlast, *scratch, du, ddelta, dz, dA, dB, dC, dD, dbias)
            K.backward_cuda(
                *arrays[:8],
                ctx.delta_softplus,
                *arrays[8:11],
                dict(zip(names, arrays[11:15])),
                *arrays[15:],
                stream=stream,
            )
            dA = dA.sum(0)  # (D N)
            dD = None if dD is None else dD.sum(0)  # (D)
            dbias = None if dbias is None else dbias.sum(0)  # (D)
        else:
            from . import selective_scan_cpu as K

            threads = sync_threads()
            arrays = (None if t is None else t.numpy() for t in (*inputs, ckpt, dout, dlast))
            u_, delta_, A_, B_, C_, D_, z_, bias_, ckpt_, dout_, dlast_ = arrays
            grads = K.backward_cpu(
                u_, delta_, A_, B_, C_, D_, z_, bias_, ctx.delta_softplus, ckpt_, dout_, dlast_, threads=threads
            )
            du, ddelta, dA, dB, dC, dD, dz, dbias = (None if g is None else torch.from_numpy(g) for g in grads)
        grads = (du, ddelta, dA, dB, dC, dD, dz, dbias)  # (B D L) x2, (D N), (B N L) x2, (D), (B D L), (D)
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None)


def selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """The selective scan as a Numba kernel on the tensors' device (CPU or CUDA); same arguments and
    result as ``selective_scan_ref`` (and ``mamba_ssm``'s ``selective_scan_fn``), gradients for
    every tensor argument.

    Raises:
        ValueError: bad shapes, or tensors on different devices.
        KernelUnavailableError: Numba cannot run on that device (not installed; no numba-cuda or
            GPU for CUDA tensors).
    """

    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"selective_scan_fn: all tensors must be on one device; got {sorted(map(str, devices))}")
    problem = backend.device_problem(u.device.type)  # looked up per call (tests replace it)
    if problem:
        raise KernelUnavailableError(
            f"selective_scan_fn: the Numba kernel cannot run on {u.device.type} tensors: {problem}"
        )
    dtype_in, dtype = u.dtype, _compute_dtype(u)
    args = (None if t is None else t.to(dtype) for t in (u, delta, A, B, C, D, z, delta_bias))
    out, last = SelectiveScanFn.apply(*args, delta_softplus)  # (B D L), (B D N)
    out = out.to(dtype_in)
    return (out, last) if return_last_state else out
