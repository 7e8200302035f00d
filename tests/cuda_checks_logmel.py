"""The log-mel CUDA kernels under Numba's CUDA simulator, on numpy float64 / complex128 arrays.

Run as ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_checks_logmel.py`` (what
``tests/test_kernels_cudasim.py`` does, in a subprocess: the simulator must be on before Numba is
imported). The launchers are driven the way ``LogMel`` drives them on a GPU (forward kernel; the
per-example maximum and floor; the top_db reduction kernel; the backward kernel) and compared with
``log_mel_ref`` through torch, values and gradient w.r.t. the STFT, and with the CPU kernels. The
simulator runs every thread in Python, so sizes are tiny: N 2, C 1, F 9, M 3, T 5.
"""

import numpy as np
import pytest
import torch

from ssmdefense.kernels import logmel_numba as K
from ssmdefense.kernels.backend import numba_cuda_problem
from ssmdefense.kernels.logmel import log_mel_ref, mel_bands

if numba_cuda_problem():  # pragma: no cover - the driver runs this file with the simulator on
    pytest.skip(f"no Numba CUDA target: {numba_cuda_problem()}", allow_module_level=True)

N, C, F, M, T = 2, 1, 9, 3, 5
AMIN = 1e-10


def inputs(seed=0):
    """spec (N C F T) complex128 with magnitudes over three decades, a few exact zeros (mel below
    amin); a triangular (F M) filterbank; an upstream gradient (N C M T)."""
    rng = np.random.default_rng(seed)
    spec = 10.0 ** rng.uniform(-2, 1, (N, C, F, T)) * np.exp(2j * np.pi * rng.random((N, C, F, T)))
    spec[1, 0, :, 2] = 0  # a silent frame in example 1: every band at the amin floor
    fb = np.zeros((F, M))
    for m in range(M):
        fb[1 + 2 * m : 4 + 2 * m, m] = np.array([0.5, 1.0, 0.5]) * (1.0 + m)
    g = rng.standard_normal((N, C, M, T))
    return spec, fb, g


def layout(spec):
    """(N C F T) complex -> (R F 2) real pairs, frames-major (what LogMel hands the kernels)."""
    return np.ascontiguousarray(np.stack([spec.real, spec.imag], -1).transpose(0, 1, 3, 2, 4)).reshape(N * C * T, F, 2)


def run_kernels(spec, fb, g, top_db, launch):
    """db (N C M T) and d loss / d spec (N C F T) with the ``*_cuda`` (or ``*_cpu``) launchers."""
    cuda = launch == "cuda"
    forward, top_db_grad, backward = (getattr(K, f"{name}_{launch}") for name in ("forward", "top_db_grad", "backward"))
    ri = layout(spec)  # (R F 2)
    band_lo, band_hi, bin_lo, bin_hi = (t.numpy() for t in mel_bands(torch.from_numpy(fb)))
    fbT = np.ascontiguousarray(fb.T)  # (M F)
    db, dfac = np.empty((N * C * T, M)), np.empty((N * C * T, M))  # (R M)
    forward(ri, fbT, band_lo, band_hi, np.float64(AMIN), db, dfac)
    per_example = db.reshape(N, -1)  # (N C*T*M)
    if top_db is None:
        amax, floor, out = np.full(N, np.inf), np.full(N, -np.inf), per_example
    else:
        amax = per_example.max(1)
        floor = amax - top_db
        out = np.maximum(per_example, floor[:, None])
    g_rows = np.ascontiguousarray(g.transpose(0, 1, 3, 2)).reshape(N * C * T, M)  # (R M)
    g_max = np.zeros(N)
    if top_db is not None:
        below, count = np.zeros(N), np.zeros(N, np.int32)
        top_db_grad(per_example, g_rows.reshape(N, -1), floor, amax, below, count)
        g_max = below / count
    g_ri = np.full_like(ri, np.nan)
    if cuda:
        backward(ri, fb, bin_lo, bin_hi, db, dfac, g_rows, floor, amax, g_max, C * T, g_ri)
    else:
        backward(ri, fbT, band_lo, band_hi, db, dfac, g_rows, floor, amax, g_max, C * T, g_ri)
    db_out = out.reshape(N, C, T, M).transpose(0, 1, 3, 2)  # (N C M T)
    g_spec = (g_ri[..., 0] + 1j * g_ri[..., 1]).reshape(N, C, T, F).transpose(0, 1, 3, 2)  # (N C F T)
    return db_out, g_spec


def reference(spec, fb, g, top_db):
    s = torch.from_numpy(spec).requires_grad_()
    y = log_mel_ref(s, torch.from_numpy(fb), AMIN, top_db)  # (N C M T)
    (grad,) = torch.autograd.grad(y, s, torch.from_numpy(g))
    return y.detach().numpy(), grad.numpy()


@pytest.mark.parametrize("top_db", [20.0, None])
def test_cuda_kernels_match_the_reference(top_db):
    spec, fb, g = inputs()
    db_ref, g_ref = reference(spec, fb, g, top_db)
    if top_db is not None:
        assert (db_ref == db_ref.max(axis=(1, 2, 3), keepdims=True) - top_db).any()  # the clamp bites
    db, g_spec = run_kernels(spec, fb, g, top_db, "cuda")
    np.testing.assert_allclose(db, db_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g_spec, g_ref, rtol=1e-12, atol=1e-12 * np.abs(g_ref).max())


def test_cuda_and_cpu_kernels_agree_with_tied_maxima():
    spec, fb, g = inputs(seed=1)
    spec[0, 0, :, 3] = spec[0, 0, :, 1] = 20.0  # two identical loud frames: the maximum is tied
    db_ref, g_ref = reference(spec, fb, g, 30.0)
    assert (db_ref[0] == db_ref[0].max()).sum() == 2
    db_gpu, g_gpu = run_kernels(spec, fb, g, 30.0, "cuda")
    db_cpu, g_cpu = run_kernels(spec, fb, g, 30.0, "cpu")
    np.testing.assert_allclose(db_gpu, db_cpu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_gpu, g_ref, rtol=1e-12, atol=1e-12 * np.abs(g_ref).max())
