"""spoken-digits: the offline eSpeak NG dataset (shapes, split by voice, determinism, cache, errors).

The full dataset (2,400 clips, a few seconds) is built once per file, in a temporary cache; the other
builds use SMALL (100 clips: 2 accents x 5 voices x 10 words, one rate and pitch).
"""

import hashlib
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import ssmdefense as sd
from ssmdefense.data import spoken_digits as sdg

SMALL = dict(accents=("en-us", "en-gb-scotland"), rates=(180,), pitches=(35,))
N_SMALL_TRAIN, N_SMALL_TEST = 80, 20
TINY = dict(accents=("en-us",), rates=(180,), pitches=(35,))  # 50 clips


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("spoken-digits-cache")


@pytest.fixture(scope="module")
def full(cache_root):
    """The full dataset, built through the registry as a user would; (dataset, build seconds)."""
    t0 = time.perf_counter()
    data = sd.load_dataset("spoken-digits", cache_dir=str(cache_root))
    return data, time.perf_counter() - t0


def small(cache_dir, **params):
    return sdg.spoken_digits(cache_dir=str(cache_dir), **{**SMALL, **params})


def folder_of(cache_dir):
    return cache_dir / sdg.CACHE_FOLDER


def rebuild_lines(caplog):
    return [r for r in caplog.records if r.name == "ssmdefense" and "rebuilding" in r.getMessage()]


# ----------------------------------------------------------------------------- what a user sees


def test_shapes_dtypes_and_range(full, cache_root):
    data, seconds = full
    assert seconds < 60  # built on first use well within a minute (about 5 s on 2 cores)
    assert data.name == "spoken-digits" and data.nb_classes == 10
    assert data.x_train.shape == (1680, 1, 16000) and data.x_test.shape == (480, 1, 16000)
    assert data.x_val.shape == (240, 1, 16000)  # 1,920 training clips less 4 validation voices
    assert len(data.y_train) + len(data.y_test) >= 2000 and data.info["n_clips"] == 2400
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    assert data.input_shape == (1, 16000) and data.is_audio and data.sample_rate == 16000
    assert data.clip_values == (-1.0, 1.0) and data.sequence == "mel"
    assert data.eps == sdg.DEFAULT_EPS == 0.001 and data.defaults == {"epochs": 8, "eval_samples": 240}
    assert data.classes == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for x in (data.x_train, data.x_val, data.x_test):
        assert np.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
        peaks = np.abs(x).max(axis=(1, 2))  # (N)
        assert peaks.min() > 0.25 and peaks.max() < 0.95  # peak levels drawn in 0.3..0.9 (+ noise)
        assert peaks.std() > 0.1  # loudness varies
    info = data.info
    assert info["source"].startswith("eSpeak NG via espeakng-loader ") and isinstance(info["build_seconds"], float)
    assert info["cache"] == str(cache_root / "spoken-digits-v1")


def test_labels_balanced_in_both_splits(full):
    data, _ = full
    assert np.bincount(data.y_train, minlength=10).tolist() == [168] * 10
    assert np.bincount(data.y_test, minlength=10).tolist() == [48] * 10
    assert not np.array_equal(data.y_train[:20], np.sort(data.y_train[:20]))  # shuffled, not in blocks


def test_train_and_test_voices_are_disjoint(full):
    data, _ = full
    info = data.info
    train, test = info["train_voices"], info["test_voices"]
    assert info["voices_disjoint"] and not set(train) & set(test)
    assert len(train) == 32 and len(test) == 8 and len(set(train)) == 32 and len(set(test)) == 8
    variants = {v.split("+")[1] for v in train + test}
    accents = {v.split("+")[0] for v in train + test}
    assert len(variants) >= 30 and len(accents) >= 6
    assert {v.split("+")[0] for v in test} == accents  # test voices spread over all accents
    # per clip: every voice says every word equally often, in its own split only
    train_ix = np.asarray([train.index(v) for v in data.groups])  # training clips left after the validation voices
    for voices, v_ix, y in ((train, train_ix, data.y_train), (test, info["voice_test"], data.y_test)):
        counts = np.zeros((len(voices), 10), int)
        np.add.at(counts, (v_ix, y), 1)
        assert set(counts.ravel()) <= {0, 6}  # 3 rates x 2 pitches, for each voice of the split
        assert (counts.sum(1) > 0).sum() == (28 if voices is train else 8)
    # validation: 4 whole training voices, heard neither in training nor in test
    held_out = set(data.validation["held_out_groups"])
    assert len(held_out) == 4 and held_out <= set(train) and not held_out & set(data.groups)
    assert len(data.y_val) == 240 and (np.bincount(data.y_val) == 24).all()
    # and no test clip is a copy of a train clip
    train_rows = {row.tobytes() for row in data.x_train[:, 0]}
    assert not any(row.tobytes() in train_rows for row in data.x_test[:, 0])


def test_clips_hold_a_word_over_quiet_noise(full):
    data, _ = full
    x = data.x_test[:, 0]  # (N T)
    frames = x[:, :15872].reshape(len(x), -1, 256)  # (N 62 256): 16 ms frames
    rms = np.sqrt((frames**2).mean(-1))  # (N F)
    loud, quiet = rms.max(1), np.percentile(rms, 5, axis=1)
    assert (loud > 0.02).all()  # not silent
    assert (20 * np.log10(loud / quiet)).min() > 20  # the word stands out of the background noise
    assert quiet.min() > 0  # but there is background noise


def mfcc_features(x):
    """Mean MFCCs over 4 equal parts of the spoken word (frames above 10% of the clip's peak RMS)."""
    import librosa

    mfcc = librosa.feature.mfcc(y=x[:, 0], sr=16000, n_mfcc=20, n_fft=512, hop_length=256)  # (N 20 F)
    rms = librosa.feature.rms(y=x[:, 0], frame_length=512, hop_length=256)[:, 0]  # (N F)
    feats = []
    for m, e in zip(mfcc, rms):
        word = m[:, e > 0.1 * e.max()]  # (20 F')
        feats.append(np.concatenate([part.mean(1) for part in np.array_split(word, 4, axis=1)]))
    return np.stack(feats)  # (N 80)


def test_words_are_distinguishable_on_unseen_voices(full):
    """A linear classifier on MFCCs, fit on the train voices, names the digits of the test voices
    (about 89%; chance is 10%). A label mix-up, or a voice that says something else, would fail this."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data, _ = full
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(mfcc_features(data.x_train), data.y_train)
    predicted = clf.predict(mfcc_features(data.x_test))
    assert (predicted == data.y_test).mean() > 0.75
    per_word = [(predicted[data.y_test == k] == k).mean() for k in range(10)]
    assert min(per_word) > 0.4, per_word


def test_registry_entry():
    assert "spoken-digits" in sd.list_datasets()
    with pytest.raises(sd.SSMDefenseError, match="unknown parameter"):
        sd.load_dataset("spoken-digits", voices=3)
    with pytest.raises(sd.SSMDefenseError, match="accents must be"):
        sd.load_dataset("spoken-digits", accents=("en-xx",))


# ------------------------------------------------------------------------------------- cache


def test_cache_is_reused(full, cache_root, monkeypatch):
    data, _ = full

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a valid cache")

    monkeypatch.setattr(sdg, "_synthesise", no_build)
    again = sd.load_dataset("spoken-digits", cache_dir=str(cache_root))  # no_build: from the cache
    assert np.array_equal(again.x_train, data.x_train) and np.array_equal(again.x_test, data.x_test)
    assert np.array_equal(again.y_train, data.y_train) and np.array_equal(again.y_test, data.y_test)
    assert again.info["train_voices"] == data.info["train_voices"] and "load_seconds" in again.info


def test_cache_files(full, cache_root):
    folder = folder_of(cache_root)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "spoken-digits.npz"]  # no temp files left
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == sdg.FORMAT_VERSION
    assert manifest["sha256"] == hashlib.sha256((folder / "spoken-digits.npz").read_bytes()).hexdigest()
    assert manifest["settings"]["rates"] == list(sdg.RATES) and manifest["settings"]["seed"] == 0
    with np.load(folder / "spoken-digits.npz", allow_pickle=False) as npz:  # no pickles inside
        assert npz["x_test"].dtype == np.int16 and npz["x_test"].shape == (480, 1, 16000)
        assert np.array_equal(npz["x_test"] / np.float32(32767), full[0].x_test)


def test_leftovers_of_a_killed_build_are_removed(tmp_path):
    folder = folder_of(tmp_path)
    folder.mkdir(parents=True)
    old, recent = folder / ".spoken-digits.npz.99.0badc0de.tmp", folder / ".manifest.json.98.0badc0de.tmp"
    for path in (old, recent):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    small(tmp_path)
    assert not old.exists() and recent.exists()  # a recent one may belong to a build running now


def test_cache_location(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("SSMDEFENSE_CACHE_DIR", raising=False)
    assert sdg.cache_folder() == platformdirs.user_cache_path("ssmdefense") / "spoken-digits-v1"
    monkeypatch.setenv("SSMDEFENSE_CACHE_DIR", str(tmp_path / "env"))
    assert sdg.cache_folder() == tmp_path / "env" / "spoken-digits-v1"
    assert sdg.cache_folder(str(tmp_path / "arg")) == tmp_path / "arg" / "spoken-digits-v1"  # cache_dir wins
    data = sdg.spoken_digits(**SMALL)
    assert data.info["cache"] == str(tmp_path / "env" / "spoken-digits-v1")
    assert (tmp_path / "env" / "spoken-digits-v1" / "manifest.json").is_file()


def test_first_build_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ssmdefense"):
        data = small(tmp_path)
    messages = [r.getMessage() for r in caplog.records if r.name == "ssmdefense"]
    assert any("building the dataset on first use" in m for m in messages)
    assert any(m.startswith("spoken-digits: built 100 clips in") for m in messages)
    assert not rebuild_lines(caplog)
    assert data.x_train.shape == (N_SMALL_TRAIN, 1, 16000) and data.x_test.shape == (N_SMALL_TEST, 1, 16000)


def corrupt(folder, how):
    npz, manifest = folder / "spoken-digits.npz", folder / "manifest.json"
    if how == "truncated npz":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif how == "flipped byte":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    elif how == "missing npz":
        npz.unlink()
    elif how == "missing manifest":
        manifest.unlink()
    elif how == "garbled manifest":
        manifest.write_text("{not json")
    elif how == "edited checksum":
        content = json.loads(manifest.read_text())
        content["sha256"] = "0" * 64
        manifest.write_text(json.dumps(content))
    elif how == "wrong shapes":  # a readable npz, with a matching checksum, of the wrong size
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["x_test"] = arrays["x_test"][:, :, :8000]
        with open(npz, "wb") as f:
            sdg._write_npz(f, arrays)
        content = json.loads(manifest.read_text())
        content["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
        manifest.write_text(json.dumps(content))
    elif how == "other format":
        content = json.loads(manifest.read_text())
        content["format"] = 0
        manifest.write_text(json.dumps(content))


@pytest.mark.parametrize(
    "how",
    [
        "truncated npz",
        "flipped byte",
        "missing npz",
        "missing manifest",
        "garbled manifest",
        "edited checksum",
        "wrong shapes",
        "other format",
    ],
)
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, caplog, how):
    first = small(tmp_path)
    corrupt(folder_of(tmp_path), how)
    with caplog.at_level(logging.INFO, logger="ssmdefense"):
        again = small(tmp_path)
    lines = rebuild_lines(caplog)
    assert len(lines) == 1 and "\n" not in lines[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert np.array_equal(again.x_train, first.x_train) and np.array_equal(again.y_test, first.y_test)
    caplog.clear()
    small(tmp_path)  # the rebuilt cache is valid again
    assert not rebuild_lines(caplog)


def test_changed_settings_and_rebuild_flag(tmp_path, caplog):
    first = small(tmp_path)
    with caplog.at_level(logging.INFO, logger="ssmdefense"):
        other = small(tmp_path, seed=1)
    assert len(rebuild_lines(caplog)) == 1 and "other settings" in rebuild_lines(caplog)[0].getMessage()
    assert not np.array_equal(other.x_train, first.x_train)  # other noise, offsets and levels
    assert np.array_equal(np.sort(other.y_train), np.sort(first.y_train))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ssmdefense"):
        forced = small(tmp_path, seed=1, rebuild=True)
    assert any("rebuild=True" in r.getMessage() for r in caplog.records)
    assert np.array_equal(forced.x_train, other.x_train)


# ----------------------------------------------------------------------------- determinism


def test_builds_are_identical(tmp_path, full):
    """Two builds (in one process, after the full build) give the same bytes, and each clip is the
    same as in the full dataset: a clip depends only on its voice, word, rate, pitch and seed."""
    a, b = small(tmp_path / "a"), small(tmp_path / "b")
    npz_a, npz_b = (folder_of(tmp_path / d) / "spoken-digits.npz" for d in "ab")
    assert npz_a.read_bytes() == npz_b.read_bytes()
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    full_rows = {row.tobytes() for x in (full[0].x_train, full[0].x_val, full[0].x_test) for row in x[:, 0]}
    assert all(row.tobytes() in full_rows for x in (a.x_train, a.x_test) for row in x[:, 0])


def test_two_processes_building_at_once(tmp_path):
    """Two processes filling one cache at the same time leave a valid cache (atomic writes of
    identical bytes); a third load uses it without rebuilding."""
    code = (
        "import sys; from ssmdefense.data import spoken_digits as s; "
        f"s.spoken_digits(cache_dir=sys.argv[1], **{TINY!r})"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    sdg._load(folder_of(tmp_path), sdg._settings(TINY["accents"], TINY["rates"], TINY["pitches"], 0))
    assert sorted(p.name for p in folder_of(tmp_path).iterdir()) == ["manifest.json", "spoken-digits.npz"]


# ---------------------------------------------------------------------------------- errors


def test_library_that_fails_to_load_is_one_line_error(tmp_path, monkeypatch):
    import espeakng_loader

    fake = tmp_path / "libespeak-ng.so"
    fake.write_text("not a library")
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(fake))
    with pytest.raises(sd.SSMDefenseError, match="cannot load the eSpeak NG library") as caught:
        sd.load_dataset("spoken-digits", cache_dir=str(tmp_path), **SMALL)
    assert "\n" not in str(caught.value)
    assert not folder_of(tmp_path).exists() or not any(folder_of(tmp_path).iterdir())  # nothing half-written


def test_missing_voice_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sdg.VOICES, "en-us", (("m1", "no-such-variant", "Alex", "klatt"), "f3"))
    with pytest.raises(sd.SSMDefenseError, match="lacks the voice variant.*no-such-variant") as caught:
        small(tmp_path)
    assert "\n" not in str(caught.value)


def test_missing_accent_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sdg.VOICES, "en-zz", (("m1", "f1", "Alex", "klatt"), "f3"))
    with pytest.raises(sd.SSMDefenseError, match=r"cannot set voice en-zz\+m1 \(no such voice\)") as caught:
        small(tmp_path, accents=("en-zz",))
    assert "\n" not in str(caught.value)
