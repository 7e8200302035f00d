"""``TinyGRU``: a plain sequence classifier, an ``nn.Module`` with nothing ssmdefense-specific."""

import torch
from torch import nn


class TinyGRU(nn.Module):
    """(B, L, D) -> GRU -> the last step's hidden state -> Linear -> logits (B, n_classes)."""

    def __init__(self, d_input: int, n_classes: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(d_input, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B L D)
        out, _ = self.gru(x)  # (B L hidden)
        return self.head(out[:, -1])  # (B n_classes)
