"""Base class of the LTI mixers computed as one long convolution (S4, S4D, DSS)."""

import torch
from torch import nn

from ..kernels.long_conv import apply_conv, conv_operator


class ConvolutionalSSM(nn.Module):
    """``y = K * u + D u`` per channel. Subclasses define ``kernel(L) -> K (H, L)`` and a
    parameter ``D`` (H), and a ``forward_recurrent`` reference that tests compare with this."""

    _kept: tuple | None = None  # (key, operator) of the last kernel computed without a graph

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (B L H)
        u = u.transpose(1, 2)  # (B H L)
        y = apply_conv(u, self.kept_operator(u.shape[-1]))  # (B H L): by FFT, or directly when short
        y = y + self.D[:, None] * u  # (B H L)
        # contiguous: the block's GELU backward takes a slow, unvectorised path when its input is a
        # transposed view and its incoming gradient is contiguous (24.8 vs 7.4 ms at B 32, L 784, H 64)
        return y.transpose(1, 2).contiguous()  # (B L H)

    def kept_operator(self, L: int) -> torch.Tensor:
        """``conv_operator(kernel(L))`` (K, or its Toeplitz matrices for short L), computed once while
        the weights stay the same when no gradient flows to them: predictions and attacks (whose
        input gradients run with the weights frozen) call the model hundreds of times with one set of
        weights, and the kernel (Vandermonde products and exponentials, a quarter of an S4D forward
        at L 28) and its matrices (half a millisecond more) depend on the weights alone. The key is
        each tensor's storage and version counter, which every in-place update (optimizer steps,
        ``load_state_dict``) advances; a change made through ``.data`` is not seen, so call
        ``kernel(L)`` directly after one."""
        tensors = [*self.parameters(), *self.buffers()]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return conv_operator(self.kernel(L))  # training: K needs its graph
        key = (L, tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors))
        if self._kept is None or self._kept[0] != key:
            self._kept = (key, conv_operator(self.kernel(L)))
        return self._kept[1]  # (H L), or (H L L)
