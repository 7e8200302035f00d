"""Dataset plugin ``speech-commands``: Speech Commands v0.02 (Warden 2018) from its official layout.

Layout read (what ``torchaudio.datasets.SPEECHCOMMANDS`` downloads and extracts)::

    <root>/SpeechCommands/speech_commands_v0.02/
        <word>/<speaker>_nohash_<n>.wav      16 kHz mono, at most 1 s
        validation_list.txt                   one "<word>/<file>.wav" per line
        testing_list.txt
        _background_noise_/*.wav              long noise recordings: not a class, ignored

``root`` may be the folder holding ``SpeechCommands/`` (torchaudio's convention), ``SpeechCommands/``
itself, or ``speech_commands_v0.02/`` itself. On the command line ``--data-dir`` is ``root``.

Split (the official one): test = the files in ``testing_list.txt``, validation = the files in
``validation_list.txt`` (the split that chooses a run's best checkpoint, ``ssmdefense.data.splits``),
train = every other file. ``test_list="validation"`` swaps the roles of the two lists. When the
validation list names no file of the chosen words, there is no official validation split and
``sd.load_dataset`` carves one from train (``val_fraction``).

Classes: ``subset="digits"`` (default) the ten words zero ... nine, labels in that order;
``subset="all"`` the 35 words of v0.02 sorted alphabetically (backward=0 ... zero=34).

Clips: float32 (N, 1, 16000) in [-1, 1] at 16 kHz (``sample_rate`` may ask for another rate; the
clips stay 1 s long); shorter clips are padded with zeros at the end, longer ones keep their first
second (see :mod:`ssmdefense.data.audio_io`). Rows are ordered by (label, relative path). Memory:
64 kB per clip, so about 2 GB for ``subset="digits"`` and 6 GB for ``"all"``; ``max_per_class``
loads less (a quick run: ``-D max_per_class=200``).

``lazy=True`` (``-D lazy=true``) decodes nothing up front: it returns a
:class:`~ssmdefense.data.base.LazyDataset` with the same files, order, labels, classes and ``info``
settings, whose ``train``/``test`` are :class:`~ssmdefense.data.audio_io.LazyClips` decoding one
clip per item (same conversion) in the ``DataLoader`` workers; creating it only lists the word
folders and reads the two list files. Memory holds the paths and labels (about 100 bytes per
clip) plus the batches in flight. ``info["lazy"]`` is true; what only decoding reveals (bad files,
conversions) is not known: ``info["converted"]`` and ``info["skipped_files"]`` say so, and
``info["skipped"]`` counts list entries only. ``num_workers`` (the eager load's decoding threads)
is not used: the ``DataLoader`` workers decode (``--workers`` on the command line).

Bad input, and what the loader does:

============================================================  =====================================
case                                                          result
============================================================  =====================================
``root`` not given                                            error: pass ``--data-dir``/``root=``
``root`` missing, or no ``speech_commands_v0.02`` under it    error naming the layout and
                                                              ``-D download=true``
``download=True`` and the download fails (no network)         error naming the URL and the cause
``testing_list.txt`` or ``validation_list.txt`` missing       error (the split would be wrong)
a class folder of the chosen subset missing                   error listing the missing words
unreadable, empty (0 samples) or NaN/Inf WAV                  skipped, counted in ``info``, one
                                                              WARNING line naming the first files
... with ``lazy=True`` (not known until the clip is read)     error when its item is read, naming
                                                              the file: remove it, or load eagerly
stereo or non-16 kHz WAV (the dataset is 16 kHz mono)         downmixed/resampled, counted in
                                                              ``info``, part of the WARNING line
                                                              (``lazy=True``: converted, not
                                                              counted)
list entry whose file does not exist, whose word is unknown,  skipped, counted in ``info`` and in
or that is not "<word>/<file>"                                the WARNING line
nothing left to load in the train or the test split           error
bad parameter (``subset="foo"``, ``max_per_class=0``, ...)    error listing the valid values
============================================================  =====================================

All errors are :class:`ssmdefense.errors.SSMDefenseError` with a one-line message.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import SSMDefenseError
from . import audio_io
from .base import Dataset, LazyDataset
from .files import (
    check_positive_int,
    choose_per_class,
    file_dataset,
    one_line,
    paths_and_labels,
    split_counts,
    unusable_root,
)

log = logging.getLogger("ssmdefense")

NAME = "speech-commands"
EPS = 0.001  # default L-inf budget of `ssmdefense defend`: -60 dBFS, as for spoken-digits (docs/audio.md)
SAMPLE_RATE = 16000  # the dataset's own rate
FOLDER = "SpeechCommands"
VERSION_FOLDER = "speech_commands_v0.02"
URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
LIST_FILES = {"testing": "testing_list.txt", "validation": "validation_list.txt"}

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ALL_WORDS = sorted(
    [
        "backward",
        "bed",
        "bird",
        "cat",
        "dog",
        "down",
        "eight",
        "five",
        "follow",
        "forward",
        "four",
        "go",
        "happy",
        "house",
        "learn",
        "left",
        "marvin",
        "nine",
        "no",
        "off",
        "on",
        "one",
        "right",
        "seven",
        "sheila",
        "six",
        "stop",
        "three",
        "tree",
        "two",
        "up",
        "visual",
        "wow",
        "yes",
        "zero",
    ]
)
SUBSETS = {"digits": DIGITS, "all": ALL_WORDS}

UNKNOWN_WHEN_LAZY = audio_io.UNKNOWN_WHEN_LAZY

LAYOUT = (
    f"<root>/{FOLDER}/{VERSION_FOLDER}/<word>/*.wav with testing_list.txt and "
    f"validation_list.txt (root may also be {VERSION_FOLDER}/ itself)"
)


def _is_dataset_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in LIST_FILES.values()):
        return True
    return sum((path / word).is_dir() for word in ALL_WORDS) >= 3


def find_dataset_dir(root) -> Path | None:
    """The ``speech_commands_v0.02`` folder for ``root`` (see the module docstring), or None."""
    root = Path(root)
    for candidate in (root / FOLDER / VERSION_FOLDER, root / VERSION_FOLDER, root):
        if _is_dataset_dir(candidate):
            return candidate
    return None


def _missing_error(root: Path) -> SSMDefenseError:
    where = unusable_root(root)
    if where is None:
        v1 = [p for p in (root / FOLDER / "speech_commands_v0.01", root / "speech_commands_v0.01") if p.is_dir()]
        v2 = [p for p in (root / FOLDER / VERSION_FOLDER, root / VERSION_FOLDER) if p.is_dir()]
        if v2:
            where = f"{v2[0]} has neither the list files nor the word folders (an incomplete extraction?)"
        elif v1:
            where = f"{root} holds {v1[0].name}, not {VERSION_FOLDER}"
        else:
            where = f"no Speech Commands v0.02 found in {root}"
    return SSMDefenseError(
        f"{NAME}: {where}; expected {LAYOUT}; download it with -D download=true (download=True in Python) or from {URL}"
    )


def _download(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        import torchaudio.datasets

        torchaudio.datasets.SPEECHCOMMANDS(str(root), url=VERSION_FOLDER, download=True)
    except Exception as exc:  # URLError, checksum mismatch, broken archive, torchaudio missing
        cause = one_line(f"{type(exc).__name__}: {exc}")
        raise SSMDefenseError(
            f"{NAME}: downloading {URL} into {root / FOLDER / VERSION_FOLDER} failed "
            f"({cause}); check the network, or download and extract it by hand "
            f"so that {LAYOUT}"
        ) from None


def _read_list(base: Path, which: str) -> list[str]:
    path = base / LIST_FILES[which]
    if not path.is_file():
        raise SSMDefenseError(
            f"{NAME}: {path} is missing; the official split needs both "
            f"{LIST_FILES['testing']} and {LIST_FILES['validation']} in {base} "
            f"(expected {LAYOUT})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SSMDefenseError(f"{NAME}: cannot read {path}: {one_line(exc)}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _normalise_entry(entry: str) -> tuple[str, str] | None:
    """'yes/0a7c2a8d_nohash_0.wav' -> ('yes', '0a7c2a8d_nohash_0.wav'); None if malformed."""
    entry = entry.replace("\\", "/")
    if entry.startswith("/"):
        return None
    entry = posixpath.normpath(entry)
    parts = entry.split("/")
    if len(parts) != 2 or not all(parts) or ".." in parts:
        return None
    return parts[0], parts[1]


def _scan_word(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.name.lower().endswith(".wav") and e.is_file())


@dataclass
class Selection:
    """Which files a load reads, known from directory listings and the two list files alone:
    ``splits`` maps "train"/"test" (and "val", when its list names any file) to (label, relative
    path) pairs in (label, path) order."""

    base: Path
    words: list[str]
    splits: dict[str, list[tuple[int, str]]]
    val_list: str  # the list file of the validation split
    list_problems: dict[str, list[str]]


def select_files(*, root, subset: str, test_list: str, max_per_class: int | None, download: bool) -> Selection:
    """Find the dataset under ``root`` (downloading it when asked), scan the word folders, read the
    list files and compute the official split and the ``max_per_class`` choice; decodes nothing.
    Parameters are those of :func:`speech_commands`, already checked."""
    root = Path(os.path.expanduser(os.fspath(root)))
    base = find_dataset_dir(root)
    if base is None and download:
        _download(root)
        base = find_dataset_dir(root)
    if base is None:
        raise _missing_error(root)

    words = SUBSETS[subset]
    label_of = {w: i for i, w in enumerate(words)}
    missing = [w for w in words if not (base / w).is_dir()]
    if missing:
        raise SSMDefenseError(
            f"{NAME}: {base} has no folder for {len(missing)} word(s) of subset "
            f"{subset!r}: {', '.join(missing)}; expected {LAYOUT}"
        )
    files = {w: _scan_word(base / w) for w in words}
    present = {f"{w}/{name}" for w, names in files.items() for name in names}

    val_name = "validation" if test_list == "testing" else "testing"
    list_problems = {"missing_list_entries": [], "unknown_word_list_entries": [], "malformed_list_entries": []}

    def read_entries(which: str) -> set[str]:
        kept = set()
        for raw in _read_list(base, which):
            parsed = _normalise_entry(raw)
            if parsed is None:
                list_problems["malformed_list_entries"].append(f"{LIST_FILES[which]}: {raw}")
                continue
            word, name = parsed
            if word not in label_of:
                if word not in ALL_WORDS:
                    list_problems["unknown_word_list_entries"].append(f"{LIST_FILES[which]}: {raw}")
                continue  # a word of the other subset: not ours
            rel = f"{word}/{name}"
            if rel not in present:
                list_problems["missing_list_entries"].append(f"{LIST_FILES[which]}: {raw}")
                continue
            kept.add(rel)
        return kept

    test_set = read_entries(test_list)
    val_set = read_entries(val_name) - test_set
    splits = {
        "train": sorted((label_of[r.split("/")[0]], r) for r in present - test_set - val_set),
        "test": sorted((label_of[r.split("/")[0]], r) for r in test_set),
    }
    if val_set:
        splits["val"] = sorted((label_of[r.split("/")[0]], r) for r in val_set)
    for split, items in splits.items():  # (label, path) order: the choice keeps it
        splits[split] = choose_per_class(items, max_per_class, label=lambda it: it[0], spread_by=lambda it: it[1])
    for split in ("train", "test"):
        if not splits[split]:
            raise SSMDefenseError(
                f"{NAME}: no clips for the {split} split in {base} (subset {subset!r}, "
                f"test_list {test_list!r}); expected {LAYOUT}"
            )
    return Selection(base, list(words), splits, LIST_FILES[val_name], list_problems)


def speech_commands(
    *,
    root=None,
    subset: str = "digits",
    test_list: str = "testing",
    max_per_class: int | None = None,
    sample_rate: int = SAMPLE_RATE,
    download: bool = False,
    num_workers: int | None = None,
    lazy: bool = False,
) -> Dataset | LazyDataset:
    """Speech Commands v0.02 from ``root`` (official layout and split; see the module docstring).

    ``subset``: "digits" (zero..nine) or "all" (35 words, alphabetical). ``test_list``: "testing"
    (official) or "validation": which list file is the test split; the other list is the validation split.
    ``max_per_class``: keep at most this many clips per class and split, a fixed choice (smallest
    SHA-1 of the relative path: same on every machine, spread over speakers). ``sample_rate``:
    output rate (clips stay 1 s). ``download``: fetch the archive through torchaudio when missing.
    ``num_workers``: decoding threads (None: up to 8); not used when ``lazy`` (the ``DataLoader``
    workers decode, ``--workers`` on the command line).
    ``lazy``: return a :class:`LazyDataset` whose items are decoded when read, one clip each,
    instead of decoding every clip now (same files, order, labels and conversion; a broken file
    raises when its item is read instead of being skipped).
    """
    if root is None:
        raise SSMDefenseError(
            f"{NAME}: this dataset is read from disk; give its folder with "
            f"--data-dir DIR (root=DIR in Python), where {LAYOUT}"
        )
    if subset not in SUBSETS:
        raise SSMDefenseError(f"{NAME}: unknown subset {subset!r}; valid: {', '.join(SUBSETS)}")
    if test_list not in LIST_FILES:
        raise SSMDefenseError(f"{NAME}: unknown test_list {test_list!r}; valid: {', '.join(LIST_FILES)}")
    for flag, value in (("download", download), ("lazy", lazy)):
        if not isinstance(value, bool):
            raise SSMDefenseError(f"{NAME}: {flag} must be true or false; got {value!r}")
    max_per_class = check_positive_int("max_per_class", max_per_class, NAME, allow_none=True)
    sample_rate = check_positive_int("sample_rate", sample_rate, NAME)
    num_workers = check_positive_int("num_workers", num_workers, NAME, allow_none=True)

    sel = select_files(root=root, subset=subset, test_list=test_list, max_per_class=max_per_class, download=download)
    base = sel.base
    list_skips = {k: len(v) for k, v in sel.list_problems.items() if v}
    files = paths_and_labels(base, sel.splits)  # the selection: (paths, labels) per split
    if lazy:  # nothing decoded: what decoding would reveal (bad files, conversions) is unknown
        labelled = {split: (None, y) for split, (_, y) in files.items()}
        _warn(base, [], 0, sel.list_problems, 0, 0)
        decoded = {
            "skipped": list_skips,  # list entries only: a bad file raises when its item is read
            "skipped_files": UNKNOWN_WHEN_LAZY,
            "converted": UNKNOWN_WHEN_LAZY,
        }
    else:
        labelled, skipped, total, conv = audio_io.decode_splits(
            NAME, files, sample_rate=sample_rate, length=sample_rate, num_workers=num_workers, root=base
        )
        odd_rate = sum(n for r, n in conv["source_rates"].items() if r != SAMPLE_RATE)
        multi = sum(n for c, n in conv["source_channels"].items() if c != 1)
        _warn(base, skipped, total, sel.list_problems, odd_rate, multi)
        decoded = {
            "skipped": {**Counter(r for _, r, _ in skipped), **list_skips},
            "skipped_files": audio_io.skipped_examples(skipped, base),
            "converted": {**conv, "not_16k": odd_rate, "not_mono": multi},
        }

    info = {
        "source": "Speech Commands v0.02 (Warden 2018), official split",
        "root": str(base),
        "lazy": lazy,
        **split_counts(labelled, len(sel.words)),
        "validation": {"list": sel.val_list, "files": len(sel.splits.get("val", []))},
        "skipped": decoded["skipped"],
        "skipped_files": decoded["skipped_files"],
        "skipped_list_entries": [e for v in sel.list_problems.values() for e in v][:100],
        "converted": decoded["converted"],
        "settings": {
            "subset": subset,
            "test_list": test_list,
            "max_per_class": max_per_class,
            "sample_rate": sample_rate,
            "length": sample_rate,
            **audio_io.CONVERSION,
        },
    }
    validation = None
    if "val" in sel.splits:  # the official validation split (else sd.load_dataset carves one)
        n_val = len(labelled["val"][1])
        validation = {"source": "official", "description": f"Speech Commands' {sel.val_list}", "val": n_val}
    decoder = audio_io.ClipDecoder(NAME, sample_rate, sample_rate)  # 1 s clips
    return file_dataset(
        NAME, files if lazy else labelled, sel.words, decoder, lazy=lazy, eps=EPS, info=info, validation=validation
    )


def _warn(base, skipped, total, list_problems, odd_rate, multi) -> None:
    parts = []
    if skipped:
        parts.append(audio_io.describe_skips(skipped, total, base))
    labels = {
        "missing_list_entries": "naming no existing file",
        "unknown_word_list_entries": "naming an unknown word",
        "malformed_list_entries": "not of the form <word>/<file>.wav",
    }
    for key, entries in list_problems.items():
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            parts.append(f"skipped {len(entries)} list entries {labels[key]} ({shown})")
    if odd_rate or multi:
        parts.append(
            f"converted files that are not 16 kHz mono: {odd_rate} resampled from another "
            f"rate, {multi} downmixed from several channels"
        )
    if parts:
        log.warning("%s: %s (in %s)", NAME, "; ".join(parts), base)
