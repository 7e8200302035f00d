"""What the real image dataset loaders (``mnist``, ``cifar10``, ``gtsrb``) share: a time limit for
torchvision's downloads and one error for their failures, choosing the first images of each class,
and building the :class:`Dataset`.

Downloading (and MNIST's and GTSRB's reading) is torchvision's (``torchvision.datasets``): its
``download_url`` checks each archive against the official MD5 before using it and does not fetch
again a file already there with the right MD5.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import SSMDefenseError
from .base import Dataset
from .files import check_positive_int, default_workers, one_line, split_counts, unusable_root

__all__ = [
    "check_positive_int",
    "default_workers",
    "describe",
    "disk_root",
    "download_failed",
    "first_per_class",
    "image_dataset",
    "network_timeout",
    "not_found",
    "one_line",
    "split_counts",
    "to_unit",
    "unusable_root",
]

TIMEOUT = 60  # seconds without data before a download gives up


def describe(exc: BaseException) -> str:
    """``"Type: message"`` of ``exc`` on one line (just the type when it has no message, as a bare
    ``assert`` in torchvision's readers)."""
    text = one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def network_timeout(seconds: float = TIMEOUT):
    """Give sockets opened inside a ``seconds`` timeout when none is set. Written here because
    torchvision's downloader calls ``urlopen`` without one, so a stalled connection would wait for
    ever; the default is the process's, and is restored on exit."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        if previous is None:
            socket.setdefaulttimeout(None)


def disk_root(name: str, root, layout: str, **flags) -> Path:
    """``root`` as a ``Path`` (``~`` expanded), after the checks every image loader makes first: a
    folder is given (``--data-dir``), and each of ``flags`` (``download``, ``lazy``) is a bool."""
    if root is None:
        raise SSMDefenseError(
            f"{name}: this dataset is read from disk; give its folder with --data-dir DIR (root=DIR in Python), "
            f"where {layout}"
        )
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise SSMDefenseError(f"{name}: {key} must be true or false; got {value!r}")
    return Path(os.path.expanduser(os.fspath(root)))


def not_found(name: str, root: Path, what: str, layout: str, url: str) -> SSMDefenseError:
    """The error of a ``root`` that holds no copy of the dataset: why (``unusable_root``, else
    ``what``), the layout expected, and how to download it."""
    where = unusable_root(root) or f"no {what} found in {root}"
    return SSMDefenseError(
        f"{name}: {where}; expected {layout}; download it with -D download=true (download=True in Python) or from {url}"
    )


def download_failed(name: str, urls, into, exc: BaseException, layout: str) -> SSMDefenseError:
    """The one-line error of a failed download of ``urls`` into ``into``, naming the cause and what
    to build by hand (``layout``)."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    return SSMDefenseError(
        f"{name}: downloading {', '.join(urls)} into {into} failed ({describe(exc)}); check the network, "
        f"or download it by hand so that {layout}"
    )


def first_per_class(y: np.ndarray, k: int | None, order: np.ndarray | None = None) -> np.ndarray:
    """Indices of the first ``k`` items of each class of ``y`` (in ``order``, default file order),
    returned in file order; all indices when ``k`` is None."""
    if k is None:
        return np.arange(len(y))
    order = np.arange(len(y)) if order is None else np.asarray(order)
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        c = int(y[i])
        if taken.get(c, 0) < k:
            taken[c] = taken.get(c, 0) + 1
            keep.append(int(i))
    return np.sort(np.asarray(keep, dtype=np.int64))


def to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 -> float32 in [0, 1] (one copy)."""
    out = x.astype(np.float32)
    out /= 255.0
    return out


def image_dataset(name: str, arrays: dict, classes: list[str], *, eps: float | None, info: dict) -> Dataset:
    """The ``Dataset`` of images (N, C, H, W) in [0, 1] from ``{"train": (x, y), "test": (x, y)}``,
    read row by row by default ("rows", as ``mnist-5k``)."""
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    return Dataset(
        name,
        x_tr,
        y_tr,
        x_te,
        y_te,
        nb_classes=len(classes),
        clip_values=(0.0, 1.0),
        sequence="rows",
        info=info,
        eps=eps,
        classes=list(classes),
    )
