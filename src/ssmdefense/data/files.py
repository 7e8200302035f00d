"""What every file-based dataset shares besides its decoder (image and audio alike): the checks of
a data folder and of integer settings, the decoding threads and their ordered map, a stable
machine-independent file order, the choice of k files per class, the per-split counts of a
dataset's ``info``, and the template the file datasets (speech-commands, urbansound8k, gtsrb) are
built on:

1. the loader reads the official layout into a **selection**: ``{split: (paths, labels)}``
   ("train", "test", and "val" where the dataset has its own validation split);
2. a :class:`FileDecoder` (``audio_io.ClipDecoder``, ``image_io.ImageDecoder``) turns a file into
   one input, ``decoder(path)``, or many at once, ``decoder.load(paths, num_workers)``;
3. :func:`file_dataset` makes the dataset of the selection: eagerly, the arrays that
   :func:`decode_splits` decoded (a file that cannot be used is skipped and counted), or lazily, a
   :class:`LazyFiles` per split decoding one file per item when it is read (a file that cannot be
   used raises, naming it).
"""

from __future__ import annotations

import abc
import itertools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import SSMDefenseError
from ..validation import positive
from .base import Dataset, LazyDataset


def one_line(text) -> str:
    """``text`` (or an exception's message) on one line, whitespace runs collapsed: for error messages
    that quote a library's multi-line text."""
    return " ".join(str(text).split())


def unusable_root(root: Path) -> str | None:
    """Why ``root`` cannot hold a dataset at all ("... does not exist", "... is not a folder"), or None."""
    if not root.exists():
        return f"{root} does not exist"
    if not root.is_dir():
        return f"{root} is not a folder"
    return None


def disk_root(name: str, root, layout: str, **flags) -> Path:
    """``root`` as a ``Path`` (``~`` expanded), after the checks every disk loader makes first: a
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


def check_positive_int(name: str, value, dataset: str, *, allow_none: bool = False) -> int | None:
    """``value`` as an int >= 1, else an SSMDefenseError naming ``dataset`` and ``name``."""
    positive(f"{dataset}: {name}", value, integer=True, optional=allow_none, numpy=True, error=SSMDefenseError)
    return None if value is None else int(value)


def default_workers() -> int:
    """Decoding threads by default: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def ordered_map(fn, items, workers: int):
    """``map(fn, items)`` on ``workers`` threads, results in input order, at most a bounded number
    of results waiting (so memory stays flat however many files there are)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssmdefense-decode") as pool:
        pending = deque(pool.submit(fn, item) for item in itertools.islice(it, 8 * workers))
        while pending:
            future = pending.popleft()
            for item in itertools.islice(it, 1):
                pending.append(pool.submit(fn, item))
            yield future.result()


def stable_order_key(relpath: str) -> str:
    """A fixed pseudo-random sort key for ``relpath`` (SHA-1 of it): the same on every machine and
    Python run, and unrelated to speaker id or fold, so the first k files under it spread out."""
    import hashlib

    return hashlib.sha1(relpath.encode("utf-8")).hexdigest()


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


def choose_per_class(items: list, k: int | None, *, label, spread_by=None) -> list:
    """The first ``k`` items of each class (``label(item)``), in their given order; with
    ``spread_by``, the ``k`` whose ``stable_order_key(spread_by(item))`` is smallest instead, a fixed
    choice spread over speakers, folds or tracks. All of ``items`` when ``k`` is None."""
    if k is None:
        return items
    y = np.asarray([label(item) for item in items], dtype=np.int64)  # (N,)
    order = None
    if spread_by is not None:
        order = np.argsort([stable_order_key(spread_by(item)) for item in items], kind="stable")  # (N,)
    return [items[i] for i in first_per_class(y, k, order)]


def paths_and_labels(base: Path, splits: dict) -> dict:
    """The selection ``{split: (paths, labels)}`` that :func:`decode_splits` and :func:`file_dataset`
    read, of ``{split: [(label, path relative to base)]}``."""
    return {
        split: ([base / rel for _, rel in items], np.asarray([label for label, _ in items], dtype=np.int64))
        for split, items in splits.items()
    }


def split_counts(arrays: dict, n_classes: int) -> dict:
    """``{"counts", "per_class"}`` of ``{"train": (x, y), "test": (x, y)}``, for a dataset's ``info``."""
    return {
        "counts": {k: int(len(y)) for k, (_, y) in arrays.items()},
        "per_class": {k: np.bincount(y, minlength=n_classes).tolist() for k, (_, y) in arrays.items()},
    }


# ---- the template of a dataset read from files (speech-commands, urbansound8k, gtsrb) ----------------

LAZY_ADVICE = (
    "remove the file, or load the dataset without -D lazy=true "
    "(lazy=False in Python: that loader skips and counts such files)"
)


class UnusableFile(SSMDefenseError):
    """A file a decoder cannot turn into an input (damaged, truncated, empty, not of its format):
    ``path`` names it, the message says what is wrong (the decoder's subclass words it)."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = str(path)


class FileDecoder(abc.ABC):
    """How a file-based dataset turns its files into inputs: ``__call__(path)`` decodes one file, a
    float32 array of ``shape`` (what a lazy item reads), raising :class:`UnusableFile` with one
    line naming the file and the problem; ``load(paths, num_workers)`` decodes many at once, on
    threads, and returns an object whose ``x`` (K, *shape) holds the K files that decoded, ``kept``
    (K,) their indices into ``paths``, and whatever else the decoder counted (the files skipped);
    ``why_none(loaded, total, root)`` words the files skipped when none decoded.

    ``clip_values``, ``sequence`` and ``sample_rate`` are those of the dataset the inputs make;
    ``noun`` names the files in errors ("none of the 10 test files ... could be decoded"). A
    decoder is pickled with the lazy items (``DataLoader`` workers), so it holds settings only."""

    noun = "files"
    # set by each decoder, no default here: a dataclass takes a base class's value as its field's default
    clip_values: tuple[float, float]
    sequence: str
    sample_rate: int | None

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, ...]:
        """One decoded input's shape."""

    @abc.abstractmethod
    def __call__(self, path) -> np.ndarray:
        """One file, decoded."""

    @abc.abstractmethod
    def load(self, paths, num_workers: int | None):
        """Many files at once (in threads): the decoded inputs and what was skipped."""

    @abc.abstractmethod
    def why_none(self, loaded, total: int, root) -> str:
        """Why no file decoded, in words."""

    def items(self, paths, labels) -> LazyFiles:
        """The lazy items of ``paths`` and ``labels``: a :class:`LazyFiles` reading with this decoder."""
        return LazyFiles(paths, labels, self)


class LazyFiles(torch.utils.data.Dataset):
    """Inputs decoded when read: item ``i`` is ``(x, y)``, ``x`` the float32 tensor ``decode(paths[i])``
    (the decoder of the eager load, one file at a time) and ``y`` the int ``labels[i]``.

    Holds only the paths (one numpy byte-string array, so ``DataLoader`` workers forked from the
    main process do not copy them page by page through reference counts), the labels and the
    decoder; it pickles small, for workers started with ``spawn`` too. Creating it opens no file.
    A file that cannot be decoded raises :class:`SSMDefenseError` with one line naming it: unlike
    the eager load it cannot be skipped, since the dataset's length and labels are fixed before any
    file is read.
    """

    def __init__(self, paths, labels, decode: FileDecoder):
        encoded = [os.fsencode(os.fspath(p)) for p in paths]
        self.paths = np.array(encoded, dtype=bytes) if encoded else np.zeros(0, dtype="S1")  # (N,)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # (N,)
        if self.paths.shape != self.labels.shape:
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.decode = decode

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def path(self, i: int) -> str:
        """The file of item ``i``."""
        return os.fsdecode(self.paths[i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            x = self.decode(self.path(i))  # (*shape) float32
        except UnusableFile as exc:
            raise SSMDefenseError(f"{exc}; {LAZY_ADVICE}") from None
        return torch.from_numpy(x), int(self.labels[i])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} files, {self.decode!r})"


def decode_splits(name: str, splits: dict, decoder: FileDecoder, *, num_workers: int | None, root) -> tuple[dict, dict]:
    """Decode the selection ``splits`` (``{split: (paths, labels)}``) now: ``{split: (x, y)}`` of the
    files that decoded, and ``{split: decoder.load(paths)}`` (the files skipped, and what else the
    decoder counted). A split none of whose files decodes is an error naming ``name``."""
    labelled, loaded = {}, {}
    for split, (paths, labels) in splits.items():
        result = decoder.load(paths, num_workers)
        if result.x.shape[0] == 0:
            raise SSMDefenseError(
                f"{name}: none of the {len(paths)} {split} {decoder.noun} in {root} could be "
                f"decoded ({decoder.why_none(result, len(paths), root)})"
            )
        labelled[split] = (result.x, np.asarray(labels, dtype=np.int64)[result.kept])  # (K *shape), (K,)
        loaded[split] = result
    return labelled, loaded


def file_dataset(
    name: str,
    splits: dict,
    classes: list[str],
    decoder: FileDecoder,
    *,
    lazy: bool,
    eps: float | None,
    info: dict,
    validation: dict | None = None,
) -> Dataset | LazyDataset:
    """The dataset of ``splits``: ``{split: (x, y)}`` decoded (:func:`decode_splits`), or with ``lazy``
    the selection itself, ``{split: (paths, y)}``, each split a :class:`LazyFiles` of ``decoder``
    (``decoder.items``). ``validation`` says where a ``"val"`` split came from (without one,
    ``sd.load_dataset`` carves a validation split from train)."""
    common = {
        "nb_classes": len(classes),
        "clip_values": decoder.clip_values,
        "sequence": decoder.sequence,
        "info": info,
        "sample_rate": decoder.sample_rate,
        "eps": eps,
        "classes": list(classes),
    }
    if lazy:
        items = {split: decoder.items(paths, y) for split, (paths, y) in splits.items()}
        val = items.get("val")
        return LazyDataset(
            name=name,
            train=items["train"],
            test=items["test"],
            y_train=items["train"].labels,
            y_test=items["test"].labels,
            input_shape=decoder.shape,
            val=val,
            y_val=None if val is None else val.labels,
            validation=None if val is None else validation,
            **common,
        )
    (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
    x_val, y_val = splits.get("val", (None, None))
    return Dataset(
        name,
        x_tr,
        y_tr,
        x_te,
        y_te,
        x_val=x_val,
        y_val=y_val,
        validation=None if x_val is None else validation,
        **common,
    )
