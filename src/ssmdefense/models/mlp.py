"""Dense baseline: a multilayer perceptron on the flattened sequence, as in the min-max robust
training thesis (S4, LSTM, GRU and a dense MLP on the same inputs).

    x (B, L, D) -> flatten (B, L*D) -> Linear(L*D, d_hidden) -> ReLU -> dropout
                -> Linear(d_hidden, d_hidden) -> ReLU -> Linear(d_hidden, n_classes)

L is not known when the model is built (a registry factory only gets ``d_input``), so the first
layer is an ``nn.LazyLinear``: its input size is fixed by the first forward pass (``SSMClassifier``
runs one probe batch when it wraps the model) or by loading a checkpoint (``load_state_dict``
materialises it from the saved weight's shape). After that, a sequence of another length is
rejected with a clear error. Defaults: d_hidden 256, no dropout.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .checks import check_dropout, check_int


class MLPClassifier(nn.Module):
    """MLP classifier: float (B, L, D) -> logits (B, n_classes).

    Args:
        d_input: D, features per step (L is taken from the first batch).
        n_classes: number of classes.
        d_hidden: width of both hidden layers. Default: 256.
        dropout: dropout after the first hidden layer. Default: 0.

    Shape:
        x: (B, L, D) -> (B, n_classes), with the same L as the first batch (``seq_len``).
    """

    def __init__(self, d_input: int, n_classes: int, d_hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        check_int("d_input", d_input, 1)
        check_int("n_classes", n_classes, 2)
        check_int("d_hidden", d_hidden, 1)
        check_dropout(dropout)
        self.d_input, self.n_classes, self.d_hidden = d_input, n_classes, d_hidden
        self.fc1 = nn.LazyLinear(d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.head = nn.Linear(d_hidden, n_classes)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    @property
    def seq_len(self) -> int | None:
        """L the model was sized for, or None before its first batch / checkpoint."""
        if is_lazy(self.fc1.weight):
            return None
        return self.fc1.weight.shape[1] // self.d_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B L D)
        if x.ndim != 3 or x.shape[-1] != self.d_input:
            raise ValueError(f"expected input (B, L, {self.d_input}); got {tuple(x.shape)}")
        L = self.seq_len
        if L is not None and x.shape[1] != L:
            raise ValueError(
                f"this MLP was sized for sequences of {L} steps (input (B, {L}, {self.d_input})); got {tuple(x.shape)}"
            )
        if L is None and x.shape[1] == 0:
            raise ValueError("expected at least one time step; got an empty sequence")
        h = self.dropout(self.act(self.fc1(x.flatten(1))))  # (B d_hidden)
        h = self.act(self.fc2(h))  # (B d_hidden)
        return self.head(h)  # (B n_classes)
