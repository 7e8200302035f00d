"""What the real image dataset loaders (``mnist``, ``cifar10``, ``gtsrb``) share: a time limit for
torchvision's downloads and one error for their failures, turning pixels into [0, 1], building the
:class:`Dataset`, and the decoder of image files (:class:`ImageDecoder`) of the file-based ones
(``gtsrb``), which read through the template of ``ssmdefense.data.files`` as the audio datasets do.
The disk checks and the choice of k images per class are ``files``' (imported here for ``mnist``
and ``cifar10``).

Downloading (and MNIST's and GTSRB's reading) is torchvision's (``torchvision.datasets``): its
``download_url`` checks each archive against the official MD5 before using it and does not fetch
again a file already there with the right MD5. Image files are decoded by PIL here, not by a
torchvision dataset, because those raise on the first damaged file, while the eager load skips and
counts them.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import progress
from ..errors import SSMDefenseError
from .base import Dataset
from .files import (
    FileDecoder,
    UnusableFile,
    check_positive_int,
    default_workers,
    disk_root,
    first_per_class,
    one_line,
    ordered_map,
    split_counts,
    unusable_root,
)

__all__ = [
    "ImageDecoder",
    "ImageReadError",
    "ImageSet",
    "check_positive_int",
    "default_workers",
    "describe",
    "disk_root",
    "download_failed",
    "first_per_class",
    "image_dataset",
    "load_images",
    "network_timeout",
    "not_found",
    "one_line",
    "read_image",
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


# ---- image files (gtsrb): the decoder of the file-dataset template (ssmdefense.data.files) ----------


class ImageReadError(UnusableFile):
    """An image PIL cannot decode; ``path`` and ``reason`` say which and why."""

    def __init__(self, name: str, path, reason: str):
        super().__init__(path, f"{name}: cannot decode {path}: {reason}")
        self.reason = reason


def read_image(path, size: int, name: str) -> np.ndarray:
    """Image file ``path`` as uint8 (3, size, size): the whole image converted to RGB and resized
    with PIL's bilinear filter (which averages over the source pixels when shrinking);
    :class:`ImageReadError` (naming ``name``) if PIL cannot read it."""
    from PIL import Image

    # PIL by hand, not a torchvision dataset's reader: that raises on the first damaged image, while
    # the eager load skips and counts them and a lazy item names the file
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(im, dtype=np.uint8)  # (size size 3)
    except Exception as exc:  # UnidentifiedImageError, truncated data (OSError), decompression bomb, ...
        raise ImageReadError(name, path, one_line(f"{type(exc).__name__}: {exc}")) from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3 size size)


@dataclass
class ImageSet:
    """What :func:`load_images` returns: ``x`` float32 (K, 3, size, size) in [0, 1] of the K files
    that decoded (in the order given), ``kept`` (K,) their indices into the input list, ``failed``
    the :class:`ImageReadError` of each other file."""

    x: np.ndarray
    kept: np.ndarray
    failed: list[ImageReadError] = field(default_factory=list)


def load_images(paths, *, size: int, name: str, num_workers: int | None = None) -> ImageSet:
    """Decode each of ``paths`` (:func:`read_image`) on ``num_workers`` threads (None: up to 8; PIL
    releases the GIL while decoding); the files PIL cannot read are skipped and listed."""
    paths = list(paths)
    workers = default_workers() if num_workers is None else int(num_workers)

    def work(path):
        try:
            return read_image(path, size, name)  # (3 size size) uint8
        except ImageReadError as exc:
            return exc

    pixels = np.empty((len(paths), 3, size, size), dtype=np.uint8)  # (N 3 size size), the first K filled
    kept, failed = [], []
    decoded = progress.track(ordered_map(work, paths, workers), f"{name}: decoding images", len(paths), "files")
    for i, result in enumerate(decoded):
        if isinstance(result, ImageReadError):
            failed.append(result)
            continue
        pixels[len(kept)] = result
        kept.append(i)
    x = to_unit(pixels[: len(kept)])  # (K 3 size size) in [0, 1]
    return ImageSet(x, np.asarray(kept, dtype=np.int64), failed)


@dataclass(frozen=True)
class ImageDecoder(FileDecoder):
    """Image files as float32 (3, size, size) in [0, 1] (RGB, resized bilinearly; see
    :func:`read_image`), read row by row by default; ``name`` (the dataset) starts its errors."""

    name: str
    size: int

    noun = "images"
    clip_values = (0.0, 1.0)
    sequence = "rows"
    sample_rate = None  # not audio

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def __call__(self, path) -> np.ndarray:
        return to_unit(read_image(path, self.size, self.name))  # (3 size size) in [0, 1]

    def load(self, paths, num_workers: int | None) -> ImageSet:
        return load_images(paths, size=self.size, name=self.name, num_workers=num_workers)

    def why_none(self, loaded: ImageSet, total: int, root) -> str:
        first = loaded.failed[0]
        return f"first: {first.path}: {first.reason}"
