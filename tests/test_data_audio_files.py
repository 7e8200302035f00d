"""Loaders of real audio datasets from their official folder layouts: ``speech-commands`` and
``urbansound8k``, and their shared decoding helpers (``ssmdefense.data.audio_io``).

The tests write small trees of real WAV files (tones whose frequency encodes the class) in the
official layouts and never download. ``write_speech_commands_tree`` and
``write_urbansound8k_tree`` are plain functions other test files may import.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import ssmdefense as sd
from ssmdefense.data import audio_io
from ssmdefense.data.speech_commands import ALL_WORDS, DIGITS
from ssmdefense.data.urbansound8k import CLASSES as US8K_CLASSES
from ssmdefense.data.urbansound8k import urbansound8k
from ssmdefense.errors import SSMDefenseError

# ---------------------------------------------------------------------------------------------
# Tree writers (importable by other test files)
# ---------------------------------------------------------------------------------------------

SC_PARTS = ("SpeechCommands", "speech_commands_v0.02")


def word_frequency(word: str) -> float:
    """The tone frequency (Hz) of the clips of ``word``: 250 + 100 * its index among the 35 words
    (250 .. 3650 Hz, below 4 kHz so it survives resampling to 8 kHz)."""
    return 250.0 + 100.0 * ALL_WORDS.index(word)


def class_frequency(label: int) -> float:
    """The tone frequency (Hz) of UrbanSound8K class ``label``: 300 .. 3000 Hz."""
    return 300.0 + 300.0 * label


def tone(
    freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5, seed: int = 0, channels: int = 1
) -> np.ndarray:
    """A sine at ``freq`` with a little noise, (frames,) or (frames, channels); channel c has
    amplitude ``amplitude / (c + 1)`` (so a stereo clip downmixes to 0.75 * amplitude)."""
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(seed)
    wave = amplitude * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + 0.005 * rng.standard_normal(n)
    if channels == 1:
        return wave.astype(np.float32)
    return np.stack([wave / (c + 1) for c in range(channels)], axis=1).astype(np.float32)


def write_speech_commands_tree(
    root,
    words=DIGITS,
    per_word: int = 3,
    *,
    n_test: int = 1,
    n_valid: int = 1,
    sample_rate: int = 16000,
    background_noise: bool = True,
) -> Path:
    """Write a Speech Commands v0.02 tree under ``root`` (``root/SpeechCommands/speech_commands_v0.02``,
    returned): ``per_word`` clips per word (16-bit mono WAV, a tone at ``word_frequency(word)``, 1 s
    or 0.75 s long), the first ``n_test`` of each word in testing_list.txt, the next ``n_valid`` in
    validation_list.txt, the rest train; plus ``_background_noise_/`` and a README like the real
    archive. The defaults are loadable by ``sd.load_dataset("speech-commands", root=root)``."""
    base = Path(root).joinpath(*SC_PARTS)
    base.mkdir(parents=True, exist_ok=True)
    lists = {"testing": [], "validation": []}
    for w_index, word in enumerate(words):
        (base / word).mkdir(exist_ok=True)
        for j in range(per_word):
            name = f"{(w_index * 7919 + j * 104729) % 16**8:08x}_nohash_{j % 3}.wav"
            seconds = 1.0 if j % 2 == 0 else 0.75
            sf.write(
                base / word / name,
                tone(word_frequency(word), seconds, sample_rate, seed=w_index * 100 + j),
                sample_rate,
                subtype="PCM_16",
            )
            if j < n_test:
                lists["testing"].append(f"{word}/{name}")
            elif j < n_test + n_valid:
                lists["validation"].append(f"{word}/{name}")
    for which, entries in lists.items():
        (base / f"{which}_list.txt").write_text("".join(e + "\n" for e in sorted(entries)))
    if background_noise:
        (base / "_background_noise_").mkdir(exist_ok=True)
        noise = (0.1 * np.random.default_rng(1).standard_normal(2 * sample_rate)).astype(np.float32)
        sf.write(base / "_background_noise_" / "white_noise.wav", noise, sample_rate)
    (base / "README.md").write_text("Speech Commands test tree\n")
    return base


# (sample rate, libsndfile subtype, channels) cycled over the clips: the real mix of UrbanSound8K
US8K_FORMATS = (
    (8000, "PCM_U8", 1),
    (22050, "PCM_16", 2),
    (44100, "PCM_24", 1),
    (48000, "FLOAT", 2),
    (16000, "PCM_16", 1),
)
US8K_DURATIONS = (0.5, 2.25, 4.0, 4.6)  # shorter, equal to and longer than 4 s
US8K_HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]


def write_urbansound8k_tree(
    root, per_class: int = 1, folds=(1, 2, 10), *, formats=US8K_FORMATS, durations=US8K_DURATIONS
) -> Path:
    """Write an UrbanSound8K tree under ``root`` (``root/UrbanSound8K``, returned): ``per_class``
    clips per class and fold in ``audio/fold<k>/`` named like the real ones (fsID-classID-0-slice.wav),
    each a tone at ``class_frequency(classID)``, cycling through ``formats`` (rates 8k..48k, 8/16/24-bit
    PCM and float, mono and stereo) and ``durations``; and ``metadata/UrbanSound8K.csv``. Folds 1, 2
    and 10 by default, so the default parameters (test_fold=10) load it."""
    base = Path(root) / "UrbanSound8K"
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    rows, i = [], 0
    for fold in folds:
        (base / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        for label, cls in enumerate(US8K_CLASSES):
            for j in range(per_class):
                rate, subtype, channels = formats[i % len(formats)]
                seconds = durations[i % len(durations)]
                fsid = 100000 + 37 * i
                name = f"{fsid}-{label}-0-{j}.wav"
                sf.write(
                    base / "audio" / f"fold{fold}" / name,
                    tone(class_frequency(label), seconds, rate, seed=i, channels=channels),
                    rate,
                    subtype=subtype,
                )
                rows.append([name, fsid, 0.0, seconds, 1, fold, label, cls])
                i += 1
    write_us8k_csv(base, rows)
    return base


def write_us8k_csv(base: Path, rows, header=US8K_HEADER) -> None:
    with open(Path(base) / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def read_us8k_csv(base: Path) -> list[list[str]]:
    with open(Path(base) / "metadata" / "UrbanSound8K.csv", newline="") as f:
        return list(csv.reader(f))[1:]


# ---------------------------------------------------------------------------------------------
# Helpers of the checks
# ---------------------------------------------------------------------------------------------


def peak_frequency(wave: np.ndarray, sample_rate: int) -> float:
    """The frequency (Hz) of the largest FFT bin of ``wave`` (T,), over its non-padded part."""
    nz = np.flatnonzero(wave)
    wave = wave[: nz[-1] + 1] if nz.size else wave
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * sample_rate / len(wave))


def assert_labels_match_tones(x, y, sample_rate, freq_of, tol=15.0):
    for clip, label in zip(x[:, 0], y):
        peak = peak_frequency(clip, sample_rate)
        assert abs(peak - freq_of(int(label))) < tol, (label, peak)


def assert_audio_dataset(data, n_train, n_test, length, nb_classes):
    assert data.x_train.shape == (n_train, 1, length) and data.x_test.shape == (n_test, 1, length)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    for x in (data.x_train, data.x_test):
        assert np.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0 and np.abs(x).max() > 0.2
    assert data.nb_classes == nb_classes and len(data.classes) == nb_classes
    assert data.clip_values == (-1.0, 1.0) and data.sequence == "mel" and data.eps == 0.001
    assert data.is_audio and data.input_shape == (1, length)


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == "ssmdefense" and r.levelno >= logging.WARNING]


@contextmanager
def one_line_error(match):
    """pytest.raises for an SSMDefenseError whose message matches ``match`` and is one line."""
    with pytest.raises(sd.SSMDefenseError, match=match) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------
# audio_io
# ---------------------------------------------------------------------------------------------


def test_fix_length_pads_at_end_and_crops_keeping_start():
    w = np.arange(1, 6, dtype=np.float32)
    assert audio_io.fix_length(w, 5) is w
    assert audio_io.fix_length(w, 8).tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
    assert audio_io.fix_length(w, 3).tolist() == [1, 2, 3]
    assert audio_io.fix_length(w, 8, align="center").tolist() == [0, 1, 2, 3, 4, 5, 0, 0]
    assert audio_io.fix_length(w, 3, align="center").tolist() == [2, 3, 4]
    with pytest.raises(ValueError, match="align"):
        audio_io.fix_length(w, 3, align="middle")


@pytest.mark.parametrize(
    "rate, subtype, channels", [(8000, "PCM_U8", 1), (22050, "PCM_24", 2), (48000, "FLOAT", 2), (16000, "PCM_16", 1)]
)
def test_read_wav_downmixes_and_resamples(tmp_path, rate, subtype, channels):
    path = tmp_path / "a.wav"
    sf.write(path, tone(1000.0, 0.5, rate, amplitude=0.8, channels=channels), rate, subtype=subtype)
    wave = audio_io.read_wav(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == math.ceil(round(0.5 * rate) * 16000 / rate)
    assert abs(peak_frequency(wave, 16000) - 1000.0) < 5
    expected_amplitude = 0.8 if channels == 1 else 0.8 * 0.75  # channels averaged
    assert abs(np.abs(wave[200:-200]).max() - expected_amplitude) < 0.03
    clip = audio_io.decode(path, 16000)
    assert (clip.source_rate, clip.channels, clip.subtype) == (rate, channels, subtype)


def test_decode_rejects_bad_files_and_falls_back_to_librosa(tmp_path, monkeypatch):
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 4)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = tone(440, 0.1, 16000)
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = tone(440, 0.1, 16000)
    inf[3] = np.inf
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    loud = tone(440, 0.1, 16000, amplitude=3.0)
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    for name, reason in [
        ("garbage", "unreadable"),
        ("empty", "empty"),
        ("nan", "non_finite"),
        ("inf", "non_finite"),
        ("missing", "unreadable"),
    ]:
        with pytest.raises(audio_io.AudioReadError) as info:
            audio_io.decode(tmp_path / f"{name}.wav", 16000)
        assert info.value.reason == reason and f"{name}.wav" in str(info.value) and "\n" not in str(info.value)
    loud_clip = audio_io.decode(tmp_path / "loud.wav", 16000)
    assert loud_clip.clipped and loud_clip.wave.max() == 1.0 and loud_clip.wave.min() == -1.0

    # soundfile cannot read it: librosa.load (audioread) is tried
    sf.write(tmp_path / "ok.wav", tone(440, 0.25, 8000), 8000, subtype="PCM_16")

    class Refuses:
        def __init__(self, *args, **kwargs):
            raise sf.SoundFileRuntimeError("pretend libsndfile cannot read this")

    monkeypatch.setattr(sf, "SoundFile", Refuses)
    clip = audio_io.decode(tmp_path / "ok.wav", 16000)
    assert clip.subtype == "librosa" and clip.source_rate == 8000 and clip.wave.shape == (4000,)
    assert abs(peak_frequency(clip.wave, 16000) - 440) < 5


def test_load_clips_keeps_order_and_lists_skips(tmp_path):
    paths = []
    for k in range(12):
        p = tmp_path / f"{k:02d}.wav"
        sf.write(p, tone(200 + 100 * k, 0.2, 16000), 16000)
        paths.append(p)
    paths.insert(5, tmp_path / "missing.wav")
    serial = audio_io.load_clips(paths, sample_rate=16000, length=4000, num_workers=1)
    threaded = audio_io.load_clips(paths, sample_rate=16000, length=4000, num_workers=4)
    assert np.array_equal(serial.x, threaded.x) and serial.x.shape == (12, 1, 4000)
    assert serial.kept.tolist() == [i for i in range(13) if i != 5]
    assert [(Path(p).name, r) for p, r, _ in threaded.skipped] == [("missing.wav", "unreadable")]
    assert threaded.padded == 12 and threaded.resampled == 0
    for row, k in zip(threaded.x[:, 0], range(12)):
        assert abs(peak_frequency(row, 16000) - (200 + 100 * k)) < 10


# ---------------------------------------------------------------------------------------------
# speech-commands
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sc_digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc_digits")
    write_speech_commands_tree(root, DIGITS, per_word=4)  # per word: 1 test, 1 validation, 2 train
    return root


def _expected_split(base: Path, rels) -> np.ndarray:
    """What the loader must return for these relative paths (already in (label, path) order)."""
    out = np.zeros((len(rels), 1, 16000), np.float32)
    for i, rel in enumerate(rels):
        wave, rate = sf.read(base / rel, dtype="float32")
        out[i, 0, : len(wave)] = wave
    return out


def test_speech_commands_digits_official_split(sc_digits):
    data = sd.load_dataset("speech-commands", root=str(sc_digits))
    assert_audio_dataset(data, n_train=20, n_test=10, length=16000, nb_classes=10)
    assert data.name == "speech-commands" and data.sample_rate == 16000 and data.classes == DIGITS
    assert data.y_test.tolist() == list(range(10)) and data.y_train.tolist() == [k for k in range(10) for _ in (0, 1)]
    assert_labels_match_tones(data.x_train, data.y_train, 16000, lambda k: word_frequency(DIGITS[k]))
    assert_labels_match_tones(data.x_test, data.y_test, 16000, lambda k: word_frequency(DIGITS[k]))
    # exactly the files of testing_list.txt in test, of validation_list.txt in validation, the rest in train
    base = sc_digits.joinpath(*SC_PARTS)
    testing = (base / "testing_list.txt").read_text().split()
    validation = (base / "validation_list.txt").read_text().split()
    by_label = lambda rels: sorted(rels, key=lambda r: (DIGITS.index(r.split("/")[0]), r))  # noqa: E731
    train = [
        f"{w}/{p.name}"
        for w in DIGITS
        for p in sorted((base / w).glob("*.wav"))
        if f"{w}/{p.name}" not in testing + validation
    ]
    assert np.array_equal(data.x_test, _expected_split(base, by_label(testing)))
    assert np.array_equal(data.x_train, _expected_split(base, by_label(train)))
    assert np.array_equal(data.x_val, _expected_split(base, by_label(validation)))
    assert data.validation == {"source": "official", "description": "Speech Commands' validation_list.txt", "val": 10}
    # 0.75 s clips are zero-padded at the end
    assert (np.abs(data.x_train[:, 0, 12000:]).max(axis=1) == 0).sum() == 10
    info = data.info
    assert info["root"] == str(base) and info["counts"] == {"train": 20, "test": 10, "val": 10}
    assert info["validation"] == {"list": "validation_list.txt", "files": 10}
    assert info["per_class"]["train"] == [2] * 10 and info["skipped"] == {}
    assert info["converted"]["resampled"] == 0 and info["converted"]["downmixed"] == 0
    assert info["settings"]["subset"] == "digits" and info["settings"]["sample_rate"] == 16000


def test_speech_commands_root_variants_and_validation_list(sc_digits):
    ref = sd.load_dataset("speech-commands", root=sc_digits)
    for root in (sc_digits / "SpeechCommands", sc_digits.joinpath(*SC_PARTS)):
        other = sd.load_dataset("speech-commands", root=root)
        assert np.array_equal(other.x_test, ref.x_test) and np.array_equal(other.y_train, ref.y_train)
    val = sd.load_dataset("speech-commands", root=sc_digits, test_list="validation")
    assert val.info["validation"] == {"list": "testing_list.txt", "files": 10}
    assert np.array_equal(val.x_val, ref.x_test) and np.array_equal(val.x_test, ref.x_val)  # the roles swap
    assert val.x_test.shape == (10, 1, 16000) and not np.array_equal(val.x_test, ref.x_test)
    assert np.array_equal(val.x_train, ref.x_train)  # train = neither list, whichever tests


def test_speech_commands_all_words_and_max_per_class(tmp_path):
    write_speech_commands_tree(tmp_path, ALL_WORDS, per_word=4)
    (tmp_path.joinpath(*SC_PARTS) / "not_a_word").mkdir()  # ignored: not one of the 35 words
    data = sd.load_dataset("speech-commands", root=tmp_path, subset="all")
    assert_audio_dataset(data, n_train=70, n_test=35, length=16000, nb_classes=35)
    assert data.classes == ALL_WORDS and data.classes[0] == "backward" and data.classes[-1] == "zero"
    assert_labels_match_tones(data.x_train, data.y_train, 16000, lambda k: word_frequency(ALL_WORDS[k]))
    assert_labels_match_tones(data.x_test, data.y_test, 16000, lambda k: word_frequency(ALL_WORDS[k]))
    # the digits subset of the same tree: labels zero..nine, not alphabetical
    digits = sd.load_dataset("speech-commands", root=tmp_path)
    assert digits.nb_classes == 10 and digits.classes == DIGITS and len(digits.y_train) == 20
    assert_labels_match_tones(digits.x_test, digits.y_test, 16000, lambda k: word_frequency(DIGITS[k]))
    one = sd.load_dataset("speech-commands", root=tmp_path, max_per_class=1)
    assert one.info["per_class"] == {"train": [1] * 10, "test": [1] * 10, "val": [1] * 10}
    again = sd.load_dataset("speech-commands", root=tmp_path, max_per_class=1)
    assert np.array_equal(one.x_train, again.x_train)  # deterministic choice
    train_rows = {row.tobytes() for row in digits.x_train}
    assert all(row.tobytes() in train_rows for row in one.x_train)  # a subset of the full split


def test_speech_commands_resampled_output_rate(sc_digits):
    data = sd.load_dataset("speech-commands", root=sc_digits, sample_rate=8000)
    assert_audio_dataset(data, n_train=20, n_test=10, length=8000, nb_classes=10)
    assert data.sample_rate == 8000 and data.info["converted"]["resampled"] == 40  # train, validation, test
    assert_labels_match_tones(data.x_train, data.y_train, 8000, lambda k: word_frequency(DIGITS[k]))


def test_speech_commands_bad_files_are_skipped_or_converted(tmp_path, caplog):
    base = write_speech_commands_tree(tmp_path, DIGITS, per_word=5)  # 1 test, 1 validation, 3 train
    (base / "one" / "bad00000_nohash_0.wav").write_bytes(b"\x00" * 100)  # unreadable
    sf.write(base / "two" / "bad00001_nohash_0.wav", np.zeros(0, np.float32), 16000)  # empty
    nan = tone(word_frequency("three"), 1.0, 16000)
    nan[100:110] = np.nan
    sf.write(base / "three" / "bad00002_nohash_0.wav", nan, 16000, subtype="FLOAT")  # NaN
    # a stereo file and an 8 kHz file: converted, not skipped
    sf.write(base / "four" / "stereo00_nohash_0.wav", tone(word_frequency("four"), 1.0, 16000, channels=2), 16000)
    sf.write(base / "five" / "rate8k00_nohash_0.wav", tone(word_frequency("five"), 1.0, 8000), 8000)
    with open(base / "testing_list.txt", "a") as f:
        f.write("six/doesnotexist_nohash_0.wav\nnotaword/x_nohash_0.wav\nbroken-line\n\n")
    with caplog.at_level(logging.INFO, logger="ssmdefense"):
        data = sd.load_dataset("speech-commands", root=tmp_path)
    assert data.y_train.shape == (32,) and data.y_test.shape == (10,)  # 30 + 2 converted
    assert_labels_match_tones(data.x_train, data.y_train, 16000, lambda k: word_frequency(DIGITS[k]))
    info = data.info
    assert info["skipped"] == {
        "unreadable": 1,
        "empty": 1,
        "non_finite": 1,
        "missing_list_entries": 1,
        "unknown_word_list_entries": 1,
        "malformed_list_entries": 1,
    }
    assert {f["path"]: f["reason"] for f in info["skipped_files"]} == {
        "one/bad00000_nohash_0.wav": "unreadable",
        "two/bad00001_nohash_0.wav": "empty",
        "three/bad00002_nohash_0.wav": "non_finite",
    }
    assert info["converted"]["not_16k"] == 1 and info["converted"]["not_mono"] == 1
    assert info["converted"]["source_rates"] == {8000: 1, 16000: 51}  # train + validation + test
    json.dumps(info)
    (record,) = warnings_of(caplog)  # one warning line for the whole load
    msg = record.getMessage()
    assert "\n" not in msg and "skipped 3 of" in msg and "bad00000_nohash_0.wav" in msg
    assert "1 list entries naming no existing file" in msg and "1 resampled" in msg and "1 downmixed" in msg


def test_speech_commands_nothing_left_in_a_split(tmp_path):
    base = write_speech_commands_tree(tmp_path, DIGITS, per_word=3)
    for rel in (base / "testing_list.txt").read_text().split():
        (base / rel).write_bytes(b"junk")
    with one_line_error(r"none of the 10 test files .* could be decoded .*10 unreadable"):
        sd.load_dataset("speech-commands", root=tmp_path)
    (base / "testing_list.txt").write_text("")
    with one_line_error("no clips for the test split"):
        sd.load_dataset("speech-commands", root=tmp_path)


def test_speech_commands_layout_and_parameter_errors(tmp_path, sc_digits):
    with one_line_error(r"--data-dir DIR \(root=DIR in Python\)"):
        sd.load_dataset("speech-commands")
    with one_line_error(
        r"does not exist; expected <root>/SpeechCommands/speech_commands_v0.02/<word>/\*.wav"
        r".*-D download=true"
    ):
        sd.load_dataset("speech-commands", root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with one_line_error("no Speech Commands v0.02 found in .*empty.*download=true"):
        sd.load_dataset("speech-commands", root=tmp_path / "empty")
    (tmp_path / "partial" / "SpeechCommands" / "speech_commands_v0.02").mkdir(parents=True)
    with one_line_error("speech_commands_v0.02 has neither the list files nor the word folders"):
        sd.load_dataset("speech-commands", root=tmp_path / "partial")
    (tmp_path / "old" / "SpeechCommands" / "speech_commands_v0.01").mkdir(parents=True)
    with one_line_error("holds speech_commands_v0.01, not speech_commands_v0.02"):
        sd.load_dataset("speech-commands", root=tmp_path / "old")
    # a tree without a list file: the split would be wrong
    base = write_speech_commands_tree(tmp_path / "nolist", DIGITS, per_word=3)
    (base / "validation_list.txt").unlink()
    with one_line_error("validation_list.txt is missing; the official split needs both"):
        sd.load_dataset("speech-commands", root=tmp_path / "nolist")
    # digits only: subset=all misses 25 word folders
    with one_line_error("no folder for 25 word\\(s\\) of subset 'all': backward, bed"):
        sd.load_dataset("speech-commands", root=sc_digits, subset="all")
    for params, match in [
        ({"subset": "foo"}, "unknown subset 'foo'; valid: digits, all"),
        ({"test_list": "train"}, "unknown test_list 'train'; valid: testing, validation"),
        ({"max_per_class": 0}, "max_per_class must be a positive integer or None"),
        ({"sample_rate": -1}, "sample_rate must be a positive integer"),
        ({"download": "yes"}, "download must be true or false"),
        ({"seed": 1}, "unknown parameter.*accepted:.*max_per_class"),
    ]:
        with one_line_error(match):
            sd.load_dataset("speech-commands", root=sc_digits, **params)


def test_speech_commands_download(tmp_path, monkeypatch):
    import torchaudio.datasets

    calls = []

    def offline(root, url, download):
        calls.append((root, url, download))
        raise OSError("<urlopen error [Errno -3] Temporary failure\n in name resolution>")

    monkeypatch.setattr(torchaudio.datasets, "SPEECHCOMMANDS", offline)
    with pytest.raises(sd.SSMDefenseError) as info:
        sd.load_dataset("speech-commands", root=tmp_path / "data", download=True)
    msg = str(info.value)
    assert "\n" not in msg and "speech_commands_v0.02.tar.gz" in msg and "OSError" in msg and "failed" in msg
    assert calls == [(str(tmp_path / "data"), "speech_commands_v0.02", True)]

    def fake_download(root, url, download):  # what torchaudio leaves behind: the extracted tree
        write_speech_commands_tree(root, DIGITS, per_word=3)

    monkeypatch.setattr(torchaudio.datasets, "SPEECHCOMMANDS", fake_download)
    data = sd.load_dataset("speech-commands", root=tmp_path / "data", download=True)
    assert data.x_train.shape == (10, 1, 16000)
    # already there: no second download
    monkeypatch.setattr(torchaudio.datasets, "SPEECHCOMMANDS", offline)
    assert sd.load_dataset("speech-commands", root=tmp_path / "data", download=True).x_test.shape == (10, 1, 16000)


# ---------------------------------------------------------------------------------------------
# urbansound8k
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def us8k(tmp_path_factory):
    root = tmp_path_factory.mktemp("us8k")
    write_urbansound8k_tree(root, folds=(1, 2, 9, 10))  # one clip per class and fold; 9 validates, 10 tests
    return root


def _us8k_rows(base, fold_filter):
    rows = [r for r in read_us8k_csv(base) if fold_filter(int(r[5]))]
    return sorted(rows, key=lambda r: (int(r[5]), r[0]))  # the loader's order: (fold, name)


def test_urbansound8k_default_load(us8k):
    data = sd.load_dataset("urbansound8k", root=str(us8k))
    assert_audio_dataset(data, n_train=20, n_test=10, length=64000, nb_classes=10)
    assert data.name == "urbansound8k" and data.sample_rate == 16000 and data.classes == US8K_CLASSES
    assert data.classes[3] == "dog_bark" and data.classes[9] == "street_music"
    assert_labels_match_tones(data.x_train, data.y_train, 16000, class_frequency)
    assert_labels_match_tones(data.x_test, data.y_test, 16000, class_frequency)
    base = us8k / "UrbanSound8K"
    train_rows, test_rows = _us8k_rows(base, lambda f: f < 9), _us8k_rows(base, lambda f: f == 10)
    assert data.y_train.tolist() == [int(r[6]) for r in train_rows]
    assert data.y_test.tolist() == [int(r[6]) for r in test_rows]
    assert data.y_val.tolist() == [int(r[6]) for r in _us8k_rows(base, lambda f: f == 9)]  # the fold before 10
    assert data.validation == {"source": "official", "description": "UrbanSound8K fold 9", "fold": 9, "val": 10}
    # each clip: resampled length ceil(frames * 16000 / rate), zero padded / cropped to 4 s
    for x, rows in ((data.x_train, train_rows), (data.x_test, test_rows)):
        for clip, row in zip(x[:, 0], rows):
            meta = sf.info(str(base / "audio" / f"fold{row[5]}" / row[0]))
            n = min(64000, math.ceil(meta.frames * 16000 / meta.samplerate))
            assert np.abs(clip[max(0, n - 100) : n]).max() > 0.1 and not clip[n:].any()
            expected_amplitude = 0.5 if meta.channels == 1 else 0.375  # stereo: mean of 0.5 and 0.25
            assert abs(np.abs(clip[200 : n - 200]).max() - expected_amplitude) < 0.03, (row, meta.channels)
    info = data.info
    assert info["counts"] == {"train": 20, "test": 10, "val": 10}
    assert info["folds"] == {"train": [1, 2], "val": [9], "test": [10]}
    conv = info["converted"]
    assert conv["source_rates"] == {8000: 8, 16000: 8, 22050: 8, 44100: 8, 48000: 8}  # 4 folds of 10 clips
    assert conv["source_subtypes"] == {"FLOAT": 8, "PCM_16": 16, "PCM_24": 8, "PCM_U8": 8}
    assert conv["resampled"] == 32 and conv["downmixed"] == 16 and conv["source_channels"] == {1: 24, 2: 16}
    assert conv["cropped"] > 0 and conv["padded"] > 0
    assert info["skipped"] == {} and info["unlisted_files"] == 0
    assert info["settings"]["duration"] == 4.0 and info["settings"]["length"] == 64000


def test_urbansound8k_root_variants_folds_and_options(us8k):
    ref = sd.load_dataset("urbansound8k", root=us8k)
    inner = sd.load_dataset("urbansound8k", root=us8k / "UrbanSound8K")
    assert np.array_equal(inner.x_train, ref.x_train) and np.array_equal(inner.y_test, ref.y_test)
    fold1 = sd.load_dataset("urbansound8k", root=us8k, test_fold=1, duration=1.0, sample_rate=8000)
    assert_audio_dataset(fold1, n_train=20, n_test=10, length=8000, nb_classes=10)
    assert fold1.info["folds"] == {"train": [2, 9], "val": [10], "test": [1]}
    assert_labels_match_tones(fold1.x_test, fold1.y_test, 8000, class_frequency)
    base = us8k / "UrbanSound8K"
    assert fold1.y_test.tolist() == [int(r[6]) for r in _us8k_rows(base, lambda f: f == 1)]
    small = sd.load_dataset("urbansound8k", root=us8k, max_per_class=1, duration=0.5)
    assert small.info["per_class"] == {"train": [1] * 10, "test": [1] * 10, "val": [1] * 10}
    fold2 = sd.load_dataset("urbansound8k", root=us8k, val_fold=2, duration=0.5)
    assert fold2.info["folds"] == {"train": [1, 9], "val": [2], "test": [10]}
    with pytest.raises(SSMDefenseError, match="val_fold must be one of 1..10 other than test_fold 10; got 10"):
        sd.load_dataset("urbansound8k", root=us8k, val_fold=10)
    with pytest.raises(SSMDefenseError, match="no clips in the validation fold 5"):
        sd.load_dataset("urbansound8k", root=us8k, val_fold=5)
    with pytest.raises(SSMDefenseError, match="has its own validation split .UrbanSound8K fold 9.; val_fraction"):
        sd.load_dataset("urbansound8k", root=us8k, val_fraction=0.2)
    again = sd.load_dataset("urbansound8k", root=us8k, max_per_class=1, duration=0.5)
    assert np.array_equal(small.x_train, again.x_train)


def test_urbansound8k_missing_and_bad_files_are_skipped(tmp_path, caplog):
    base = write_urbansound8k_tree(tmp_path, folds=(1, 10))
    rows = read_us8k_csv(base)
    rows.append(["999999-3-0-0.wav", 999999, 0, 1, 1, 1, 3, "dog_bark"])  # listed, no file
    rows.append(["999998-4-0-0.wav", 999998, 0, 1, 1, 10, 4, "drilling"])  # listed, no file
    rows.append(rows[0])  # an exact duplicate row: dropped
    write_us8k_csv(base, rows)
    (base / "audio" / "fold1" / rows[1][0]).write_bytes(b"")  # zero-byte file: unreadable
    sf.write(base / "audio" / "fold1" / rows[3][0], np.zeros((0, 2), np.float32), 44100)  # header, no samples
    nan = tone(class_frequency(2), 1.0, 16000)
    nan[5] = np.nan
    sf.write(base / "audio" / "fold1" / rows[2][0], nan, 16000, subtype="FLOAT")
    sf.write(base / "audio" / "fold10" / "unlisted.wav", tone(440, 0.1, 16000), 16000)
    with caplog.at_level(logging.INFO, logger="ssmdefense"):  # the loader alone: 7 clips are too few to validate on
        data = urbansound8k(root=tmp_path)
    assert data.y_train.shape == (7,) and data.y_test.shape == (10,) and data.x_val is None  # no fold 9
    assert sorted(data.y_train.tolist()) == [0, 4, 5, 6, 7, 8, 9]
    assert_labels_match_tones(data.x_train, data.y_train, 16000, class_frequency)
    info = data.info
    assert info["skipped"] == {"missing_file": 2, "unreadable": 1, "non_finite": 1, "empty": 1}
    assert info["duplicate_csv_rows"] == 1 and info["unlisted_files"] == 1
    assert {f["path"] for f in info["skipped_files"]} == {
        "fold1/999999-3-0-0.wav",
        "fold10/999998-4-0-0.wav",
        f"fold1/{rows[1][0]}",
        f"fold1/{rows[2][0]}",
        f"fold1/{rows[3][0]}",
    }
    json.dumps(info)
    (record,) = warnings_of(caplog)
    msg = record.getMessage()
    assert "\n" not in msg and "skipped 2 of 22 CSV rows whose file does not exist" in msg
    assert "fold1/999999-3-0-0.wav" in msg and "skipped 3 of 20 audio files" in msg
    assert any(r.levelno == logging.INFO and "resampled" in r.getMessage() for r in caplog.records)


def test_urbansound8k_csv_errors(tmp_path):
    base = write_urbansound8k_tree(tmp_path, folds=(1, 10))
    good = read_us8k_csv(base)

    def load_with(rows, header=US8K_HEADER):
        write_us8k_csv(base, rows, header)
        return sd.load_dataset("urbansound8k", root=tmp_path)

    with one_line_error(r"UrbanSound8K.csv has no column classID; expected the columns .*\(found:"):
        load_with([r[:6] + r[7:] for r in good], [c for c in US8K_HEADER if c != "classID"])
    bad = [list(r) for r in good]
    bad[3][6] = "10"
    with one_line_error(r"UrbanSound8K.csv line 5: classID '10' is not an integer in 0..9"):
        load_with(bad)
    bad = [list(r) for r in good]
    bad[4][7] = "siren"  # the row says classID 4 (drilling)
    with one_line_error(r"line 6: classID 4 with class 'siren' contradicts .*classID 4 is 'drilling'"):
        load_with(bad)
    bad = [list(r) for r in good]
    bad[0][5] = "11"
    with one_line_error(r"line 2: fold '11' is not an integer in 1..10"):
        load_with(bad)
    bad = [list(r) for r in good] + [[good[0][0]] + good[0][1:6] + ["1", "car_horn"]]
    with one_line_error(r"is listed again with classID 1 \(earlier: 0\)"):
        load_with(bad)
    with one_line_error("lists no clips"):
        load_with([])
    # every fold-10 row names a missing file: the test split is empty
    with one_line_error(r"no clips for the test split \(fold 10\).*10 CSV rows name files that do not exist"):
        load_with(
            [r for r in good if r[5] == "1"] + [[f"nofile{k}.wav"] + r[1:] for k, r in enumerate(good) if r[5] == "10"]
        )


def test_urbansound8k_layout_and_parameter_errors(tmp_path, us8k):
    with one_line_error(r"--data-dir DIR \(root=DIR in Python\)"):
        sd.load_dataset("urbansound8k")
    with one_line_error(r"nowhere does not exist; expected <root>/UrbanSound8K/metadata/UrbanSound8K.csv"):
        sd.load_dataset("urbansound8k", root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with one_line_error(r"no UrbanSound8K found in .*empty; expected .*urbansound8k.html"):
        sd.load_dataset("urbansound8k", root=tmp_path / "empty")
    (tmp_path / "wrong" / "UrbanSound8K" / "audio").mkdir(parents=True)
    with one_line_error(r"UrbanSound8K/metadata/UrbanSound8K.csv not found; expected"):
        sd.load_dataset("urbansound8k", root=tmp_path / "wrong")
    (tmp_path / "noaudio" / "UrbanSound8K" / "metadata").mkdir(parents=True)
    write_us8k_csv(tmp_path / "noaudio" / "UrbanSound8K", [["a.wav", 1, 0, 1, 1, 1, 0, "air_conditioner"]])
    with one_line_error(r"noaudio/UrbanSound8K/audio is missing"):
        sd.load_dataset("urbansound8k", root=tmp_path / "noaudio")
    for params, match in [
        ({"test_fold": 11}, "test_fold must be one of 1..10; got 11"),
        ({"test_fold": 0}, "test_fold must be one of 1..10"),
        ({"test_fold": "10"}, "test_fold must be one of 1..10; got '10'"),
        ({"duration": 0}, "duration must be a positive number of seconds; got 0"),
        ({"duration": -1.5}, "duration must be a positive"),
        ({"duration": float("nan")}, "duration must be a positive"),
        ({"sample_rate": 0}, "sample_rate must be a positive integer"),
        ({"max_per_class": -2}, "max_per_class must be a positive integer or None"),
        ({"fold": 3}, "unknown parameter.*accepted:.*test_fold"),
    ]:
        with one_line_error(match):
            sd.load_dataset("urbansound8k", root=us8k, **params)


def test_both_registered_with_a_summary():
    assert {"speech-commands", "urbansound8k"} <= set(sd.list_datasets())
    from ssmdefense.plugins import registry

    reg = registry("datasets")
    for name in ("speech-commands", "urbansound8k"):
        entry = reg.get(name)
        assert entry.summary and "\n" not in entry.summary
        assert {"root", "max_per_class"} <= set(reg.accepted_params(name))
