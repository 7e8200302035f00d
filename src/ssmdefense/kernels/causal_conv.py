"""Causal depthwise convolution followed by SiLU, the first step of a Mamba block (Gu & Dao, 2023;
``causal_conv1d`` in state-spaces/mamba), on channels-last activations:

    out[b, t, e] = SiLU(bias[e] + sum_k w[e, k] x[b, t - K + 1 + k, e])      (x = 0 before t = 0)

with x (B, L, E), w (E, K) (``nn.Conv1d(E, E, K, groups=E)``'s weight without its middle axis),
bias (E,).

``causal_conv_silu_ref`` is the plain torch reference (``F.conv1d`` with ``groups=E`` and K - 1
steps of left padding, then SiLU), as the block computed it before. ``causal_conv_silu`` is the
Numba CPU kernel (``causal_conv_cpu.py``) with a hand-written backward. Why by hand: torch's CPU
depthwise ``conv1d`` wants (B, E, L), so the block transposed in and out of it (two copies each
way), and its backward measured 10x its forward at L 784 (``benchmarks/profile_mamba.py``); the
kernel reads the block's layout as it is and fuses SiLU, in one pass forward and one backward
(which recomputes the pre-activation rather than storing it). CPU tensors only; CUDA tensors use
the reference. Computes in float32 for float16/bfloat16 (like the selective scan) and float64 for
float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .backend import sync_threads


def causal_conv_silu_ref(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Reference: x (B L E), w (E K), bias (E) -> SiLU(causal depthwise conv(x)) (B L E)."""
    L, (E, K) = x.shape[1], w.shape
    y = F.conv1d(x.transpose(1, 2), w[:, None, :], bias, padding=K - 1, groups=E)  # (B E L+K-1)
    return F.silu(y[..., :L]).transpose(1, 2)  # (B L E)


def _whole_rows(x: torch.Tensor) -> torch.Tensor:
    """x (B L E) as a C-contiguous (B L S) tensor whose first E channels are x (S = x.stride(1)):
    no copy when x has contiguous channels and contiguous rows of S (the first half of the Mamba
    block's input projection); ``x.contiguous()`` otherwise."""
    B, L, E = x.shape
    S = x.stride(1)
    fits = x.storage_offset() + B * L * S <= x.untyped_storage().nbytes() // x.element_size()
    if x.stride(2) == 1 and S >= E and x.stride(0) == L * S and fits:
        return x.as_strided((B, L, S), (L * S, S, 1))  # (B L S)
    return x.contiguous()  # (B L E)


class CausalConvSiLUFn(torch.autograd.Function):
    """The Numba kernel with its backward: x (B L E), wT (K E), bias (E), one float dtype, CPU.
    Saved for backward: x (as whole rows, ``_whole_rows``), wT, bias; the pre-activation is recomputed."""

    @staticmethod
    def forward(ctx, x, wT, bias):
        from . import causal_conv_cpu as K

        sync_threads()
        x, wT, bias = _whole_rows(x.detach()), wT.detach().contiguous(), bias.detach().contiguous()
        out = torch.from_numpy(K.forward_cpu(x.numpy(), wT.numpy(), bias.numpy()))  # (B L E)
        ctx.save_for_backward(x, wT, bias)
        return out

    @staticmethod
    @once_differentiable  # the backward runs in Numba: no graph for a double backward
    def backward(ctx, g):
        from . import causal_conv_cpu as K

        sync_threads()
        x, wT, bias = ctx.saved_tensors
        g = g.to(x.dtype).contiguous()  # (B L E)
        dx, dwT, dbias = (torch.from_numpy(a) for a in K.backward_cpu(x.numpy(), wT.numpy(), bias.numpy(), g.numpy()))
        return dx, dwT, dbias  # (B L E), (K E), (E)


def causal_conv_silu(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SiLU(causal depthwise conv(x)) by the Numba kernel: x (B L E) (any strides), w (E K), bias (E)
    -> (B L E) in ``x``'s dtype; same result and gradients as ``causal_conv_silu_ref``. CPU only."""
    if x.ndim != 3 or w.ndim != 2 or x.shape[2] != w.shape[0] or tuple(bias.shape) != (w.shape[0],):
        raise ValueError(
            f"need x (B, L, E), w (E, K), bias (E,); got {tuple(x.shape)}, {tuple(w.shape)}, {tuple(bias.shape)}"
        )
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = CausalConvSiLUFn.apply(x.to(dtype), w.to(dtype).t(), bias.to(dtype))  # (B L E)
    return out.to(x.dtype)
