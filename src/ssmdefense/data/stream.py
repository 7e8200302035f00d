"""Data in either form the loop and the evaluation take: numpy arrays held in memory, or a lazily
loaded ``torch.utils.data.Dataset`` (``LazyDataset.train`` / ``.test``) read batch by batch through
a ``DataLoader``, decoded in its worker processes.

Arrays stay arrays (one chunk, the numbers of a run are those of before); a lazy dataset is read in
chunks of ``CHUNK`` samples, so memory holds one chunk, never the whole split.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import SSMDefenseError
from ..labels import as_training_data

CHUNK = 1024  # samples of a lazy dataset the evaluation holds at once


def is_lazy(x) -> bool:
    """Whether ``x`` is a ``torch.utils.data.Dataset`` (read item by item) rather than an array."""
    return isinstance(x, torch.utils.data.Dataset)


def as_torch_dataset(x, y=None) -> torch.utils.data.Dataset:
    """A ``Dataset`` of (x, y) pairs: ``x`` itself when lazy, else the arrays as tensors."""
    if is_lazy(x):
        return x
    return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def _one_line(exc: BaseException) -> str:
    """The message of an error raised in a DataLoader worker (which wraps it in a traceback text)."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def loader(dataset, batch_size: int, *, indices=None, num_workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``dataset`` (the ``indices`` of it when given), in order unless ``kwargs``
    say otherwise; workers only for lazy data."""
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, list(indices))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=False, **kwargs
    )


def batches(data) -> Iterator:
    """Iterate a ``DataLoader``, turning a worker's ``SSMDefenseError`` (a file that will not decode)
    back into its own one-line message."""
    try:
        yield from data
    except SSMDefenseError as exc:
        raise type(exc)(_one_line(exc)) from None


def chunks(x, y=None, *, indices: range | None = None, size: int = CHUNK, num_workers: int = 0) -> Iterator:
    """(x, y) numpy chunks of the samples ``indices`` (all when None): arrays give one chunk, a lazy
    dataset chunks of ``size`` samples read through a DataLoader."""
    if not is_lazy(x):
        if indices is not None:
            x, y = x[indices.start : indices.stop], y[indices.start : indices.stop]
        yield x, y
        return
    indices = indices if indices is not None else range(len(x))
    for start in range(0, len(indices), size):
        part = indices[start : start + size]
        xs, ys = [], []
        for xb, yb in batches(loader(x, 256, indices=part, num_workers=num_workers)):
            xs.append(xb.numpy())  # (b ...)
            ys.append(yb.numpy())  # (b)
        yield np.concatenate(xs).astype(np.float32, copy=False), np.concatenate(ys).astype(np.int64)


def materialise(x, y=None, limit: int | None = None, num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` samples (all when None) as arrays: a small evaluation set of lazy data."""
    n = len(x) if limit is None else min(limit, len(x))
    parts = list(chunks(x, y, indices=range(n), num_workers=num_workers))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def validation_pair(validation_data) -> tuple:
    """(x, y) of ``validation_data``: a pair of arrays, or a lazy ``Dataset`` and None."""
    return (validation_data, None) if is_lazy(validation_data) else tuple(validation_data)


def training_data(x, y, clf) -> tuple:
    """Arrays checked and converted (``labels.as_training_data``), or a lazy ``Dataset`` (y None) whose
    first item is checked against the classifier's input shape."""
    if not is_lazy(x):
        return as_training_data(x, y, clf.input_shape, clf.nb_classes)
    if y is not None:
        raise SSMDefenseError("a lazily loaded dataset carries its labels: give y=None")
    if len(x) == 0:
        raise SSMDefenseError("the dataset is empty: there are no samples")
    shape = tuple(x[0][0].shape)
    if shape != tuple(clf.input_shape):
        expected = tuple(clf.input_shape)
        raise SSMDefenseError(f"the dataset's items have shape {shape}; the classifier expects {expected}")
    return x, None
