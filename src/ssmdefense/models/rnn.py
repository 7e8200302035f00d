"""Recurrent baselines: LSTM (Hochreiter & Schmidhuber, 1997) and GRU (Cho et al., 2014) sequence
classifiers, as in the min-max robust training thesis (S4 vs LSTM vs GRU vs dense MLP).

    h^0_t = x_t                                   (B, L, D)
    h^l   = dropout(RNN_l(h^(l-1)))   l = 1..n_layers, width H = d_model (batch_first, zero initial state)
    logits = Linear(H, n_classes)(dropout(h^n_layers_{L-1}))     the top layer's LAST hidden state
             (pool="mean": the mean of the top layer's hidden states over the L steps)

LSTM: i, f, g, o = sigma, sigma, tanh, sigma(W x_t + U h_{t-1} + b); c_t = f c_{t-1} + i g;
h_t = o tanh(c_t). GRU: r, z = sigma(...); n = tanh(W_n x_t + r (U_n h_{t-1} + b_n));
h_t = (1 - z) n + z h_{t-1}. Both are torch's ``nn.LSTM`` / ``nn.GRU``.

The layers are a stack of one-layer ``nn.LSTM``/``nn.GRU`` modules with ``nn.Dropout`` between
them (the same model as ``nn.LSTM(num_layers=n, dropout=p)``), so ART, which runs RNN models in
training mode for gradients and freezes only ``nn.Dropout``/BatchNorm modules, gets deterministic
gradients. cuDNN's RNN backward works only in training mode, so a forward in eval mode with
gradients enabled on CUDA (an attack) runs without cuDNN. Defaults: d_model 64, one layer, no dropout,
the last hidden state.

``pool="mean"`` is for inputs whose content does not end at the last step, such as audio clips
padded after the word: on spoken-digits (log-mel, words followed by up to 0.75 s of background),
``ssmdefense train --model lstm --dataset spoken-digits`` reaches a clean accuracy of 0.158 read at
the last state (chance: 0.1) and 0.533 with ``-m pool=mean`` (docs/results.md, audio study).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .checks import check_dropout, check_int

RNN_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
RNN_POOLS = ("last", "mean")


@contextlib.contextmanager
def _cudnn_disabled():
    """Turn cuDNN off for a block, leaving its other flags (benchmark, deterministic, ...) alone."""
    previous = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = previous


class RNNClassifier(nn.Module):
    """LSTM/GRU classifier: float (B, L, D) -> logits (B, n_classes).

    Args:
        d_input: D, features per step.
        n_classes: number of classes.
        cell: "lstm" or "gru". Default: "lstm".
        d_model: H, hidden width of every layer. Default: 64.
        n_layers: stacked recurrent layers. Default: 1.
        dropout: dropout between layers and on the last hidden state before the head. Default: 0.
        pool: "last" (the top layer's last hidden state, the thesis' model) or "mean" (its mean over
            the steps). Default: "last".

    Shape:
        x: (B, L, D) -> (B, n_classes); ``features(x)``: the top layer's hidden states (B, L, H).
    """

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        cell: str = "lstm",
        d_model: int = 64,
        n_layers: int = 1,
        dropout: float = 0.0,
        pool: str = "last",
    ):
        super().__init__()
        check_int("d_input", d_input, 1)
        check_int("n_classes", n_classes, 2)
        check_int("d_model", d_model, 1)
        check_int("n_layers", n_layers, 1)
        if cell not in RNN_CELLS:
            raise ValueError(f"cell must be one of {', '.join(RNN_CELLS)}; got {cell!r}")
        check_dropout(dropout)
        if pool not in RNN_POOLS:
            raise ValueError(f"pool must be one of {', '.join(RNN_POOLS)}; got {pool!r}")
        self.pool = pool
        self.d_input, self.n_classes, self.d_model, self.cell = d_input, n_classes, d_model, cell
        rnn = RNN_CELLS[cell]
        self.layers = nn.ModuleList(
            rnn(d_input if i == 0 else d_model, d_model, batch_first=True) for i in range(n_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's hidden state at every step: (B, L, D) -> (B, L, H)."""
        if x.ndim != 3 or x.shape[-1] != self.d_input:
            raise ValueError(f"expected input (B, L, {self.d_input}); got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("expected at least one time step; got an empty sequence")
        # cuDNN's RNN backward refuses eval mode ("cudnn RNN backward can only be called in training
        # mode"); gradients in eval mode (attacks) use the native CUDA kernels instead.
        eval_grad_on_cuda = x.is_cuda and torch.is_grad_enabled() and not self.training
        with _cudnn_disabled() if eval_grad_on_cuda else contextlib.nullcontext():
            h = x  # (B L D)
            for i, layer in enumerate(self.layers):
                if i:
                    h = self.dropout(h)  # (B L H)
                h, _ = layer(h)  # (B L H)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B L D)
        h = self.features(x)  # (B L H)
        pooled = h[:, -1] if self.pool == "last" else h.mean(dim=1)  # (B H)
        return self.head(self.dropout(pooled))  # (B n_classes)

    def extra_repr(self) -> str:
        return f"cell={self.cell}, n_layers={len(self.layers)}, pool={self.pool}"
