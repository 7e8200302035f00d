"""What every file-based dataset needs besides its decoder (image and audio alike): the checks of
a data folder and of integer settings, the decoding threads and their ordered map, a stable
machine-independent file order, the per-split counts of a dataset's ``info``."""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import SSMDefenseError
from ..validation import positive


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


def split_counts(arrays: dict, n_classes: int) -> dict:
    """``{"counts", "per_class"}`` of ``{"train": (x, y), "test": (x, y)}``, for a dataset's ``info``."""
    return {
        "counts": {k: int(len(y)) for k, (_, y) in arrays.items()},
        "per_class": {k: np.bincount(y, minlength=n_classes).tolist() for k, (_, y) in arrays.items()},
    }
