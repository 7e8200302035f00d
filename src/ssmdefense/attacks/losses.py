"""Losses an attack can maximise in place of the estimator's cross-entropy.

``margin``: the Carlini-Wagner margin ``max_{j != y} z_j - z_y`` on the logits z (Carlini & Wagner
2017, https://arxiv.org/abs/1608.04644; the "margin loss" of Croce & Hein's AutoAttack). Unlike
cross-entropy it does not saturate when the softmax does, so PGD on it still finds a direction on a
model whose logits are large (distillation, over-confident training), and it measures exactly how
far a sample is from being misclassified.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

LOSSES = ("ce", "margin")


class MarginLoss(torch.nn.Module):
    """Mean over the batch of ``max_{j != y} z_j - z_y``; ``y`` class indices (or one-hot rows)."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # logits (B C), y (B) or (B C)
        if y.ndim == 2:
            y = y.argmax(1)
        y = y.long()
        true = logits.gather(1, y[:, None]).squeeze(1)  # (B)
        others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)  # (B)
        return (others - true).mean()


def with_loss(estimator, loss: str):
    """``estimator`` itself for ``"ce"``; for ``"margin"`` a shallow copy (same model, same weights)
    whose ``loss_gradient`` follows ``MarginLoss``: ART's attacks differentiate the estimator's loss."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    if loss == "ce":
        return estimator
    wrapped = copy.copy(estimator)
    wrapped._loss = MarginLoss()
    return wrapped
