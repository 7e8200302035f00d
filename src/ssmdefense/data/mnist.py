"""Dataset plugin ``mnist``: the full MNIST (LeCun et al. 1998), 60,000 train / 10,000 test, from
the official idx files, read by ``torchvision.datasets.MNIST``.

Layout read (torchvision's ``MNIST`` layout, what ``download=True`` builds)::

    <root>/MNIST/raw/
        train-images-idx3-ubyte   magic 2051, then N, 28, 28 (big-endian int32), then N*784 bytes
        train-labels-idx1-ubyte   magic 2049, then N, then N bytes 0..9
        t10k-images-idx3-ubyte
        t10k-labels-idx1-ubyte

``root`` may be the folder holding ``MNIST/`` (torchvision's convention), ``MNIST/`` itself, or
``MNIST/raw/`` itself; torchvision is given the folder holding ``MNIST/``. On the command line
``--data-dir`` is ``root``. torchvision reads only the uncompressed files: a file present only as the
official gzip (``train-images-idx3-ubyte.gz``, ...) is first decompressed next to it (with
torchvision's ``extract_archive``, as its ``download=True`` does), and ``info["decompressed"]``
names those. ``download=True`` is torchvision's download (its mirrors, and the official MD5s). As
in torchvision, ``MNIST/processed/{training,test}.pt`` of its old versions are read instead of the
idx files when both are there.

Split: the official one (train = the 60,000 ``train-*`` images, test = the 10,000 ``t10k-*``), in
file order. ``max_per_class`` keeps the first k images of each digit in each split (a quick run:
``-D max_per_class=100``).

Output: x float32 (N, 1, 28, 28) in [0, 1] (pixel / 255), y the digit; classes "0" ... "9". Read
row by row by default (``sequence="rows"``: 28 steps of 28 pixels, as ``mnist-5k``) with the CLI's
default budget (``eps`` None: 0.1). The AdS paper's MNIST setting (784 one-pixel steps, eps 0.3,
step 0.04) is not this loader's default: ask for it with ``--sequence pixels --eps 0.3`` (or
``--preset ads-mnist``).

Bad input, and what the loader does:

============================================================  =====================================
case                                                          result
============================================================  =====================================
``root`` not given                                            error: pass ``--data-dir``/``root=``
``root`` missing, or none of the four files under it          error naming the layout and
                                                              ``-D download=true``
idx files in a folder torchvision does not read (not          error: move them to
``MNIST/raw/``)                                               ``<root>/MNIST/raw/``
some of the four files missing                                error naming the missing ones
``download=True`` and the download fails (no network)         error naming the URLs and the cause
a file torchvision cannot read as idx (foreign, truncated,    error naming the file and
trailing bytes), or a broken gzip                             torchvision's reason
images other than 28x28, labels outside 0..9, or images and   error naming the file and what was
labels that disagree in number (torchvision checks none)      expected
bad parameter (``max_per_class=0``, ``download="yes"``)       error naming the valid values
============================================================  =====================================

All errors are :class:`ssmdefense.errors.SSMDefenseError` with a one-line message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import extract_archive

from ..errors import SSMDefenseError
from . import image_io
from .base import Dataset

NAME = "mnist"
FOLDER = "MNIST"  # torchvision reads <root>/MNIST/raw
RAW = "raw"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
STEMS = tuple(f for pair in FILES.values() for f in pair)
SIDE = 28
CLASSES = [str(d) for d in range(10)]
URLS = [MNIST.mirrors[0] + filename for filename, _ in MNIST.resources]  # torchvision's table

LAYOUT = (
    f"<root>/{FOLDER}/{RAW}/ holds {', '.join(STEMS)} "
    f"(or the same names with .gz; root may also be {FOLDER}/ or {FOLDER}/{RAW}/ itself)"
)


def _file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _has_idx(folder: Path) -> bool:
    return folder.is_dir() and any(_file(folder, stem) for stem in STEMS)


def _parent_of_mnist(root: Path) -> Path:
    """The folder holding ``MNIST/`` for each accepted form of ``root`` (where a download goes)."""
    if root.name == FOLDER:
        return root.parent
    if root.name == RAW and root.parent.name == FOLDER:
        return root.parent.parent
    return root


def torchvision_root(root) -> Path | None:
    """The folder holding ``MNIST/raw`` with idx files, for ``root`` = that folder, ``MNIST/`` or
    ``MNIST/raw/`` (the ``root`` torchvision wants); None when there is none."""
    root = Path(root)
    for candidate in dict.fromkeys((root, _parent_of_mnist(root))):
        if _has_idx(candidate / FOLDER / RAW):
            return candidate
    return None


def _missing_error(root: Path) -> SSMDefenseError:
    misplaced = next((d for d in (root, root / RAW) if _has_idx(d)), None)
    if misplaced is not None:  # torchvision reads only <root>/MNIST/raw
        return SSMDefenseError(
            f"{NAME}: {misplaced} holds MNIST idx files, but torchvision reads them from <root>/{FOLDER}/{RAW}/; "
            f"move them into a folder {FOLDER}/{RAW}/ and give the folder holding {FOLDER}/ as --data-dir"
        )
    where = image_io.unusable_root(root) or f"no MNIST idx files found in {root}"
    return SSMDefenseError(
        f"{NAME}: {where}; expected {LAYOUT}; download it with -D download=true (download=True in Python) "
        f"or from {MNIST.mirrors[0]}"
    )


def _download(tv_root: Path) -> None:
    """torchvision's download of the four official .gz files into ``<tv_root>/MNIST/raw``, each
    checked against its MD5 and decompressed (it then reads the train split, which is not kept)."""
    try:
        with image_io.network_timeout():
            MNIST(str(tv_root), train=True, download=True)
    except Exception as exc:  # RuntimeError naming each mirror tried, HTTP errors, a full disk, ...
        raise image_io.download_failed(NAME, URLS, tv_root / FOLDER / RAW, exc, LAYOUT) from None


def _decompress(raw: Path) -> list[str]:
    """Decompress each of the four files present only as its .gz, next to it (torchvision reads
    only the uncompressed files); the names of the .gz files decompressed."""
    done = []
    for stem in STEMS:
        gz = raw / (stem + ".gz")
        if (raw / stem).is_file() or not gz.is_file():
            continue
        try:
            extract_archive(str(gz))  # -> raw/stem
        except Exception as exc:  # BadGzipFile (an OSError), EOFError of a cut file, zlib.error, a full disk
            (raw / stem).unlink(missing_ok=True)  # not a half-written file read next time
            raise SSMDefenseError(
                f"{NAME}: cannot read {gz}: {image_io.describe(exc)} (a damaged or truncated download? "
                f"delete it and download it again)"
            ) from None
        done.append(gz.name)
    return done


def _read_error(raw: Path, split: str, exc: Exception) -> SSMDefenseError:
    """An error naming which of ``split``'s two files torchvision could not read, and why: each is
    read again on its own with torchvision's reader to find it."""
    for stem, read, kind in zip(FILES[split], (read_image_file, read_label_file), ("images", "labels")):
        try:
            read(str(raw / stem))
        except Exception as own:  # AssertionError (not an idx header), RuntimeError (size), ValueError
            return SSMDefenseError(
                f"{NAME}: {raw / stem} is not a readable MNIST {kind} idx file ({image_io.describe(own)}); "
                f"a damaged or truncated download? delete it and download it again"
            )
    return SSMDefenseError(f"{NAME}: torchvision cannot read the {split} split in {raw}: {image_io.describe(exc)}")


def _read_split(tv_root: Path, raw: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels (N) of ``split``, read by torchvision, and checked
    for what it does not check (image size, label range, equal counts)."""
    try:
        ds = MNIST(str(tv_root), train=split == "train")
    except Exception as exc:
        raise _read_error(raw, split, exc) from None
    images, labels = ds.data.numpy(), ds.targets.numpy()  # (N 28 28) uint8, (N) int64
    image_path, label_path = (raw / stem for stem in FILES[split])
    if images.shape[1:] != (SIDE, SIDE):
        raise SSMDefenseError(
            f"{NAME}: {image_path} holds {images.shape[1]}x{images.shape[2]} images; MNIST's are {SIDE}x{SIDE}"
        )
    if len(images) != len(labels):
        raise SSMDefenseError(
            f"{NAME}: {image_path.name} has {len(images)} images but {label_path.name} has "
            f"{len(labels)} labels (in {raw})"
        )
    if len(labels) == 0:
        raise SSMDefenseError(f"{NAME}: {image_path} holds no images")
    if labels.max() > 9:
        raise SSMDefenseError(f"{NAME}: {label_path} has label {int(labels.max())}; MNIST's are 0..9")
    return images, labels.astype(np.int64)


def mnist(*, root=None, download: bool = False, max_per_class: int | None = None) -> Dataset:
    """MNIST from ``root`` (official idx files and split, read by torchvision; see the module docstring).

    ``download``: fetch the four official .gz files into ``<root>/MNIST/raw`` when missing.
    ``max_per_class``: keep the first k images of each digit in each split.
    """
    root = image_io.disk_root(NAME, root, LAYOUT, download=download)
    max_per_class = image_io.check_positive_int("max_per_class", max_per_class, NAME, allow_none=True)
    tv_root = torchvision_root(root)
    complete = tv_root is not None and all(_file(tv_root / FOLDER / RAW, s) for s in STEMS)
    if not complete and download:
        _download(tv_root or _parent_of_mnist(root))
        tv_root = torchvision_root(root)
    if tv_root is None:
        raise _missing_error(root)
    raw = tv_root / FOLDER / RAW
    missing = [s for s in STEMS if _file(raw, s) is None]
    if missing:
        raise SSMDefenseError(
            f"{NAME}: {raw} lacks {', '.join(missing)} (nor their .gz); expected {LAYOUT}; "
            f"download it with -D download=true or from {MNIST.mirrors[0]}"
        )
    decompressed = _decompress(raw)

    arrays = {}
    for split in FILES:
        images, labels = _read_split(tv_root, raw, split)
        keep = image_io.first_per_class(labels, max_per_class)
        arrays[split] = (image_io.to_unit(images[keep])[:, None], labels[keep])  # (N 1 28 28) in [0, 1]

    info = {
        "source": "MNIST (LeCun et al. 1998), official idx files and split, read by torchvision",
        "root": str(raw),
        "files": {split: list(pair) for split, pair in FILES.items()},
        "decompressed": decompressed,
        **image_io.split_counts(arrays, len(CLASSES)),
        "settings": {"max_per_class": max_per_class},
        "paper_setting": "the AdS paper reads MNIST as 784 one-pixel steps at eps 0.3: --sequence pixels --eps 0.3",
    }
    return image_io.image_dataset(NAME, arrays, CLASSES, eps=None, info=info)
