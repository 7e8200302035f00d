"""Dataset plugin ``gtsrb``: the German Traffic Sign Recognition Benchmark (Stallkamp et al. 2012),
43 classes, 39,209 train / 12,630 test images, from its official files.

Layout read (torchvision's ``GTSRB`` layout, what ``download=True`` builds from the three official
zips)::

    <root>/gtsrb/
        GTSRB/Training/00000/ ... 00042/      one folder per class: *.ppm (and GT-000NN.csv, unused)
        GTSRB/Final_Test/Images/*.ppm         the test images (12,630)
        GT-final_test.csv                     their labels: "Filename;Width;Height;Roi.X1;Roi.Y1;
                                              Roi.X2;Roi.Y2;ClassId", one row per test image

``root`` may be the folder holding ``gtsrb/`` (torchvision's convention) or ``gtsrb/`` itself. On the
command line ``--data-dir`` is ``root``. Train labels are the class folders' numbers; test labels
are the ``ClassId`` column of ``GT-final_test.csv`` (from ``GTSRB_Final_Test_GT.zip``).

What torchvision does: ``download=True`` calls ``torchvision.datasets.GTSRB(root, split=...,
download=True)`` (its URLs and MD5s) for each split whose image folder is missing, and the training
images are listed by ``torchvision.datasets.folder.make_dataset``, as ``GTSRB`` lists them, but with
each folder's class fixed by its name (``00000`` -> 0, ...): ``GTSRB`` numbers the folders in sorted
order, so a missing or stray folder would shift every later label. What is written here: the test
CSV is read by hand, because ``GTSRB``'s reader keeps a ``ClassId`` outside 0..42 or a ``Filename``
such as ``../x`` without a word, lists rows whose image does not exist (each would fail in the
middle of training), and fails on a malformed CSV with a bare ``KeyError`` or ``TypeError`` naming
neither file nor line; and the images are decoded by PIL (``image_io.ImageDecoder``), because
``GTSRB`` would raise on the first damaged one, while the eager load skips and counts them.

The loader follows the file-dataset template of ``ssmdefense.data.files``, as ``speech-commands``
and ``urbansound8k`` do: :func:`select_files` reads the layout into the (path, label) selection of
each split, without opening an image; ``files.decode_splits`` (eager) or ``files.LazyFiles`` (lazy)
decode it with the same decoder. GTSRB has no validation split of its own: ``sd.load_dataset``
carves one from train.

Images: the signs are 15x15 to 250x250 pixels; each whole image (no ROI crop, as torchvision) is
converted to RGB and resized to ``size`` x ``size`` with PIL's bilinear filter (which averages over
the source pixels when shrinking), ``size`` = 32 by default, the usual GTSRB resolution and the
thesis's. Output: x float32 (N, 3, size, size) in [0, 1] (pixel / 255), y the class (names:
``CLASSES``). Train rows are ordered by (class, file name), test rows as in the CSV. Read row by
row by default (``sequence="rows"``: ``size`` steps of 3 * ``size`` values); default budget ``eps``
= 8/255, the usual one for 32x32 colour images (as ``cifar10``).

``lazy=False`` (default) decodes every image now, on ``num_workers`` threads (about 480 MB for
train at 32x32). ``lazy=True`` returns a :class:`LazyDataset` instead: creating it lists the class
folders and reads the CSV (no image is opened); item ``i`` of its ``train``/``test`` decodes one
image, so decoding happens in ``DataLoader`` workers. An item equals row ``i`` of the eager arrays.
``max_per_class`` keeps k images of each class in each split: in train a fixed spread-out choice
(smallest SHA-1 of the relative path, so not k frames of one track), in test the first k in the CSV.

Bad input, and what the loader does:

============================================================  =====================================
case                                                          result
============================================================  =====================================
``root`` not given                                            error: pass ``--data-dir``/``root=``
``root`` missing, or no ``GTSRB/`` nor ``GT-final_test.csv``  error naming the layout and
under it                                                      ``-D download=true``
``Training/``, ``Final_Test/Images/`` or the CSV missing;     error naming what is missing
a class folder missing or without .ppm images
``download=True`` and the download fails (no network, an      error naming the URLs and the cause
archive whose MD5 is not the official one)
CSV unreadable, without Filename/ClassId columns, or a row    error naming the CSV (and line) and
with a ClassId outside 0..42 or a path-like file name         what was expected
a CSV row whose image does not exist                          skipped, counted in ``info``, one
                                                              WARNING line naming the first files
an image PIL cannot decode (damaged, truncated, not an        eager: skipped, counted, same WARNING
image)                                                        line; lazy: error naming the file when
                                                              that item is read
nothing left to load in the train or the test split           error
bad parameter (``size=0``, ``lazy="yes"``, ...)               error naming the valid values
============================================================  =====================================

All errors are :class:`ssmdefense.errors.SSMDefenseError` with a one-line message.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from torchvision.datasets import GTSRB
from torchvision.datasets.folder import make_dataset

from ..errors import SSMDefenseError
from . import image_io
from .base import Dataset, LazyDataset
from .files import (
    check_positive_int,
    choose_per_class,
    decode_splits,
    disk_root,
    file_dataset,
    one_line,
    paths_and_labels,
    split_counts,
)

log = logging.getLogger("ssmdefense")

NAME = "gtsrb"
FOLDER = "gtsrb"
TRAIN_DIR = ("GTSRB", "Training")
TEST_DIR = ("GTSRB", "Final_Test", "Images")
TEST_CSV = "GT-final_test.csv"
SPLIT_DIRS = {"train": TRAIN_DIR, "test": TEST_DIR}
# what torchvision's GTSRB.download fetches and unpacks into <root>/gtsrb (named in errors only)
BASE_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
ARCHIVES = {
    "train": ["GTSRB-Training_fixed.zip"],
    "test": ["GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip"],
}
SIZE = 32  # default side of the resized images
EPS = 8 / 255  # default L-inf budget of `ssmdefense defend`
EXTENSIONS = (".ppm",)
CLASSES = [
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "end of speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "no passing",
    "no passing for vehicles over 3.5 t",
    "right-of-way at the next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "vehicles over 3.5 t prohibited",
    "no entry",
    "general caution",
    "dangerous curve to the left",
    "dangerous curve to the right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice/snow",
    "wild animals crossing",
    "end of all speed and passing limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing by vehicles over 3.5 t",
]
N_CLASSES = len(CLASSES)  # 43
CLASS_TO_IDX = {f"{c:05d}": c for c in range(N_CLASSES)}  # the training class folders

LAYOUT = (
    f"<root>/{FOLDER}/{'/'.join(TRAIN_DIR)}/<class 00000..00042>/*.ppm, "
    f"<root>/{FOLDER}/{'/'.join(TEST_DIR)}/*.ppm and <root>/{FOLDER}/{TEST_CSV} "
    f"(root may also be {FOLDER}/ itself)"
)


def find_dataset_dir(root) -> Path | None:
    """The ``gtsrb`` folder for ``root`` (see the module docstring), or None."""
    root = Path(root)
    for candidate in (root / FOLDER, root):
        if (candidate / TRAIN_DIR[0]).is_dir() or (candidate / TEST_CSV).is_file():
            return candidate
    return None


def _download(root: Path) -> None:
    """torchvision's download (and unpacking) of each split whose image folder is missing, into
    ``root`` when it is the ``gtsrb`` folder, else into ``<root>/gtsrb``."""
    base = root if root.name == FOLDER else root / FOLDER
    for split, archives in ARCHIVES.items():
        if base.joinpath(*SPLIT_DIRS[split]).is_dir():
            continue  # torchvision would not download it either (nor the test CSV alone)
        try:
            with image_io.network_timeout():
                GTSRB(str(base.parent), split=split, download=True)
        except Exception as exc:  # URLError, HTTP errors, RuntimeError of an MD5 that differs, a bad zip
            raise image_io.download_failed(NAME, [BASE_URL + a for a in archives], base, exc, LAYOUT) from None


def _complete(base: Path | None) -> bool:
    return (
        base is not None
        and base.joinpath(*TRAIN_DIR).is_dir()
        and base.joinpath(*TEST_DIR).is_dir()
        and (base / TEST_CSV).is_file()
    )


def _train_items(base: Path) -> list[tuple[int, str]]:
    """(label, path relative to ``base``) of every training image, ordered by (label, file name):
    torchvision's listing (``make_dataset``, as ``GTSRB(split="train")``), with each folder's class
    fixed by its name (``GTSRB`` numbers the folders in sorted order: a missing or stray folder would
    shift the labels after it)."""
    train_dir = base.joinpath(*TRAIN_DIR)
    if not train_dir.is_dir():
        raise SSMDefenseError(f"{NAME}: {train_dir} is missing (from GTSRB-Training_fixed.zip); expected {LAYOUT}")
    try:
        samples = make_dataset(str(train_dir), class_to_idx=CLASS_TO_IDX, extensions=EXTENSIONS)
    except FileNotFoundError as exc:  # "Found no valid file for the classes 00042. ...": missing or empty
        raise SSMDefenseError(f"{NAME}: {train_dir}: {one_line(exc)}; expected {LAYOUT}") from None
    return [(label, Path(os.path.relpath(path, base)).as_posix()) for path, label in samples]


def _test_items(base: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """(label, relative path) of every row of ``GT-final_test.csv`` whose image exists, in CSV order,
    and the file names of the rows whose image does not.

    Read by hand, not by ``GTSRB(split="test")``: its reader keeps a ClassId outside 0..42 and a
    Filename such as ``../x``, lists rows whose image is missing, and fails on a malformed CSV with a
    KeyError or TypeError that names neither the file nor the line."""
    path, test_dir = base / TEST_CSV, base.joinpath(*TEST_DIR)
    if not test_dir.is_dir():
        raise SSMDefenseError(f"{NAME}: {test_dir} is missing (from GTSRB_Final_Test_Images.zip); expected {LAYOUT}")
    if not path.is_file():
        raise SSMDefenseError(
            f"{NAME}: {path} is missing: the test labels (from GTSRB_Final_Test_GT.zip); expected {LAYOUT}"
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=";", skipinitialspace=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SSMDefenseError(f"{NAME}: cannot read {path}: {one_line(exc)}") from None
    header = [h.strip() for h in rows[0]] if rows else []
    if "Filename" not in header or "ClassId" not in header:
        raise SSMDefenseError(
            f"{NAME}: {path} is not GTSRB's test label file: its first line must name the semicolon-separated "
            f"columns Filename and ClassId (Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId); "
            f"got {';'.join(header)[:200]!r}"
        )
    i_name, i_class = header.index("Filename"), header.index("ClassId")
    items, absent = [], []
    with os.scandir(test_dir) as it:
        present = {e.name for e in it if e.is_file()}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(i_name, i_class):
            raise SSMDefenseError(f"{NAME}: {path} line {line} has {len(row)} fields; expected {len(header)}")
        name, label = row[i_name].strip(), row[i_class].strip()
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise SSMDefenseError(f"{NAME}: {path} line {line}: Filename must be a file name; got {name!r}")
        if not (label.isascii() and label.isdigit() and int(label) < N_CLASSES):
            raise SSMDefenseError(
                f"{NAME}: {path} line {line}: ClassId must be an integer 0..{N_CLASSES - 1}; got {label!r}"
            )
        if name not in present:
            absent.append(name)
            continue
        items.append((int(label), f"{'/'.join(TEST_DIR)}/{name}"))
    return items, absent


@dataclass
class Selection:
    """Which images a load reads, known from the class folders and the test CSV alone: ``splits``
    maps "train" and "test" to (label, path relative to ``base``) pairs, train in (label, file name)
    order, test in CSV order; ``absent`` names the CSV rows whose image does not exist."""

    base: Path
    splits: dict[str, list[tuple[int, str]]]
    absent: list[str]


def select_files(root: Path, *, max_per_class: int | None, download: bool) -> Selection:
    """Find the dataset under ``root`` (downloading it when asked), list the training images, read the
    test CSV and make the ``max_per_class`` choice; opens no image. Parameters are those of
    :func:`gtsrb`, already checked."""
    base = find_dataset_dir(root)
    if not _complete(base) and download:
        _download(root)
        base = find_dataset_dir(root)
    if base is None:
        raise image_io.not_found(NAME, root, "GTSRB", LAYOUT, BASE_URL)
    test_items, absent = _test_items(base)
    train_items = _train_items(base)
    label, relpath = itemgetter(0), itemgetter(1)  # of a (label, path) item
    splits = {  # train: a spread-out choice (not k frames of one track); test: the first k in the CSV
        "train": choose_per_class(train_items, max_per_class, label=label, spread_by=relpath),
        "test": choose_per_class(test_items, max_per_class, label=label),
    }
    for split, items in splits.items():
        if not items:
            raise SSMDefenseError(f"{NAME}: no images for the {split} split in {base}; expected {LAYOUT}")
    return Selection(base, splits, absent)


def _warn(base: Path, errors, absent, total: int) -> None:
    parts = []
    if errors:
        shown = ", ".join(f"{os.path.relpath(e.path, base)} ({e.reason})" for e in errors[:3])
        parts.append(f"skipped {len(errors)} of {total} images that could not be decoded: {shown}")
    if absent:
        shown = ", ".join(absent[:3]) + (", ..." if len(absent) > 3 else "")
        parts.append(f"skipped {len(absent)} rows of {TEST_CSV} whose image does not exist ({shown})")
    if parts:
        log.warning("%s: %s (in %s)", NAME, "; ".join(parts), base)


def gtsrb(
    *,
    root=None,
    size: int = SIZE,
    download: bool = False,
    lazy: bool = False,
    max_per_class: int | None = None,
    num_workers: int | None = None,
) -> Dataset | LazyDataset:
    """GTSRB from ``root`` (official files and split; see the module docstring).

    ``size``: side of the resized images (32). ``download``: torchvision fetches and unpacks the official
    zips into ``<root>/gtsrb`` when missing. ``lazy``: return a :class:`LazyDataset` that decodes
    images on demand. ``max_per_class``: keep k images of each class in each split.
    ``num_workers``: decoding threads of an eager load (None: up to 8).
    """
    root = disk_root(NAME, root, LAYOUT, download=download, lazy=lazy)
    size = check_positive_int("size", size, NAME)
    max_per_class = check_positive_int("max_per_class", max_per_class, NAME, allow_none=True)
    num_workers = check_positive_int("num_workers", num_workers, NAME, allow_none=True)

    sel = select_files(root, max_per_class=max_per_class, download=download)
    base = sel.base
    files = paths_and_labels(base, sel.splits)  # the selection: (paths, labels) per split
    decoder = image_io.ImageDecoder(NAME, size)  # file -> float32 (3 size size) in [0, 1]
    info = {
        "source": "GTSRB (Stallkamp et al. 2012), official training set and final test set",
        "root": str(base),
        "resize": f"whole image -> RGB {size}x{size}, PIL bilinear",
        "skipped": {"missing_test_images": len(sel.absent)},
        "settings": {"size": size, "max_per_class": max_per_class, "lazy": lazy},
    }
    if lazy:  # nothing decoded: a damaged image raises when its item is read
        info["counts"] = {split: len(y) for split, (_, y) in files.items()}
        _warn(base, [], sel.absent, 0)
        return file_dataset(NAME, files, CLASSES, decoder, lazy=True, eps=EPS, info=info)

    arrays, loaded = decode_splits(NAME, files, decoder, num_workers=num_workers, root=base)  # (K 3 size size)
    errors = [e for images in loaded.values() for e in images.failed]
    _warn(base, errors, sel.absent, sum(len(y) for _, y in files.values()))
    info.update(split_counts(arrays, N_CLASSES))
    info["skipped"]["undecodable_images"] = len(errors)
    info["skipped_files"] = [os.path.relpath(e.path, base) for e in errors[:100]]
    return file_dataset(NAME, arrays, CLASSES, decoder, lazy=False, eps=EPS, info=info)
