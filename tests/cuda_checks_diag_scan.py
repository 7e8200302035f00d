"""The diagonal scans' CUDA kernels under Numba's CUDA simulator, on numpy float64 / complex128 arrays.

Run as ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_checks_diag_scan.py`` (what
``tests/test_kernels_cudasim.py`` does, in a subprocess: the simulator must be on before Numba is
imported). Forward and backward of ``diag_ssm_forward_cuda``/``diag_ssm_backward_cuda`` and
``diagonal_scan_forward_cuda``/``diagonal_scan_backward_cuda`` are compared with the CPU kernels and,
through torch, with ``diag_ssm_recurrence`` / ``sequential_scan``. The simulator runs every thread in
Python, so sizes are tiny: batch 2, L 1 and 7 (and 40: more than one reduction tile), N 5 (one
warp per row) and 37 (two warps adding into each output).
"""

import numpy as np
import pytest
import torch

from ssmdefense.kernels import diag_scan_numba as K
from ssmdefense.kernels.assoc_scan import sequential_scan
from ssmdefense.kernels.backend import numba_cuda_problem
from ssmdefense.kernels.diag_ssm import diag_ssm_recurrence

if numba_cuda_problem():  # pragma: no cover - the driver runs this file with the simulator on
    pytest.skip(f"no Numba CUDA target: {numba_cuda_problem()}", allow_module_level=True)

BATCH = 2


def stable(rng, *shape):
    """Complex multipliers with modulus in [0.5, 0.95] (a stable recurrence)."""
    return rng.uniform(0.5, 0.95, shape) * np.exp(2j * np.pi * rng.random(shape))


def crandn(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def ssm_inputs(H, L, N, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((BATCH, H, L))  # (B H L)
    g_y = rng.standard_normal((BATCH, H, L))  # (B H L)
    return u, stable(rng, H, N), crandn(rng, H, N), crandn(rng, H, N), g_y


def ssm_reference(u, dA, dB, C, g_y):
    """y and the gradients of (u, dA, dB, C) by autograd through diag_ssm_recurrence."""
    leaves = [torch.from_numpy(t).requires_grad_() for t in (u, dA, dB, C)]
    y = diag_ssm_recurrence(*leaves)
    grads = torch.autograd.grad(y, leaves, torch.from_numpy(g_y))
    return y.detach().numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("H,L,N", [(2, 1, 5), (2, 7, 5), (1, 7, 37), (1, 40, 5)])
def test_diag_ssm_cuda_forward_and_backward(H, L, N):
    u, dA, dB, C, g_y = ssm_inputs(H, L, N, seed=L * N)
    y = np.zeros((BATCH, H, L))  # zeroed: with N > 32 the warps add into it
    K.diag_ssm_forward_cuda(u, dA, dB, C, y)
    y_cpu = np.empty_like(y)
    K.diag_ssm_forward_cpu(u, dA, dB, C, y_cpu)
    y_ref, grads_ref = ssm_reference(u, dA, dB, C, g_y)
    np.testing.assert_allclose(y, y_cpu, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)

    g_u = np.zeros_like(u)
    parts = np.zeros((3, BATCH, H, N), complex)  # per-batch partials of grad dA, dB, C
    K.diag_ssm_backward_cuda(u, dA, dB, C, g_y, g_u, parts[0], parts[1], parts[2])
    g_u_cpu = np.empty_like(u)
    parts_cpu = np.zeros((3, 1, H, N), complex)
    K.diag_ssm_backward_cpu(u, dA, dB, C, g_y, g_u_cpu, parts_cpu[0], parts_cpu[1], parts_cpu[2])
    for got, cpu, ref in zip([g_u, *parts.sum(axis=1)], [g_u_cpu, *parts_cpu.sum(axis=1)], grads_ref):
        np.testing.assert_allclose(got, cpu, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("L,P", [(1, 3), (7, 5), (7, 33)])
def test_diagonal_scan_cuda_forward_and_backward(L, P):
    rng = np.random.default_rng(L * P)
    a, b, g_x = stable(rng, P), crandn(rng, BATCH, L, P), crandn(rng, BATCH, L, P)
    x = np.empty_like(b)
    K.diagonal_scan_forward_cuda(a, b, x)
    x_cpu = np.empty_like(b)
    K.diagonal_scan_forward_cpu(a, b, x_cpu)
    leaves = [torch.from_numpy(t).requires_grad_() for t in (a, b)]
    x_ref = sequential_scan(*leaves)
    g_a_ref, g_b_ref = torch.autograd.grad(x_ref, leaves, torch.from_numpy(g_x))
    np.testing.assert_allclose(x, x_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x, x_ref.detach().numpy(), rtol=1e-12, atol=1e-12)

    g_b, g_a = np.empty_like(b), np.empty((BATCH, P), complex)
    K.diagonal_scan_backward_cuda(a, x, g_x, g_b, g_a)
    g_b_cpu, g_a_cpu = np.empty_like(b), np.empty((BATCH, P), complex)
    K.diagonal_scan_backward_cpu(a, x, g_x, g_b_cpu, g_a_cpu)
    np.testing.assert_allclose(g_b, g_b_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_a, g_a_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_b, g_b_ref.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g_a.sum(axis=0), g_a_ref.numpy(), rtol=1e-10, atol=1e-10)
