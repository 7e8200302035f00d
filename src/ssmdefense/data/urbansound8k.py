"""Dataset plugin ``urbansound8k``: UrbanSound8K (Salamon et al. 2014) from its official layout.

Layout read (the extracted ``UrbanSound8K.tar.gz``)::

    <root>/UrbanSound8K/
        metadata/UrbanSound8K.csv     slice_file_name, fsID, start, end, salience, fold, classID, class
        audio/fold1/*.wav ... audio/fold10/*.wav

``root`` may be the folder holding ``UrbanSound8K/`` or ``UrbanSound8K/`` itself. On the command
line ``--data-dir`` is ``root``. The dataset is not downloaded automatically (its licence asks
users to fetch it themselves): https://urbansounddataset.weebly.com/urbansound8k.html.

Split: fold ``test_fold`` (default 10) is the test set, fold ``val_fold`` (default: the fold
before the test fold, 9 for fold 10, 10 for fold 1) the validation set that chooses a run's best
checkpoint, the other eight folds train (the dataset's predefined 10-fold cross-validation; never
shuffle folds together, slices of one recording share a fold). When the validation fold holds no
file (a partial copy) and ``val_fold`` was not given, ``sd.load_dataset`` carves a validation split
from train instead (``ssmdefense.data.splits``). Labels are ``classID`` (0 air_conditioner,
1 car_horn, 2 children_playing, 3 dog_bark, 4 drilling, 5 engine_idling, 6 gun_shot, 7 jackhammer,
8 siren, 9 street_music).

Clips: the real files mix sample rates (8-96 kHz), bit depths (8/16/24-bit PCM, float) and channel
counts; each is averaged to mono, resampled to ``sample_rate`` (16 kHz) and padded with zeros at
the end / cropped keeping its start to ``duration`` seconds (4 s, the longest slice), giving
float32 (N, 1, 64000) in [-1, 1]. These conversions are normal here: they are counted in
``info["converted"]`` and logged at INFO level. Rows are ordered by (fold, file name). Memory:
256 kB per clip, about 2.2 GB for the whole dataset; ``max_per_class`` loads less.

``lazy=True`` (``-D lazy=true``) decodes nothing up front: it returns a
:class:`~ssmdefense.data.base.LazyDataset` with the same files, order, labels, classes and ``info``
settings, whose ``train``/``test`` are :class:`~ssmdefense.data.audio_io.LazyClips` decoding one
clip per item (same conversion) in the ``DataLoader`` workers; creating it reads the CSV and lists
the ten fold folders. ``info["lazy"]`` is true; what only decoding reveals (bad files,
conversions) is not known: ``info["converted"]`` and ``info["skipped_files"]`` say so, and
``info["skipped"]`` counts the CSV rows whose file is missing. ``num_workers`` is not used then.

Bad input, and what the loader does:

============================================================  =====================================
case                                                          result
============================================================  =====================================
``root`` not given                                            error: pass ``--data-dir``/``root=``
``root`` missing, no ``metadata/UrbanSound8K.csv``, no        error naming the expected layout
``audio/`` folder
CSV unreadable, or without a column slice_file_name, fold,    error naming the CSV and the columns
classID or class
a row with a fold outside 1..10, a classID outside 0..9, a    error naming the CSV line and what was
class name that contradicts its classID, an empty or          expected
path-like file name, or one file listed twice with two labels
a CSV row whose file does not exist in ``audio/fold<k>/``     skipped, counted in ``info``, one
                                                              WARNING line naming the first files
unreadable, empty (0 samples) or NaN/Inf WAV                  skipped, counted, same WARNING line
... with ``lazy=True`` (not known until the clip is read)     error when its item is read, naming
                                                              the file: remove it, or load eagerly
stereo / other rate / other bit depth                         converted, counted (INFO log)
WAV files in a fold folder that the CSV does not list         ignored, counted in ``info``
nothing left to load in the train or the test split           error
bad parameter (``test_fold=11``, ``val_fold=test_fold``, ...)  error naming the valid values
``val_fold`` given and no file in it                          error
============================================================  =====================================

All errors are :class:`ssmdefense.errors.SSMDefenseError` with a one-line message.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import SSMDefenseError
from ..validation import is_number, positive
from . import audio_io
from .base import Dataset, LazyDataset
from .files import check_positive_int, choose_per_class, file_dataset, one_line, split_counts, unusable_root

log = logging.getLogger("ssmdefense")

NAME = "urbansound8k"
EPS = 0.001  # default L-inf budget of `ssmdefense defend`: -60 dBFS, as for spoken-digits (docs/audio.md)
FOLDER = "UrbanSound8K"
CSV_PATH = ("metadata", "UrbanSound8K.csv")
FOLDS = range(1, 11)
CLASSES = [
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
]
REQUIRED_COLUMNS = ("slice_file_name", "fold", "classID", "class")
URL = "https://urbansounddataset.weebly.com/urbansound8k.html"
LAYOUT = (
    f"<root>/{FOLDER}/metadata/UrbanSound8K.csv and <root>/{FOLDER}/audio/fold1..fold10/*.wav "
    f"(root may also be {FOLDER}/ itself)"
)


def find_dataset_dir(root) -> Path | None:
    """The ``UrbanSound8K`` folder for ``root`` (the one holding metadata/UrbanSound8K.csv), or None."""
    root = Path(root)
    for candidate in (root / FOLDER, root):
        if candidate.joinpath(*CSV_PATH).is_file():
            return candidate
    return None


def _missing_error(root: Path) -> SSMDefenseError:
    where = unusable_root(root)
    if where is None:
        if (root / FOLDER).is_dir() or (root / "metadata").is_dir() or (root / "audio").is_dir():
            inner = root / FOLDER if (root / FOLDER).is_dir() else root
            where = f"{inner.joinpath(*CSV_PATH)} not found"
        else:
            where = f"no UrbanSound8K found in {root}"
    return SSMDefenseError(f"{NAME}: {where}; expected {LAYOUT}; get the dataset from {URL}")


def _int_field(row, column, csv_path, line, valid: range) -> int:
    raw = (row.get(column) or "").strip()
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value not in valid:
        raise SSMDefenseError(
            f"{NAME}: {csv_path} line {line}: {column} {raw!r} is not an integer in {valid.start}..{valid.stop - 1}"
        )
    return value


def read_metadata(csv_path: Path) -> tuple[list[tuple[int, str, int]], int]:
    """The rows of UrbanSound8K.csv as (fold, slice_file_name, classID), checked (see the module
    docstring), and the number of exact duplicate rows dropped."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in reader.fieldnames]
            if missing:
                found = ", ".join(reader.fieldnames) or "(no header)"
                raise SSMDefenseError(
                    f"{NAME}: {csv_path} has no column {', '.join(missing)}; expected "
                    f"the columns slice_file_name, fsID, start, end, salience, fold, "
                    f"classID, class (found: {found})"
                )
            rows, seen, duplicates = [], {}, 0
            for row in reader:
                line = reader.line_num
                name = (row.get("slice_file_name") or "").strip()
                if not name or "/" in name or "\\" in name or name in (".", ".."):
                    raise SSMDefenseError(
                        f"{NAME}: {csv_path} line {line}: slice_file_name {name!r} is not a file name"
                    )
                fold = _int_field(row, "fold", csv_path, line, FOLDS)
                label = _int_field(row, "classID", csv_path, line, range(len(CLASSES)))
                cls = (row.get("class") or "").strip()
                if cls != CLASSES[label]:
                    raise SSMDefenseError(
                        f"{NAME}: {csv_path} line {line}: classID {label} with class "
                        f"{cls!r} contradicts the dataset's classes (classID {label} is "
                        f"{CLASSES[label]!r})"
                    )
                key = (fold, name)
                if key in seen:
                    if seen[key] != label:
                        raise SSMDefenseError(
                            f"{NAME}: {csv_path} line {line}: fold{fold}/{name} is listed "
                            f"again with classID {label} (earlier: {seen[key]})"
                        )
                    duplicates += 1
                    continue
                seen[key] = label
                rows.append((fold, name, label))
    except SSMDefenseError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SSMDefenseError(f"{NAME}: cannot read {csv_path}: {one_line(exc)}") from None
    if not rows:
        raise SSMDefenseError(f"{NAME}: {csv_path} lists no clips; expected {LAYOUT}")
    return rows, duplicates


def _scan_fold(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as it:
        return {e.name for e in it if e.is_file()}


def urbansound8k(
    *,
    root=None,
    test_fold: int = 10,
    val_fold: int | None = None,
    sample_rate: int = 16000,
    duration: float = 4.0,
    max_per_class: int | None = None,
    num_workers: int | None = None,
    lazy: bool = False,
) -> Dataset | LazyDataset:
    """UrbanSound8K from ``root`` (official layout; see the module docstring).

    ``test_fold``: the fold (1..10) used as test set; ``val_fold``: the validation fold (None: the one
    before ``test_fold``); the other eight train. ``sample_rate``: rate
    every clip is resampled to. ``duration``: seconds every clip is padded/cropped to.
    ``max_per_class``: keep at most this many clips per class and split, a fixed choice (smallest
    SHA-1 of "fold<k>/<file>": same on every machine, spread over folds and recordings).
    ``num_workers``: decoding threads (None: up to 8); not used when ``lazy`` (the ``DataLoader``
    workers decode, ``--workers`` on the command line).
    ``lazy``: return a :class:`LazyDataset` whose items are decoded when read, one clip each,
    instead of decoding every clip now (same files, order, labels and conversion; a broken file
    raises when its item is read instead of being skipped).
    """
    if root is None:
        raise SSMDefenseError(
            f"{NAME}: this dataset is read from disk; give its folder with "
            f"--data-dir DIR (root=DIR in Python), where {LAYOUT}; get it from {URL}"
        )
    if not is_number(test_fold, integer=True, numpy=True) or test_fold not in FOLDS:
        raise SSMDefenseError(f"{NAME}: test_fold must be one of 1..10; got {test_fold!r}")
    test_fold = int(test_fold)
    given_val_fold = val_fold is not None
    if val_fold is None:
        val_fold = test_fold - 1 if test_fold > 1 else FOLDS[-1]
    if not is_number(val_fold, integer=True, numpy=True) or val_fold not in FOLDS or val_fold == test_fold:
        raise SSMDefenseError(
            f"{NAME}: val_fold must be one of 1..10 other than test_fold {test_fold}; got {val_fold!r}"
        )
    val_fold = int(val_fold)
    sample_rate = check_positive_int("sample_rate", sample_rate, NAME)
    positive(f"{NAME}: duration", duration, unit="seconds", numpy=True, error=SSMDefenseError)
    length = int(round(float(duration) * sample_rate))
    if length < 1:
        raise SSMDefenseError(f"{NAME}: duration {duration} s at {sample_rate} Hz is less than one sample")
    max_per_class = check_positive_int("max_per_class", max_per_class, NAME, allow_none=True)
    num_workers = check_positive_int("num_workers", num_workers, NAME, allow_none=True)
    if not isinstance(lazy, bool):
        raise SSMDefenseError(f"{NAME}: lazy must be true or false; got {lazy!r}")

    root = Path(os.path.expanduser(os.fspath(root)))
    base = find_dataset_dir(root)
    if base is None:
        raise _missing_error(root)
    csv_path = base.joinpath(*CSV_PATH)
    audio = base / "audio"
    if not audio.is_dir():
        raise SSMDefenseError(f"{NAME}: {audio} is missing; expected {LAYOUT}")
    rows, duplicates = read_metadata(csv_path)

    on_disk = {fold: _scan_fold(audio / f"fold{fold}") for fold in FOLDS}
    listed = {(fold, name) for fold, name, _ in rows}
    unlisted = sum(
        1 for fold, names in on_disk.items() for n in names if n.lower().endswith(".wav") and (fold, n) not in listed
    )
    missing = [f"fold{fold}/{name}" for fold, name, _ in sorted(rows) if name not in on_disk[fold]]
    present = sorted(r for r in rows if r[1] in on_disk[r[0]])

    splits = {
        "train": [r for r in present if r[0] not in (test_fold, val_fold)],
        "test": [r for r in present if r[0] == test_fold],
        "val": [r for r in present if r[0] == val_fold],
    }
    if not splits["val"]:
        if given_val_fold:
            raise SSMDefenseError(f"{NAME}: no clips in the validation fold {val_fold} in {base}; expected {LAYOUT}")
        del splits["val"]  # a partial copy: sd.load_dataset carves a validation split from train
        splits["train"] = [r for r in present if r[0] != test_fold]
    for split, items in splits.items():  # (fold, file) order: the choice keeps it
        splits[split] = choose_per_class(
            items, max_per_class, label=lambda r: r[2], spread_by=lambda r: f"fold{r[0]}/{r[1]}"
        )

    for split, items in splits.items():
        if not items:
            what = f"fold {test_fold}" if split == "test" else f"the folds other than {test_fold} and {val_fold}"
            extra = f" ({len(missing)} CSV rows name files that do not exist)" if missing else ""
            raise SSMDefenseError(
                f"{NAME}: no clips for the {split} split ({what}) in {base}{extra}; expected {LAYOUT}"
            )
    files = {  # the selection: (paths, labels) per split
        split: ([audio / f"fold{fold}" / name for fold, name, _ in items], np.asarray([r[2] for r in items], np.int64))
        for split, items in splits.items()
    }
    missing_skips = {"missing_file": len(missing)} if missing else {}
    if lazy:  # nothing decoded: what decoding would reveal (bad files, conversions) is unknown
        arrays = {split: (None, y) for split, (_, y) in files.items()}
        _warn(base, missing, len(rows), [], 0, audio)
        unknown = audio_io.UNKNOWN_WHEN_LAZY
        decoded = {"skipped": missing_skips, "skipped_files": unknown, "converted": unknown}
    else:
        arrays, skipped, total, conv = audio_io.decode_splits(
            NAME, files, sample_rate=sample_rate, length=length, num_workers=num_workers, root=audio
        )
        _warn(base, missing, len(rows), skipped, total, audio)
        log.info(
            "%s: converted to mono %d Hz, %d samples: %d resampled, %d downmixed, %d padded, %d cropped",
            NAME,
            sample_rate,
            length,
            conv["resampled"],
            conv["downmixed"],
            conv["padded"],
            conv["cropped"],
        )
        decoded = {
            "skipped": {**missing_skips, **Counter(r for _, r, _ in skipped)},
            "skipped_files": (
                [{"path": m, "reason": "missing_file"} for m in missing[:100]]
                + audio_io.skipped_examples(skipped, audio)
            )[:100],
            "converted": conv,
        }

    info = {
        "source": "UrbanSound8K (Salamon, Jacoby and Bello 2014), predefined folds",
        "root": str(base),
        **split_counts(arrays, len(CLASSES)),
        "folds": {
            "train": sorted({r[0] for r in splits["train"]}),
            "val": [val_fold] if "val" in splits else [],
            "test": [test_fold],
        },
        "lazy": lazy,
        "skipped": decoded["skipped"],
        "skipped_files": decoded["skipped_files"],
        "duplicate_csv_rows": duplicates,
        "unlisted_files": unlisted,
        "converted": decoded["converted"],
        "settings": {
            "test_fold": test_fold,
            "val_fold": val_fold if "val" in splits else None,
            "sample_rate": sample_rate,
            "duration": float(duration),
            "length": length,
            "max_per_class": max_per_class,
            **audio_io.CONVERSION,
        },
    }
    validation = None
    if "val" in splits:
        validation = {
            "source": "official",
            "description": f"UrbanSound8K fold {val_fold}",
            "fold": val_fold,
            "val": len(arrays["val"][1]),
        }
    decoder = audio_io.ClipDecoder(NAME, sample_rate, length)
    return file_dataset(
        NAME, files if lazy else arrays, CLASSES, decoder, lazy=lazy, eps=EPS, info=info, validation=validation
    )


def _warn(base: Path, missing: list[str], listed: int, skipped: list, total: int, audio: Path) -> None:
    parts = []
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        parts.append(f"skipped {len(missing)} of {listed} CSV rows whose file does not exist ({shown})")
    if skipped:
        parts.append(audio_io.describe_skips(skipped, total, audio))
    if parts:
        log.warning("%s: %s (in %s)", NAME, "; ".join(parts), base)
