"""The Numba causal depthwise conv + SiLU (``causal_conv_silu``) against its torch reference
``causal_conv_silu_ref``: outputs and the gradients of x, w and bias in float64 and float32, on the
layouts the Mamba block passes (a view of the input projection's first or second half, contiguous),
edge lengths around the kernel's step blocks, and bad shapes."""

import pytest
import torch

from ssmdefense.kernels.causal_conv import causal_conv_silu, causal_conv_silu_ref

pytest.importorskip("numba")


def both(x_of, leaf, w, bias, g):
    """Outputs and gradients (leaf, w, bias) of the kernel and of the reference, for x = x_of(leaf)."""
    res = []
    for fn in (causal_conv_silu, causal_conv_silu_ref):
        out = fn(x_of(leaf), w, bias)  # (B L E)
        res.append([out.detach(), *torch.autograd.grad(out, (leaf, w, bias), g)])
    return res


VIEWS = {  # how the block hands x over: from a (B L 2E) projection, or on its own
    "first half": lambda xz, E: xz[..., :E],
    "second half": lambda xz, E: xz[..., E:],
    "contiguous": lambda xz, E: xz[..., :E].contiguous(),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("B, L, E, K", [(2, 7, 5, 4), (1, 1, 3, 4), (3, 300, 20, 3), (1, 513, 17, 4), (2, 9, 4, 1)])
def test_outputs_and_gradients_equal_the_reference_in_float64(view, B, L, E, K):
    g = torch.Generator().manual_seed(L + E)
    xz = torch.randn(B, L, 2 * E, generator=g, dtype=torch.float64).requires_grad_()  # (B L 2E)
    w = torch.randn(E, K, generator=g, dtype=torch.float64).requires_grad_()  # (E K)
    bias = torch.randn(E, generator=g, dtype=torch.float64).requires_grad_()  # (E)
    up = torch.randn(B, L, E, generator=g, dtype=torch.float64)  # (B L E)
    fast, ref = both(lambda t: VIEWS[view](t, E), xz, w, bias, up)
    assert fast[0].shape == (B, L, E) and fast[0].dtype == torch.float64
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_float32_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    xz = torch.randn(4, 784, 256, generator=g).requires_grad_()  # (B L 2E), the default block's size
    w, bias = torch.randn(128, 4, generator=g).requires_grad_(), torch.randn(128, generator=g).requires_grad_()
    up = torch.randn(4, 784, 128, generator=g)  # (B L E)
    fast, ref = both(lambda t: t[..., :128], xz, w, bias, up)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 3, generator=g, dtype=torch.float64).requires_grad_()  # (B L E)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_()  # (E K)
    bias = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()  # (E)
    assert torch.autograd.gradcheck(causal_conv_silu, (x, w, bias), eps=1e-6, atol=1e-7)


def test_half_inputs_compute_in_float32_and_keep_their_dtype():
    x = torch.randn(2, 10, 4).bfloat16()  # (B L E)
    w, bias = torch.randn(4, 4), torch.randn(4)
    out = causal_conv_silu(x, w, bias)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), causal_conv_silu_ref(x.float(), w, bias).bfloat16().float())


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="need x"):
        causal_conv_silu(torch.randn(2, 5, 3), torch.randn(4, 4), torch.randn(4))
