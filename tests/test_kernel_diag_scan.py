"""The Numba diagonal scans against their plain references: ``diag_ssm_scan`` (S4D/DSS recurrent
form) against ``diag_ssm_recurrence``, and ``diagonal_scan`` (S5) against ``sequential_scan`` /
``associative_scan``; outputs and the gradients of every input, in float64 unless a test says
otherwise. The CUDA kernels run here only on a real GPU (``gpu`` mark); the CUDA simulator checks
are ``tests/cuda_checks_diag_scan.py``."""

import math
import subprocess
import sys

import pytest
import torch

from ssmdefense.kernels import backend
from ssmdefense.kernels.assoc_scan import associative_scan, diagonal_scan, sequential_scan
from ssmdefense.kernels.diag_ssm import diag_ssm_recurrence, diag_ssm_scan
from ssmdefense.kernels.long_conv import fft_conv

pytestmark = pytest.mark.skipif(
    backend.numba_cpu_problem() is not None, reason=f"Numba unavailable: {backend.numba_cpu_problem()}"
)

F64, C128 = torch.float64, torch.complex128


def stable(*shape, radius=(0.5, 0.95), dtype=C128, generator=None):
    """Complex multipliers with modulus in ``radius`` (|a| < 1: a stable recurrence) and any phase."""
    r = radius[0] + (radius[1] - radius[0]) * torch.rand(*shape, dtype=F64, generator=generator)
    phase = 2 * math.pi * torch.rand(*shape, dtype=F64, generator=generator)
    return torch.polar(r, phase).to(dtype)


def ssm_inputs(B, H, L, N, seed=0, radius=(0.5, 0.95), real=F64, cplx=C128):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, H, L, dtype=F64, generator=g).to(real)  # (B H L)
    dA = stable(H, N, radius=radius, dtype=cplx, generator=g)  # (H N)
    dB = torch.randn(H, N, dtype=C128, generator=g).to(cplx)  # (H N)
    C = torch.randn(H, N, dtype=C128, generator=g).to(cplx)  # (H N)
    return [t.requires_grad_() for t in (u, dA, dB, C)]


def scan_inputs(B, L, P, seed=0, radius=(0.5, 0.95), cplx=C128):
    g = torch.Generator().manual_seed(seed)
    a = stable(P, radius=radius, dtype=cplx, generator=g)  # (P)
    b = torch.randn(B, L, P, dtype=C128, generator=g).to(cplx)  # (B L P)
    return [t.requires_grad_() for t in (a, b)]


def assert_outputs_and_grads_close(f, f_ref, inputs, rtol, atol, seed=1):
    """f(*inputs) ~ f_ref(*inputs), and so are the gradients of every input for a random output gradient."""
    out, ref = f(*inputs), f_ref(*inputs)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    grads = torch.autograd.grad(out, inputs, g)
    grads_ref = torch.autograd.grad(ref, inputs, g)
    for x, a, b in zip(inputs, grads, grads_ref):
        assert a.dtype == x.dtype and a.shape == x.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# --- diagonal SSM scan (S4D / DSS) ---------------------------------------------------------------


@pytest.mark.parametrize("B,H,L,N", [(2, 3, 7, 5), (1, 2, 1, 4), (3, 1, 13, 33), (2, 2, 64, 8), (1, 1, 2, 1)])
def test_diag_ssm_scan_matches_the_recurrence(B, H, L, N):
    inputs = ssm_inputs(B, H, L, N, seed=L * N)
    assert_outputs_and_grads_close(diag_ssm_scan, diag_ssm_recurrence, inputs, rtol=1e-10, atol=1e-10)


def test_diag_ssm_scan_gradcheck():
    inputs = ssm_inputs(2, 2, 5, 3, seed=3)
    assert torch.autograd.gradcheck(diag_ssm_scan, inputs)


def test_diag_ssm_scan_float32_within_float32_tolerance():
    u, dA, dB, C = ssm_inputs(2, 4, 100, 16, seed=5, radius=(0.9, 0.999))
    f32 = [u.detach().float().requires_grad_(), *(M.detach().to(torch.complex64).requires_grad_() for M in (dA, dB, C))]
    y = diag_ssm_scan(*f32)
    assert y.dtype == torch.float32
    y_ref = diag_ssm_recurrence(u, dA, dB, C)
    scale = y_ref.abs().max()
    torch.testing.assert_close(y.double() / scale, y_ref / scale, rtol=0, atol=2e-5)
    g = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, f32, g.float())
    grads_ref = torch.autograd.grad(y_ref, (u, dA, dB, C), g)
    for a, b, x in zip(grads, grads_ref, f32):
        assert a.dtype == x.dtype
        s = b.abs().max()
        torch.testing.assert_close(a.to(b.dtype) / s, b / s, rtol=0, atol=5e-5)


def test_diag_ssm_scan_casts_and_returns_gradients_only_where_asked():
    u, dA, dB, C = ssm_inputs(2, 3, 9, 4, seed=7)
    mixed = (u.detach().float().requires_grad_(), dA.detach(), dB.detach(), C.detach())  # float32 u, complex128 rest
    y = diag_ssm_scan(*mixed)
    assert y.dtype == torch.float64  # as torch promotes float32 with complex128
    (g_u,) = torch.autograd.grad(y.sum(), mixed[0])
    (g_u_ref,) = torch.autograd.grad(diag_ssm_recurrence(*mixed).sum(), mixed[0])
    assert g_u.dtype == torch.float32
    torch.testing.assert_close(g_u, g_u_ref)


def test_diag_ssm_scan_takes_non_contiguous_inputs():
    u, dA, dB, C = ssm_inputs(2, 3, 9, 4, seed=8)
    u_t = u.detach().transpose(1, 2).contiguous().requires_grad_()  # (B L H), as a model holds it
    C_t = C.detach().t().contiguous().requires_grad_()  # (N H)
    inputs = (u_t, dA, dB, C_t)

    def f(scan):
        return lambda u_t, dA, dB, C_t: scan(u_t.transpose(1, 2), dA, dB, C_t.t())  # strided views

    assert_outputs_and_grads_close(f(diag_ssm_scan), f(diag_ssm_recurrence), inputs, rtol=1e-10, atol=1e-10)


def test_diag_ssm_scan_two_workers_sum_their_partial_gradients():
    torch.set_num_threads(2)  # the conftest fixture puts back one thread
    inputs = ssm_inputs(3, 5, 11, 6, seed=11)  # 15 rows split between the workers
    assert_outputs_and_grads_close(diag_ssm_scan, diag_ssm_recurrence, inputs, rtol=1e-10, atol=1e-10)
    inputs = ssm_inputs(1, 1, 11, 6, seed=12)  # one row: fewer rows than threads
    assert_outputs_and_grads_close(diag_ssm_scan, diag_ssm_recurrence, inputs, rtol=1e-10, atol=1e-10)


def _conv_view(u, dA, dB, C):
    """The same SSM as a causal convolution with K_l = 2 Re(sum_n C_n dB_n dA_n^l) (float64, autograd)."""
    L = u.shape[-1]
    pos = torch.arange(L, dtype=F64)  # (L)
    K = 2 * torch.einsum("hn,hnl->hl", C * dB, torch.exp(torch.log(dA)[..., None] * pos)).real  # (H L)
    return fft_conv(u, K)  # (B H L)


def test_diag_ssm_scan_long_sequence_stays_finite_and_matches():
    """L = 16,000 with slowly decaying modes (|dA| up to 0.9995): the step-by-step reference takes
    seconds here, so the forward is checked against it and the gradients against the convolutional
    view (which the recurrence equals; its float64 FFT error is ~1e-12)."""
    inputs = ssm_inputs(1, 2, 16_000, 4, seed=13, radius=(0.99, 0.9995))
    y = diag_ssm_scan(*inputs)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, diag_ssm_recurrence(*inputs), rtol=1e-9, atol=1e-9)
    assert_outputs_and_grads_close(diag_ssm_scan, _conv_view, inputs, rtol=1e-7, atol=1e-7)
    f32 = [inputs[0].detach().float(), *(M.detach().to(torch.complex64) for M in inputs[1:])]
    y32 = diag_ssm_scan(*f32)
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double() / y.abs().max(), y.detach() / y.abs().max(), rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((2, 3), (3, 4), (3, 4), (3, 4)), "u must be"),
        (((2, 3, 5), (2, 4), (2, 4), (2, 4)), "dA must be"),
        (((2, 3, 5), (3,), (3,), (3,)), "dA must be"),
        (((2, 3, 5), (3, 4), (3, 5), (3, 4)), "dB must have"),
        (((2, 3, 5), (3, 4), (3, 4), (4, 3)), "C must have"),
    ],
)
def test_diag_ssm_scan_rejects_bad_shapes(shapes, match):
    u = torch.zeros(shapes[0])
    dA, dB, C = (torch.zeros(s, dtype=torch.complex64) for s in shapes[1:])
    with pytest.raises(ValueError, match=match):
        diag_ssm_scan(u, dA, dB, C)


def test_diag_ssm_scan_rejects_bad_dtypes():
    M = torch.zeros(3, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="u must be real"):
        diag_ssm_scan(torch.zeros(2, 3, 5, dtype=torch.complex64), M, M, M)
    with pytest.raises(ValueError, match="dB must be complex"):
        diag_ssm_scan(torch.zeros(2, 3, 5), M, M.real, M)


# --- complex diagonal scan (S5) ------------------------------------------------------------------


@pytest.mark.parametrize("B,L,P", [(2, 7, 5), (1, 1, 3), (3, 13, 70), (2, 64, 16), (1, 2, 1)])
def test_diagonal_scan_matches_the_sequential_scan(B, L, P):
    inputs = scan_inputs(B, L, P, seed=L * P)
    assert_outputs_and_grads_close(diagonal_scan, sequential_scan, inputs, rtol=1e-10, atol=1e-10)


def test_diagonal_scan_gradcheck():
    inputs = scan_inputs(2, 6, 3, seed=3)
    assert torch.autograd.gradcheck(diagonal_scan, inputs)


def test_diagonal_scan_float32_within_float32_tolerance():
    a, b = scan_inputs(3, 200, 20, seed=5, radius=(0.9, 0.999))
    a32, b32 = (t.detach().to(torch.complex64).requires_grad_() for t in (a, b))
    x = diagonal_scan(a32, b32)
    assert x.dtype == torch.complex64
    x_ref = sequential_scan(a, b)
    s = x_ref.abs().max()
    torch.testing.assert_close(x.to(C128) / s, x_ref / s, rtol=0, atol=2e-5)
    g = torch.randn_like(x_ref)
    grads = torch.autograd.grad(x, (a32, b32), g.to(torch.complex64))
    grads_ref = torch.autograd.grad(x_ref, (a, b), g)
    for got, want in zip(grads, grads_ref):
        assert got.dtype == torch.complex64
        s = want.abs().max()
        torch.testing.assert_close(got.to(C128) / s, want / s, rtol=0, atol=5e-5)


def test_diagonal_scan_two_workers_and_gradients_only_where_asked():
    torch.set_num_threads(2)
    inputs = scan_inputs(3, 9, 130, seed=9)  # 3 batch elements x 3 state blocks of the CPU kernel
    assert_outputs_and_grads_close(diagonal_scan, associative_scan, inputs, rtol=1e-10, atol=1e-10)
    a, b = inputs
    (g_b,) = torch.autograd.grad(diagonal_scan(a.detach(), b).abs().sum(), b)
    (g_b_ref,) = torch.autograd.grad(sequential_scan(a.detach(), b).abs().sum(), b)
    torch.testing.assert_close(g_b, g_b_ref)


def test_diagonal_scan_takes_non_contiguous_inputs():
    a, b = scan_inputs(2, 9, 6, seed=4)
    b_t = b.detach().transpose(0, 1).contiguous().requires_grad_()  # (L B P)
    a2 = torch.stack([a.detach(), a.detach()], dim=1).requires_grad_()  # (P 2)

    def f(scan):
        return lambda a2, b_t: scan(a2[:, 1], b_t.transpose(0, 1))  # strided views

    assert_outputs_and_grads_close(f(diagonal_scan), f(sequential_scan), (a2, b_t), rtol=1e-10, atol=1e-10)


def test_diagonal_scan_long_sequence_stays_finite_and_matches():
    inputs = scan_inputs(1, 16_000, 8, seed=13, radius=(0.99, 0.9995))
    assert_outputs_and_grads_close(diagonal_scan, associative_scan, inputs, rtol=1e-9, atol=1e-9)
    x32 = diagonal_scan(*(t.detach().to(torch.complex64) for t in inputs))
    assert torch.isfinite(torch.view_as_real(x32)).all()


@pytest.mark.parametrize(
    "a_shape,b_shape,match",
    [
        ((5,), (2, 7), "b must be"),
        ((5,), (2, 7, 5, 1), "b must be"),
        ((4,), (2, 7, 5), "a must be"),
        ((2, 5), (2, 7, 5), "a must be"),
    ],
)
def test_diagonal_scan_rejects_bad_shapes(a_shape, b_shape, match):
    with pytest.raises(ValueError, match=match):
        diagonal_scan(torch.zeros(a_shape, dtype=torch.complex64), torch.zeros(b_shape, dtype=torch.complex64))


def test_diagonal_scan_rejects_real_inputs():
    with pytest.raises(ValueError, match="b must be complex"):
        diagonal_scan(torch.zeros(5, dtype=torch.complex64), torch.zeros(2, 7, 5))
    with pytest.raises(ValueError, match="a must be complex"):
        diagonal_scan(torch.zeros(5), torch.zeros(2, 7, 5, dtype=torch.complex64))


# --- availability --------------------------------------------------------------------------------


def test_kernel_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "device_problem", lambda device_type: "numba cannot be imported (test)")
    u, dA, dB, C = ssm_inputs(1, 2, 3, 2)
    with pytest.raises(backend.KernelUnavailableError, match="diag_ssm_scan.*numba cannot be imported"):
        diag_ssm_scan(u, dA, dB, C)
    with pytest.raises(backend.KernelUnavailableError, match="diagonal_scan.*numba cannot be imported"):
        diagonal_scan(*scan_inputs(1, 3, 2))


def test_importing_the_wrappers_does_not_import_numba():
    code = (
        "import sys, ssmdefense, ssmdefense.kernels.diag_ssm, ssmdefense.kernels.assoc_scan; "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- real GPU ------------------------------------------------------------------------------------

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _to_cuda(inputs):
    return [t.detach().cuda().requires_grad_() for t in inputs]


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("B,H,L,N", [(2, 3, 7, 5), (1, 2, 1, 4), (3, 2, 70, 40), (2, 4, 1000, 32)])
def test_diag_ssm_scan_on_cuda_matches_the_recurrence(B, H, L, N):
    inputs = ssm_inputs(B, H, L, N, seed=L + N)
    assert_outputs_and_grads_close(diag_ssm_scan, diag_ssm_recurrence, _to_cuda(inputs), rtol=1e-9, atol=1e-9)


@pytest.mark.gpu
@cuda_only
def test_diag_ssm_scan_on_cuda_float32():
    u, dA, dB, C = ssm_inputs(4, 8, 300, 32, seed=2, radius=(0.9, 0.999))
    y = diag_ssm_scan(u.detach().float().cuda(), *(M.detach().to(torch.complex64).cuda() for M in (dA, dB, C)))
    y_ref = diag_ssm_recurrence(u, dA, dB, C).detach()
    s = y_ref.abs().max()
    torch.testing.assert_close(y.cpu().double() / s, y_ref / s, rtol=0, atol=2e-5)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("B,L,P", [(2, 7, 5), (1, 1, 3), (3, 300, 70)])
def test_diagonal_scan_on_cuda_matches_the_sequential_scan(B, L, P):
    inputs = scan_inputs(B, L, P, seed=L + P)
    assert_outputs_and_grads_close(diagonal_scan, sequential_scan, _to_cuda(inputs), rtol=1e-9, atol=1e-9)
