"""The selective scan's CUDA kernels under Numba's CUDA simulator, on numpy float64 arrays.

Run as ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_checks_selective_scan.py`` (what
``tests/test_kernels_cudasim.py`` does, in a subprocess: the simulator must be on before Numba is
imported). Forward and backward of ``forward_cuda``/``backward_cuda`` are compared with the CPU
kernels and, through torch autograd, with ``selective_scan_ref``. The simulator runs every thread in
Python, so sizes are tiny: batch 2, D 3, N 4, L 1 and 7 (and 7 with 3-step checkpoint blocks).
"""

import numpy as np
import pytest
import torch

from ssmdefense.kernels import selective_scan_cpu as KC
from ssmdefense.kernels import selective_scan_cuda as K
from ssmdefense.kernels import selective_scan_math
from ssmdefense.kernels.backend import numba_cuda_problem
from ssmdefense.kernels.selective_scan import selective_scan_ref

if numba_cuda_problem():  # pragma: no cover - the driver runs this file with the simulator on
    pytest.skip(f"no Numba CUDA target: {numba_cuda_problem()}", allow_module_level=True)

BATCH, DIM, N = 2, 3, 4
GRADS = ["du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"]


def inputs(L, seed=0):
    """float64 arrays: u, delta (any sign), A (negative), B, C, D, z, delta_bias."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((BATCH, DIM, L))  # (B D L)
    delta = 0.5 * rng.standard_normal((BATCH, DIM, L))  # (B D L)
    A = -np.exp(rng.standard_normal((DIM, N)))  # (D N)
    B = rng.standard_normal((BATCH, N, L))  # (B N L)
    C = rng.standard_normal((BATCH, N, L))  # (B N L)
    D = rng.standard_normal(DIM)  # (D)
    z = rng.standard_normal((BATCH, DIM, L))  # (B D L)
    bias = 0.3 * rng.standard_normal(DIM)  # (D)
    return u, delta, A, B, C, D, z, bias


def cuda_forward(u, delta, A, B, C, D, z, bias, softplus, save=True):
    batch, dim, L = u.shape
    n = A.shape[1]
    out, last = np.empty_like(u), np.empty((batch, dim, n))
    ckpt = np.empty(K.checkpoint_shape(batch, dim, L, n)) if save else None
    state = np.empty(K.cuda_scratch_shapes(batch, dim, L, n)["state"])
    K.forward_cuda(u, delta, A, B, C, D, z, bias, softplus, out, last, state, ckpt)
    return out, last, ckpt


def cuda_backward(u, delta, A, B, C, D, z, bias, softplus, ckpt, dout, dlast):
    batch, dim, L = u.shape
    n = A.shape[1]
    scratch = {k: np.empty(shape) for k, shape in K.cuda_scratch_shapes(batch, dim, L, n).items()}
    du, ddelta = np.empty_like(u), np.empty_like(u)
    dz = None if z is None else np.empty_like(u)
    dA, dB, dC = np.empty((batch, dim, n)), np.zeros((batch, n, L)), np.zeros((batch, n, L))
    dD = None if D is None else np.empty((batch, dim))
    dbias = None if bias is None else np.empty((batch, dim))
    K.backward_cuda(
        u, delta, A, B, C, D, z, bias, softplus, ckpt, dout, dlast, scratch, du, ddelta, dz, dA, dB, dC, dD, dbias
    )
    return (du, ddelta, dA.sum(0), dB, dC, None if D is None else dD.sum(0), dz, None if bias is None else dbias.sum(0))


CASES = [  # use_D, use_z, use_bias, softplus
    (True, True, True, True),
    (False, False, False, False),
    (True, False, False, True),
    (False, True, True, False),
]


@pytest.mark.parametrize("L", [1, 7])
@pytest.mark.parametrize("use_D, use_z, use_bias, softplus", CASES)
def test_cuda_kernels_match_the_cpu_kernels(L, use_D, use_z, use_bias, softplus):
    u, delta, A, B, C, D, z, bias = inputs(L, seed=L)
    D, z, bias = (D if use_D else None), (z if use_z else None), (bias if use_bias else None)
    out, last, ckpt = cuda_forward(u, delta, A, B, C, D, z, bias, softplus)
    out_cpu, last_cpu, ckpt_cpu = KC.forward_cpu(u, delta, A, B, C, D, z, bias, softplus, save_states=True)
    np.testing.assert_allclose(out, out_cpu, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(last, last_cpu, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ckpt, ckpt_cpu, rtol=1e-12, atol=1e-13)

    rng = np.random.default_rng(1)
    dout, dlast = rng.standard_normal(u.shape), rng.standard_normal(last.shape)
    for dl in (dlast, None):
        got = cuda_backward(u, delta, A, B, C, D, z, bias, softplus, ckpt, dout, dl)
        want = KC.backward_cpu(u, delta, A, B, C, D, z, bias, softplus, ckpt_cpu, dout, dl)
        for name, g, w in zip(GRADS, got, want):
            if w is None:
                assert g is None, name
            else:
                np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12, err_msg=name)


def test_cuda_kernels_match_the_reference_across_checkpoint_blocks(monkeypatch):
    """3-step blocks, L = 7: three blocks, the last one short; outputs and every gradient against
    autograd through ``selective_scan_ref``."""
    monkeypatch.setattr(selective_scan_math, "BLOCK_T", 3)  # the one block length of both targets
    u, delta, A, B, C, D, z, bias = inputs(7, seed=3)
    out, last, ckpt = cuda_forward(u, delta, A, B, C, D, z, bias, True)
    assert ckpt.shape == (BATCH, 3, N, DIM)

    t = [torch.tensor(a, requires_grad=True) for a in (u, delta, A, B, C, D, z, bias)]
    out_ref, last_ref = selective_scan_ref(
        *t[:5], D=t[5], z=t[6], delta_bias=t[7], delta_softplus=True, return_last_state=True
    )
    np.testing.assert_allclose(out, out_ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(last, last_ref.detach().numpy(), rtol=1e-10, atol=1e-12)

    rng = np.random.default_rng(2)
    dout, dlast = rng.standard_normal(u.shape), rng.standard_normal(last.shape)
    ((out_ref * torch.tensor(dout)).sum() + (last_ref * torch.tensor(dlast)).sum()).backward()
    got = cuda_backward(u, delta, A, B, C, D, z, bias, True, ckpt, dout, dlast)
    for name, g, x in zip(GRADS, got, t):
        np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_cuda_forward_without_checkpoints_gives_the_same_output():
    u, delta, A, B, C, D, z, bias = inputs(7, seed=5)
    out, last, _ = cuda_forward(u, delta, A, B, C, D, z, bias, True)
    out2, last2, ckpt2 = cuda_forward(u, delta, A, B, C, D, z, bias, True, save=False)
    assert ckpt2 is None
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(last, last2)
