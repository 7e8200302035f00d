"""Training data in one form: float32 arrays of the classifier's input shape, and labels as class
indices (from indices or one-hot / probability rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .errors import SSMDefenseError

if TYPE_CHECKING:
    import torch


def to_indices(y: np.ndarray, nb_classes: int) -> np.ndarray:
    """Class indices (N,) int64 from indices or one-hot / probability rows (N, C)."""
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != nb_classes:
            raise SSMDefenseError(f"one-hot labels have {y.shape[1]} columns; expected {nb_classes}")
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise SSMDefenseError(f"labels must be class indices (N,) or one-hot (N, C); got shape {y.shape}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= nb_classes):
        raise SSMDefenseError(f"labels must lie in 0..{nb_classes - 1}; got {y.min()}..{y.max()}")
    return y


def as_training_data(
    x: ArrayLike, y: ArrayLike, input_shape: Sequence[int], nb_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(x as float32 (N, *input_shape), y as class indices (N,)), or an ``SSMDefenseError`` saying what
    does not fit."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise SSMDefenseError("x is empty: there are no samples")
    if not np.isfinite(x).all():
        raise SSMDefenseError(f"x holds {int((~np.isfinite(x)).sum())} NaN or infinite values; inputs must be finite")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise SSMDefenseError(f"x has shape {x.shape[1:]} per sample; the classifier expects {tuple(input_shape)}")
    y = to_indices(y, nb_classes)
    if len(x) != len(y):
        raise SSMDefenseError(f"x has {len(x)} samples but y has {len(y)}")
    return x, y


def check_labels(y: torch.Tensor, nb_classes: int) -> torch.Tensor:
    """A batch of class indices (a tensor, as a lazy dataset yields them) as int64, or an
    ``SSMDefenseError`` when one lies outside 0..nb_classes-1."""
    y = y.long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= nb_classes):
        raise SSMDefenseError(f"labels must lie in 0..{nb_classes - 1}; got {int(y.min())}..{int(y.max())}")
    return y
