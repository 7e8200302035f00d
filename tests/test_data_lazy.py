"""``speech_commands(..., lazy=True)``: a ``LazyDataset`` whose clips are decoded one at a time
(``audio_io.LazyClips``) when read, for Speech Commands too large to decode up front.

Checked here: it agrees with the eager loader clip for clip; creating it opens no audio file;
iterating thousands of clips through a ``DataLoader`` keeps memory flat (one batch, not the split);
workers (fork and spawn) read it; a broken file raises a one-line error naming it when its item is
read. The trees are written with ``test_data_audio_files.write_speech_commands_tree`` and, for the
few-thousand-file tree, copies of one short WAV per word (fast to write; padded to 1 s on decode).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import ssmdefense as sd
from ssmdefense.data import audio_io
from ssmdefense.data.base import LazyDataset
from ssmdefense.data.speech_commands import DIGITS, UNKNOWN_WHEN_LAZY, speech_commands
from ssmdefense.data.stream import batches
from ssmdefense.data.urbansound8k import CLASSES as US8K_CLASSES
from ssmdefense.data.urbansound8k import urbansound8k
from test_data_audio_files import (
    SC_PARTS,
    one_line_error,
    read_us8k_csv,
    tone,
    word_frequency,
    write_speech_commands_tree,
    write_urbansound8k_tree,
)

CLIP_BYTES = 16000 * 4  # one decoded 1 s clip at 16 kHz, float32: 64 kB


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """Digits, 4 clips per word (1 test, 1 validation, 2 train) plus one 8 kHz stereo train clip,
    so that resampling and downmixing are part of what the two loaders must agree on."""
    root = tmp_path_factory.mktemp("sc_small")
    base = write_speech_commands_tree(root, DIGITS, per_word=4)
    odd = tone(word_frequency("four"), 0.5, 8000, channels=2)  # (4000, 2)
    sf.write(base / "four" / "ffffffff_nohash_0.wav", odd, 8000, subtype="PCM_16")
    return root


def write_many(root, per_word: int = 300, n_test: int = 10, n_valid: int = 10, seconds: float = 0.1) -> Path:
    """An official-layout tree with ``per_word`` clips per digit, each a copy of one ``seconds``
    long 16-bit WAV per word; the first ``n_test`` of each word in testing_list.txt, the next
    ``n_valid`` in validation_list.txt."""
    base = Path(root).joinpath(*SC_PARTS)
    lists = {"testing": [], "validation": []}
    for w_index, word in enumerate(DIGITS):
        (base / word).mkdir(parents=True)
        buffer = io.BytesIO()
        sf.write(
            buffer, tone(word_frequency(word), seconds, 16000, seed=w_index), 16000, format="WAV", subtype="PCM_16"
        )
        data = buffer.getvalue()
        for j in range(per_word):
            name = f"{w_index:02d}{j:06d}_nohash_0.wav"
            (base / word / name).write_bytes(data)
            if j < n_test:
                lists["testing"].append(f"{word}/{name}")
            elif j < n_test + n_valid:
                lists["validation"].append(f"{word}/{name}")
    for which, entries in lists.items():
        (base / f"{which}_list.txt").write_text("".join(e + "\n" for e in entries))
    return base


@pytest.fixture(scope="module")
def many_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc_many")
    write_many(root)  # 3,000 files: 2,800 train, 100 test, 100 validation
    return root


@pytest.mark.parametrize(
    "params", [{}, {"test_list": "validation", "max_per_class": 1}, {"sample_rate": 8000}], ids=str
)
def test_lazy_matches_eager(small_tree, params):
    eager = sd.load_dataset("speech-commands", root=small_tree, **params)
    lazy = sd.load_dataset("speech-commands", root=small_tree, lazy=True, **params)  # through the contract check
    assert isinstance(lazy, LazyDataset) and not isinstance(lazy, sd.Dataset)
    assert isinstance(lazy.train, torch.utils.data.Dataset) and isinstance(lazy.train, audio_io.LazyClips)
    assert lazy.input_shape == eager.input_shape == (1, eager.sample_rate)
    assert lazy.classes == eager.classes == DIGITS and lazy.nb_classes == eager.nb_classes == 10
    for field in ("name", "sample_rate", "eps", "clip_values", "sequence", "defaults"):
        assert getattr(lazy, field) == getattr(eager, field), field
    assert lazy.validation == eager.validation and lazy.validation["source"] == "official"
    splits = [(eager.x_train, eager.y_train, lazy.train), (eager.x_val, eager.y_val, lazy.val)]
    for x, y, clips in [*splits, (eager.x_test, eager.y_test, lazy.test)]:
        assert len(clips) == len(x) and np.array_equal(clips.labels, y)
        for i in range(len(x)):
            xi, yi = clips[i]  # (1 T), int
            assert xi.dtype == torch.float32 and xi.shape == x.shape[1:] and type(yi) is int
            assert torch.equal(xi, torch.from_numpy(x[i])) and yi == y[i], i
    assert np.array_equal(lazy.y_train, eager.y_train) and np.array_equal(lazy.y_test, eager.y_test)
    # info: the same except what only decoding knows
    assert lazy.info["lazy"] is True and eager.info["lazy"] is False
    assert lazy.info["converted"] == lazy.info["skipped_files"] == UNKNOWN_WHEN_LAZY
    same = {k: v for k, v in eager.info.items() if k not in ("lazy", "converted", "skipped_files")}
    assert {k: lazy.info[k] for k in same} == same
    json.dumps(lazy.info)


def test_creating_decodes_nothing(many_tree, monkeypatch):
    import librosa

    calls = []

    def refuse(name):
        def decoder(*args, **kwargs):
            calls.append((name, args))
            raise AssertionError(f"{name} called while creating a lazy dataset")

        return decoder

    for module, attr in [
        (audio_io, "decode"),
        (audio_io, "_read_raw"),
        (audio_io, "load_clips"),
        (sf, "SoundFile"),
        (sf, "read"),
        (sf, "info"),
        (librosa, "load"),
    ]:
        monkeypatch.setattr(module, attr, refuse(f"{module.__name__}.{attr}"))
    data = speech_commands(root=many_tree, lazy=True, num_workers=4)  # num_workers: accepted, unused
    assert calls == [] and len(data.train) == 2800 and len(data.test) == 100
    assert data.info["counts"] == {"train": 2800, "test": 100, "val": 100}
    assert data.info["per_class"]["train"] == [280] * 10
    assert len(data.val) == 100 and data.validation["source"] == "official"
    with pytest.raises(sd.SSMDefenseError, match="audio_io.decode called"):  # reading an item decodes
        data.train[0]


def _rss() -> int | None:
    """Resident memory of this process in bytes after handing freed heap memory back to the system
    (glibc's ``malloc_trim``: without it RSS keeps the freed batches and says little), or None
    where either is missing (not Linux with glibc)."""
    statm = Path("/proc/self/statm")
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    if not statm.exists():
        return None
    trim(0)
    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_flat_while_iterating(many_tree, capsys):
    data = speech_commands(root=many_tree, lazy=True)
    n = len(data.train)
    all_clips = n * CLIP_BYTES  # what the eager loader would hold: 179 MB here
    half = -(-n // 64) // 2  # batches in the first half
    labels, traced, rss = [], [], [_rss()]
    tracemalloc.start()  # traces Python objects and numpy arrays (each decoded clip is one)
    try:
        for k, (x, y) in enumerate(torch.utils.data.DataLoader(data.train, batch_size=64, num_workers=0)):
            assert x.dtype == torch.float32 and x.shape[1:] == (1, 16000)  # (b 1 T)
            labels.append(y.numpy())  # (b)
            if k + 1 == half:
                traced.append(tracemalloc.get_traced_memory()[1])  # peak over the first half
                tracemalloc.reset_peak()
                rss.append(_rss())
        traced.append(tracemalloc.get_traced_memory()[1])  # peak over the second half
        rss.append(_rss())
    finally:
        tracemalloc.stop()
    assert np.array_equal(np.concatenate(labels), data.y_train)
    first, second = traced
    grown = None if None in rss else [(r - rss[0]) / 1e6 for r in rss[1:]]  # MB after each half
    with capsys.disabled():
        print(
            f"\nlazy iteration of {n} clips (all decoded: {all_clips / 1e6:.0f} MB): traced peak "
            f"{first / 1e6:.2f} MB in the first half, {second / 1e6:.2f} MB in the second; RSS grown by "
            + ("? (no malloc_trim)" if grown is None else f"{grown[0]:.1f} MB, then {grown[1]:.1f} MB")
        )
    assert max(first, second) < 0.15 * all_clips
    assert second < first * 1.2 + 1e6  # no growth from one half to the next
    if grown is not None:  # torch's own allocations (the batches) are not traced: RSS covers them
        assert grown[1] < 0.15 * all_clips / 1e6 and grown[1] < grown[0] + 4.0


def test_dataloader_workers_read_it(many_tree, small_tree):
    data = speech_commands(root=many_tree, lazy=True)
    clone = pickle.loads(pickle.dumps(data.train))
    assert len(pickle.dumps(data.train)) < 200 * len(data.train)  # paths and labels only
    assert torch.equal(clone[5][0], data.train[5][0]) and clone[5][1] == data.train[5][1]
    labels = [y for _, y in torch.utils.data.DataLoader(data.train, batch_size=64, num_workers=2)]
    assert np.array_equal(torch.cat(labels).numpy(), data.y_train)
    # a spawned worker (macOS' and Windows' default) unpickles it from scratch
    small = speech_commands(root=small_tree, lazy=True)
    spawned = torch.utils.data.DataLoader(small.test, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    x = torch.cat([xb for xb, _ in spawned])  # (N 1 T)
    assert torch.equal(x, torch.stack([small.test[i][0] for i in range(len(small.test))]))


def test_broken_file_raises_when_read(tmp_path):
    base = write_speech_commands_tree(tmp_path, DIGITS, per_word=3)  # 1 test, 1 validation, 1 train
    (base / "one" / "bad00000_nohash_0.wav").write_bytes(b"\x00" * 100)
    sf.write(base / "two" / "bad00001_nohash_0.wav", np.zeros(0, np.float32), 16000)
    nan = tone(word_frequency("three"), 0.2, 16000)
    nan[10] = np.nan
    sf.write(base / "three" / "bad00002_nohash_0.wav", nan, 16000, subtype="FLOAT")
    data = speech_commands(root=tmp_path, lazy=True)  # nothing decoded, nothing known yet
    assert len(data.train) == 13 and data.info["skipped"] == {}
    bad = {}
    for i in range(len(data.train)):
        name = Path(data.train.path(i)).name
        if name.startswith("bad"):
            bad[name] = i
        else:
            assert data.train[i][0].abs().max() > 0.2
    for name, reason in [
        ("bad00000_nohash_0.wav", "unreadable"),
        ("bad00001_nohash_0.wav", "empty"),
        ("bad00002_nohash_0.wav", "non-finite"),
    ]:
        with one_line_error(rf"speech-commands: .*{name} is {reason}.*; remove the file, or .*lazy=true"):
            data.train[bad[name]]
    # the same message from a DataLoader worker (stream.batches restores the one line)
    one = torch.utils.data.Subset(data.train, [bad["bad00000_nohash_0.wav"]])
    with one_line_error(r"bad00000_nohash_0.wav is unreadable"):
        list(batches(torch.utils.data.DataLoader(one, batch_size=1, num_workers=1)))
    # the eager loader skips and counts them instead
    assert speech_commands(root=tmp_path).info["skipped"] == {"unreadable": 1, "empty": 1, "non_finite": 1}
    with one_line_error("lazy must be true or false; got 'yes'"):
        speech_commands(root=tmp_path, lazy="yes")


# ---------------------------------------------------------------------------------------------
# urbansound8k -D lazy=true
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def us8k_tree(tmp_path_factory):
    """Folds 1, 2, 9 and 10, one clip per class and fold, in the real mix of rates (8-48 kHz), bit
    depths, channel counts and durations (shorter and longer than 4 s)."""
    root = tmp_path_factory.mktemp("us8k")
    write_urbansound8k_tree(root, folds=(1, 2, 9, 10))
    return root


@pytest.mark.parametrize("params", [{}, {"test_fold": 1, "duration": 1.0, "sample_rate": 8000}], ids=str)
def test_urbansound8k_lazy_matches_eager(us8k_tree, params):
    eager = sd.load_dataset("urbansound8k", root=us8k_tree, **params)
    lazy = sd.load_dataset("urbansound8k", root=us8k_tree, lazy=True, **params)  # through the contract check
    assert isinstance(lazy, LazyDataset) and isinstance(lazy.train, audio_io.LazyClips)
    assert lazy.input_shape == eager.input_shape and lazy.classes == eager.classes == US8K_CLASSES
    for field in ("name", "sample_rate", "eps", "clip_values", "sequence", "defaults", "nb_classes"):
        assert getattr(lazy, field) == getattr(eager, field), field
    assert lazy.validation == eager.validation and lazy.validation["source"] == "official"
    splits = [(eager.x_train, eager.y_train, lazy.train), (eager.x_val, eager.y_val, lazy.val)]
    for x, y, clips in [*splits, (eager.x_test, eager.y_test, lazy.test)]:
        assert len(clips) == len(x) and np.array_equal(clips.labels, y)
        for i in range(len(x)):
            xi, yi = clips[i]  # (1 T), int
            assert xi.shape == x.shape[1:] and torch.equal(xi, torch.from_numpy(x[i])) and yi == y[i], i
    assert eager.info["converted"]["resampled"] > 0 and eager.info["converted"]["downmixed"] > 0
    assert lazy.info["lazy"] is True and eager.info["lazy"] is False
    assert lazy.info["converted"] == lazy.info["skipped_files"] == UNKNOWN_WHEN_LAZY
    same = {k: v for k, v in eager.info.items() if k not in ("lazy", "converted", "skipped_files")}
    assert {k: lazy.info[k] for k in same} == same
    json.dumps(lazy.info)


def test_urbansound8k_lazy_decodes_nothing_and_raises_on_a_broken_file(tmp_path, monkeypatch, caplog):
    base = write_urbansound8k_tree(tmp_path, folds=(1, 10))
    rows = read_us8k_csv(base)
    (base / "audio" / "fold1" / rows[0][0]).write_bytes(b"\x00" * 100)  # unreadable
    (base / "audio" / "fold1" / rows[1][0]).unlink()  # listed, missing: known without decoding
    with monkeypatch.context() as m:
        m.setattr(audio_io, "decode", lambda *a, **k: pytest.fail("decode called while creating"))
        m.setattr(audio_io, "load_clips", lambda *a, **k: pytest.fail("load_clips called while creating"))
        with caplog.at_level("WARNING", logger="ssmdefense"):
            data = urbansound8k(root=tmp_path, lazy=True)  # the loader alone: 9 clips are too few to validate on
    assert len(data.train) == 9 and len(data.test) == 10 and data.info["skipped"] == {"missing_file": 1}
    assert "skipped 1 of 20 CSV rows whose file does not exist" in caplog.text
    broken = [i for i in range(len(data.train)) if Path(data.train.path(i)).name == rows[0][0]]
    with one_line_error(rf"urbansound8k: .*{rows[0][0]} is unreadable.*; remove the file, or .*lazy=true"):
        data.train[broken[0]]
    eager = urbansound8k(root=tmp_path)  # skips and counts it instead
    assert len(eager.y_train) == 8 and eager.info["skipped"] == {"missing_file": 1, "unreadable": 1}
    with one_line_error("lazy must be true or false; got 'yes'"):
        sd.load_dataset("urbansound8k", root=tmp_path, lazy="yes")


def test_urbansound8k_lazy_trains_like_the_eager_one(us8k_tree, tmp_path):
    """`ssmdefense train -D lazy=true`: DataLoader workers decode, and the numbers are the eager run's."""
    from click.testing import CliRunner

    from ssmdefense.cli import cli

    reports = {}
    for lazy in ("false", "true"):
        out = tmp_path / f"run-{lazy}"
        args = ["train", "--dataset", "urbansound8k", "--data-dir", us8k_tree, "-D", "duration=0.5"]
        args += ["-D", f"lazy={lazy}", "--epochs", "1", "--aa-samples", "0", "--eval-samples", "10", "-q"]
        args += ["--workers", "1", "--out", out, "-m", "d_model=8", "-m", "n_layers=1", "-m", "d_state=8"]
        args += ["--threads", "1"]  # audio takes every core by default: on a shared 2-core machine they wait
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        reports[lazy] = json.loads((out / "report.json").read_text())
        assert json.loads((out / "config.json").read_text())["dataset_params"]["lazy"] is (lazy == "true")
    for key in ("epoch", "clean_accuracy", "robust_accuracy"):
        assert reports["true"]["last"][key] == reports["false"]["last"][key], key
