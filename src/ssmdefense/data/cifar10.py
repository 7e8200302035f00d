"""Dataset plugin ``cifar10``: CIFAR-10 (Krizhevsky 2009), 50,000 train / 10,000 test, from the
official "python version" batches.

Layout read (the extracted ``cifar-10-python.tar.gz``, torchvision's ``CIFAR10`` layout)::

    <root>/cifar-10-batches-py/
        data_batch_1 ... data_batch_5   10,000 images each: the train split
        test_batch                      10,000 images: the test split
        batches.meta                    label_names: the ten class names

``root`` may be the folder holding ``cifar-10-batches-py/`` or that folder itself. On the command
line ``--data-dir`` is ``root``.

The batches are Python pickles, and ``pickle.load`` runs whatever code a pickle names.
torchvision's ``CIFAR10`` calls ``pickle.load`` on them, made safe only by first insisting that
each file's MD5 be the official one, so it refuses every batch that is not byte for byte the
official file (re-packed by hand, or written by the tests). So the batches are read here, not by
torchvision, with a restricted unpickler that builds only what the official batches hold (dicts,
lists, strings, numbers and numpy arrays: ``numpy.ndarray``, ``numpy.dtype`` and numpy's array
reconstructors) and refuses any other global with an error, without calling it. A batch is a dict
with ``data`` (uint8 (n, 3072): 1024 red, 1024 green, 1024 blue values, each 32x32 row-major) and
``labels`` (n ints 0..9); ``batch_label`` and ``filenames`` are not needed. The MD5 of each file is
compared with the official one (torchvision's table) for information only (``info["md5"]``).

``download=True`` fetches ``cifar-10-python.tar.gz`` with torchvision's ``download_url`` (checked
against the official MD5; an archive that does not match is deleted) and unpacks it here with
``tarfile``'s ``"data"`` filter, which refuses members outside ``root``: torchvision's
``extract_archive`` calls ``extractall`` with no filter, which before Python 3.14 writes wherever a
member's path (``../x``, an absolute path, a link) points.

Output: x float32 (N, 3, 32, 32) in [0, 1] (pixel / 255), y the class (0 airplane ... 9 truck, the
names from ``batches.meta``), in file order. Read row by row by default (``sequence="rows"``: 32
steps of 96 values). Default budget ``eps`` = 8/255, the usual CIFAR-10 L-inf budget and the AdS
paper's; the paper reads 1024 one-pixel steps (``--sequence pixels``). ``max_per_class`` keeps
the first k images of each class in each split.

Bad input, and what the loader does:

============================================================  =====================================
case                                                          result
============================================================  =====================================
``root`` not given                                            error: pass ``--data-dir``/``root=``
``root`` missing, or no batch files under it                  error naming the layout and
                                                              ``-D download=true``
some of the seven files missing                               error naming the missing ones
``download=True`` and the download fails (no network, an      error naming the URL and the cause
archive whose MD5 is not the official one, a member outside
``root``)
a file whose pickle names any other global (code)             error "... is not a CIFAR-10 batch:
                                                              it asks to load <module>.<name>";
                                                              nothing of it is run
a truncated or damaged pickle; a dict without ``data`` or     error naming the file and what was
``labels``, data not uint8 (n, 3072), labels outside 0..9,    expected
``label_names`` not ten strings
bad parameter (``max_per_class=0``, ``download="yes"``)       error naming the valid values
============================================================  =====================================

All errors are :class:`ssmdefense.errors.SSMDefenseError` with a one-line message.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5, check_integrity, download_url

from ..errors import SSMDefenseError
from . import image_io
from .base import Dataset

NAME = "cifar10"
# torchvision's table: the folder, the archive, its MD5, and each file's MD5 (information only)
FOLDER = CIFAR10.base_folder  # cifar-10-batches-py
URL = CIFAR10.url
ARCHIVE = CIFAR10.filename  # cifar-10-python.tar.gz
ARCHIVE_MD5 = CIFAR10.tgz_md5
TRAIN = tuple(name for name, _ in CIFAR10.train_list)  # data_batch_1 ... data_batch_5
TEST = tuple(name for name, _ in CIFAR10.test_list)  # test_batch
META = CIFAR10.meta["filename"]  # batches.meta
MD5 = dict(CIFAR10.train_list + CIFAR10.test_list) | {META: CIFAR10.meta["md5"]}
EPS = 8 / 255  # default L-inf budget of `ssmdefense defend` (the AdS paper's CIFAR-10 budget)
SIDE = 32
N_CLASSES = 10

LAYOUT = (
    f"<root>/{FOLDER}/ holds {', '.join(TRAIN + TEST)} and {META} "
    f"(the extracted cifar-10-python.tar.gz; root may also be {FOLDER}/ itself)"
)


def _safe_latin1_encode(obj, encoding="latin1"):
    """What protocol-2 pickles of bytes call (``_codecs.encode(text, "latin1")``), and nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return codecs.encode(obj, "latin1")


def _allowed() -> dict[tuple[str, str], object]:
    core = getattr(np, "_core", None) or np.core  # numpy 2.x, 1.x
    multiarray, numeric = core.multiarray, core.numeric
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _safe_latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):  # numpy 1.x pickles name numpy.core, 2.x numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what CIFAR-10's batches hold and refuses every other global
    (so a file that names ``os.system`` or any other callable raises before anything is called)."""

    ALLOWED = _allowed()

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _key(k):
    return k.decode("latin1") if isinstance(k, bytes) else k


def load_batch(path: Path) -> dict:
    """The dict of a CIFAR batch file, its keys as str (Python 2's str keys and Python 3's bytes keys
    alike), read with :class:`BatchUnpickler`; an SSMDefenseError naming the file otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SSMDefenseError(f"{NAME}: cannot read {path}: {image_io.one_line(exc)}") from None
    try:
        obj = BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except RefusedGlobal as exc:
        raise SSMDefenseError(
            f"{NAME}: {path} is not a CIFAR-10 batch: it asks to load {exc.module}.{exc.name}, "
            f"which a batch never needs (refused, nothing was run)"
        ) from None
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, ... from a truncated or foreign file
        raise SSMDefenseError(
            f"{NAME}: {path} is not a readable CIFAR-10 batch ({image_io.one_line(f'{type(exc).__name__}: {exc}')}); "
            f"a damaged or truncated download? delete it and download it again"
        ) from None
    if not isinstance(obj, dict):
        raise SSMDefenseError(f"{NAME}: {path} is not a CIFAR-10 batch: it holds a {type(obj).__name__}, not a dict")
    return {_key(k): v for k, v in obj.items()}


def _read_split(base: Path, names) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        path = base / name
        batch = load_batch(path)
        missing = [k for k in ("data", "labels") if k not in batch]
        if missing:
            raise SSMDefenseError(
                f"{NAME}: {path} is not a CIFAR-10 batch: no {' or '.join(missing)} entry "
                f"(it has {', '.join(map(str, batch)) or 'nothing'})"
            )
        data = batch["data"]
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
            what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise SSMDefenseError(f"{NAME}: {path}: data must be a uint8 array (n, 3072); got {what}")
        if data.shape[1] != 3 * SIDE * SIDE:
            raise SSMDefenseError(f"{NAME}: {path}: data must be a uint8 array (n, 3072); got {data.shape}")
        try:
            labels = np.asarray(batch["labels"], dtype=np.int64)  # (n)
        except (TypeError, ValueError, OverflowError):
            labels = None
        if labels is None or labels.shape != (len(data),):
            raise SSMDefenseError(f"{NAME}: {path}: labels must be {len(data)} integers, one per image")
        if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
            bad = int(labels[(labels < 0) | (labels >= N_CLASSES)][0])
            raise SSMDefenseError(f"{NAME}: {path} has label {bad}; CIFAR-10's are 0..{N_CLASSES - 1}")
        xs.append(data.reshape(-1, 3, SIDE, SIDE))  # (n 3 32 32): channel planes, each row-major
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _read_classes(base: Path) -> list[str]:
    path = base / META
    meta = load_batch(path)
    names = meta.get("label_names")
    if isinstance(names, (list, tuple)):
        names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if not (isinstance(names, list) and len(names) == N_CLASSES and all(isinstance(n, str) for n in names)):
        raise SSMDefenseError(f"{NAME}: {path} is not CIFAR-10's batches.meta: label_names must be ten names")
    return names


def _download(root: Path) -> None:
    """Fetch ``cifar-10-python.tar.gz`` into ``root`` with torchvision (not again when there with the
    official MD5) and unpack it there, refusing members outside ``root``."""
    archive = root / ARCHIVE
    try:
        with image_io.network_timeout():
            download_url(URL, str(root), ARCHIVE, ARCHIVE_MD5)
    except Exception as exc:  # URLError, HTTP errors, RuntimeError of an MD5 that differs, a full disk
        cause = exc
        if archive.is_file() and not check_integrity(str(archive), ARCHIVE_MD5):
            got = calculate_md5(str(archive))
            cause = ValueError(f"MD5 {got}, expected {ARCHIVE_MD5}: an incomplete or altered download")
            archive.unlink()  # torchvision would fetch it again anyway; do not leave it lying there
        raise image_io.download_failed(NAME, URL, root, cause, LAYOUT) from None
    try:
        # by hand, not torchvision's extract_archive: that calls extractall with no filter (see the docstring)
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(root, filter="data")
    except Exception as exc:  # a damaged archive, a full disk, a member outside the folder
        raise SSMDefenseError(
            f"{NAME}: unpacking {archive} (from {URL}) failed ({image_io.describe(exc)}); "
            f"delete it and try again, or unpack it by hand so that {LAYOUT}"
        ) from None


def find_dataset_dir(root) -> Path | None:
    """The ``cifar-10-batches-py`` folder for ``root`` (see the module docstring), or None."""
    root = Path(root)
    for candidate in (root / FOLDER, root):
        if candidate.is_dir() and any((candidate / n).is_file() for n in TRAIN + TEST + (META,)):
            return candidate
    return None


def cifar10(*, root=None, download: bool = False, max_per_class: int | None = None) -> Dataset:
    """CIFAR-10 from ``root`` (official python batches and split; see the module docstring).

    ``download``: fetch (torchvision) and unpack ``cifar-10-python.tar.gz`` into ``root`` when missing.
    ``max_per_class``: keep the first k images of each class in each split.
    """
    root = image_io.disk_root(NAME, root, LAYOUT, download=download)
    max_per_class = image_io.check_positive_int("max_per_class", max_per_class, NAME, allow_none=True)
    names = TRAIN + TEST + (META,)
    base = find_dataset_dir(root)
    complete = base is not None and all((base / n).is_file() for n in names)
    if not complete and download:
        _download(root)
        base = find_dataset_dir(root)
    if base is None:
        raise image_io.not_found(NAME, root, "CIFAR-10 batches", LAYOUT, URL)
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise SSMDefenseError(
            f"{NAME}: {base} lacks {', '.join(missing)}; expected {LAYOUT}; "
            f"download it with -D download=true or from {URL}"
        )

    classes = _read_classes(base)
    arrays = {}
    for split, files in (("train", TRAIN), ("test", TEST)):
        x, y = _read_split(base, files)  # (N 3 32 32) uint8, (N)
        if len(y) == 0:
            raise SSMDefenseError(f"{NAME}: the {split} batches in {base} hold no images")
        keep = image_io.first_per_class(y, max_per_class)
        arrays[split] = (image_io.to_unit(x[keep]), y[keep])  # (N 3 32 32) in [0, 1]

    differs = [n for n in names if not check_integrity(str(base / n), MD5[n])]
    info = {
        "source": "CIFAR-10 (Krizhevsky 2009), official python batches and split",
        "root": str(base),
        **image_io.split_counts(arrays, N_CLASSES),
        "md5": "official" if not differs else f"differs from the official files: {', '.join(differs)}",
        "settings": {"max_per_class": max_per_class},
        "paper_setting": "the AdS paper reads CIFAR-10 as 1024 one-pixel steps at eps 8/255: --sequence pixels",
    }
    return image_io.image_dataset(NAME, arrays, classes, eps=EPS, info=info)
