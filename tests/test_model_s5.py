"""S5 (Smith et al. 2023): the parallel associative scan, the layer, and the ``s5`` model plugin."""

import numpy as np
import pytest
import torch

import ssmdefense as sd
from ssmdefense.kernels.assoc_scan import associative_scan, sequential_scan
from ssmdefense.models import AdaptiveScaling
from ssmdefense.models.s5 import S5, hippo_n_eigendecomposition

# dt up to 1 suits the short (L = 8) digit rows, as in conftest.TINY
SMALL = dict(d_model=32, n_layers=1, d_state=16, dt_min=1e-2, dt_max=1.0)


def _crandn(*shape):
    return torch.randn(*shape, dtype=torch.complex128)


@pytest.mark.parametrize("L", [1, 2, 3, 5, 8, 13, 64, 100])
def test_associative_scan_equals_sequential_scan(L):
    torch.manual_seed(L)
    a = 0.9 * _crandn(2, L, 4) / np.sqrt(2)  # (B L P) per-step multipliers
    b = _crandn(2, L, 4)  # (B L P)
    torch.testing.assert_close(associative_scan(a, b, dim=1), sequential_scan(a, b, dim=1), rtol=1e-12, atol=1e-12)
    a_lti = 0.9 * _crandn(4) / np.sqrt(2)  # (P) time-invariant, broadcast over B and L
    torch.testing.assert_close(associative_scan(a_lti, b), sequential_scan(a_lti, b), rtol=1e-12, atol=1e-12)
    bt = b.transpose(1, 2).contiguous()  # (B P L): the time axis last
    torch.testing.assert_close(
        associative_scan(a_lti[:, None], bt, dim=-1), sequential_scan(a_lti, b).transpose(1, 2), rtol=1e-12, atol=1e-12
    )


def test_scans_compute_the_linear_recurrence():
    a = torch.tensor([0.5, 0.5, 2.0, 1.0], dtype=torch.float64)
    b = torch.tensor([1.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.5, 2.0, 5.0], dtype=torch.float64)  # x_k = a_k x_{k-1} + b_k, x_{-1} = 0
    torch.testing.assert_close(sequential_scan(a, b, dim=0), expected)
    torch.testing.assert_close(associative_scan(a, b, dim=0), expected)


def test_associative_scan_gradients():
    torch.manual_seed(0)
    a = (0.5 * _crandn(1, 7, 2)).requires_grad_()
    b = _crandn(1, 7, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: associative_scan(a, b, dim=1), (a, b))


def _manual_recurrence(layer: S5, u: torch.Tensor) -> torch.Tensor:
    """x_k = Λ̄ x_{k-1} + B̄ u_k, y_k = 2 Re(C̃ x_k) + D u_k, written out with complex matmuls."""
    Lambda_bar, B_bar, C_tilde = layer.discretize()
    x = torch.zeros(u.shape[0], Lambda_bar.shape[0], dtype=Lambda_bar.dtype)  # (B P/2)
    ys = []
    for k in range(u.shape[1]):
        x = Lambda_bar * x + u[:, k].to(B_bar.dtype) @ B_bar.T  # (B P/2)
        ys.append(2 * (x @ C_tilde.T).real + layer.D * u[:, k])  # (B H)
    return torch.stack(ys, dim=1)  # (B L H)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_s5_scan_equals_recurrence(discretization):
    """test_cnn_is_rnn for S5: parallel scan == forward_recurrent == a hand-written loop (float64)."""
    torch.manual_seed(0)
    layer = S5(6, 16, discretization, 1e-2, 0.5, blocks=2).double()
    u = torch.randn(3, 37, 6, dtype=torch.float64)  # (B L H), L not a power of two
    y_scan = layer(u)
    assert y_scan.shape == (3, 37, 6) and y_scan.dtype == torch.float64
    torch.testing.assert_close(y_scan, layer.forward_recurrent(u), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y_scan, _manual_recurrence(layer, u), rtol=1e-10, atol=1e-12)


def test_conjugate_symmetric_half_state_equals_the_full_real_system():
    """Keeping one eigenvalue of each conjugate pair and taking 2 Re(C̃ x) reproduces the real
    P-state system x' = S x + B u, y = C x + D u with S = HiPPO-N (ZOH, one common step)."""
    torch.manual_seed(0)
    H, P, dt = 3, 8, 0.3
    n = torch.arange(P, dtype=torch.float64)
    q = torch.sqrt(1 + 2 * n)
    legs = -(torch.tril(q[:, None] * q[None, :]) - torch.diag(n))  # HiPPO-LegS
    S = legs + torch.sqrt(n + 0.5)[:, None] * torch.sqrt(n + 0.5)[None, :]  # HiPPO-N (P P), real
    B = torch.randn(P, H, dtype=torch.float64)
    C = torch.randn(H, P, dtype=torch.float64)
    D = torch.randn(H, dtype=torch.float64)

    layer = S5(H, P, "zoh").double()
    Lambda, V = hippo_n_eigendecomposition(P)
    V_half = V[:, : P // 2]  # (P P/2)
    with torch.no_grad():  # the layer stores float32 parameters: put the exact float64 ones in
        layer.Lambda_re.copy_(Lambda.real[: P // 2])
        layer.Lambda_im.copy_(Lambda.imag[: P // 2])
        layer.B.copy_(torch.view_as_real(V_half.conj().T @ B.to(torch.complex128)))  # B̃ = V⁻¹ B
        layer.C.copy_(torch.view_as_real(C.to(torch.complex128) @ V_half))  # C̃ = C V
        layer.D.copy_(D)
        layer.log_dt.fill_(np.log(dt))
    torch.testing.assert_close(Lambda.real, torch.full((P,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(V @ torch.diag(Lambda) @ V.conj().T, S.to(torch.complex128))

    A_bar = torch.linalg.matrix_exp(dt * S)  # (P P)
    B_bar = torch.linalg.solve(S, (A_bar - torch.eye(P, dtype=torch.float64)) @ B)  # (P H)
    u = torch.randn(2, 20, H, dtype=torch.float64)
    x = torch.zeros(2, P, dtype=torch.float64)
    ys = []
    for k in range(20):
        x = x @ A_bar.T + u[:, k] @ B_bar.T
        ys.append(x @ C.T + D * u[:, k])
    torch.testing.assert_close(layer(u), torch.stack(ys, dim=1), rtol=1e-9, atol=1e-10)


def test_s5_initial_eigenvalues_are_hippo_n():
    Lambda8, _ = hippo_n_eigendecomposition(8)
    Lambda16, _ = hippo_n_eigendecomposition(16)
    assert torch.all(Lambda16.imag[:8] < 0)  # the kept half: one of each conjugate pair
    torch.testing.assert_close(Lambda16[:8], Lambda16[8:].flip(0).conj())
    one = S5(4, 16).double()
    torch.testing.assert_close(one.continuous()[0], Lambda16[:8], rtol=1e-6, atol=1e-6)
    two = S5(4, 16, blocks=2).double()  # J = 2 copies of the size-8 HiPPO-N spectrum
    torch.testing.assert_close(two.continuous()[0], Lambda8[:4].repeat(2), rtol=1e-6, atol=1e-6)


def test_s5_layer_and_body_are_causal():
    torch.manual_seed(0)
    layer = S5(4, 8).double()
    u = torch.randn(1, 30, 4, dtype=torch.float64)
    u2 = u.clone()
    u2[:, 20:] += torch.randn(1, 10, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(u)[:, :20], layer(u2)[:, :20])
    assert not torch.allclose(layer(u)[:, 20:], layer(u2)[:, 20:])

    model = sd.build_model("s5", d_input=3, n_classes=5, d_model=8, n_layers=2, d_state=8, ads="tanh").double()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 10:] = 0.0
    torch.testing.assert_close(model.features(x)[:, :10], model.features(x2)[:, :10])
    assert not torch.allclose(model.features(x)[:, 10:], model.features(x2)[:, 10:])


def test_s5_with_ads_in_every_block_gives_logits():
    model = sd.build_model("s5", d_input=8, n_classes=10, d_model=16, n_layers=3, d_state=8, ads="relu")
    assert [type(b.ads_module).__name__ for b in model.blocks] == ["AdaptiveScaling"] * 3
    assert all(isinstance(b.ads_module, AdaptiveScaling) and b.ads_module.act_name == "relu" for b in model.blocks)
    assert model.ads == "relu"
    logits = model(torch.randn(4, 8, 8))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(d_state=7), "d_state must be an even"),
        (dict(d_state=0), "d_state must be an even"),
        (dict(discretization="euler"), "discretization must be one of"),
        (dict(dt_min=0.0), "dt_min"),
        (dict(dt_min=0.5, dt_max=0.1), "dt_min"),
        (dict(ads="softmax"), "ads must be one of"),
    ],
)
def test_bad_s5_parameters_raise_clear_errors(params, message):
    with pytest.raises(sd.SSMDefenseError, match=message):
        sd.build_model("s5", d_input=4, n_classes=3, **params)


def test_s5_trains_under_a_bf16_autocast():
    """`-p precision=bf16`: the complex scan runs in float32 inside the autocast region (there is no
    bfloat16 complex type), the rest in bfloat16, and gradients reach every parameter."""
    body = sd.build_model("s5", 8, 10, d_model=16, n_layers=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = body(torch.randn(4, 8, 8))  # (B C)
    torch.nn.functional.cross_entropy(logits.float(), torch.arange(4)).backward()
    assert torch.isfinite(logits.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in body.parameters() if p.requires_grad)
