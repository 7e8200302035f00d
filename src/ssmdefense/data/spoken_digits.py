"""Built-in dataset plugin: ``spoken-digits``, the words "zero" ... "nine" spoken by eSpeak NG.

A small, fully offline speech dataset for audio experiments that need no download: every clip is
synthesised on first use with the eSpeak NG library bundled in the ``espeakng-loader`` wheel
(called in-process through ``ctypes``; no system package, no subprocess), then cached.

- **Voices**: 40 voices = (accent, variant) pairs: 8 English accents (``ACCENTS``: en-us, en (British),
  en-gb-scotland, en-gb-x-rp, en-029 (Caribbean), en-us-nyc, en-gb-x-gbclan (Lancashire),
  en-gb-x-gbcwmd (West Midlands)) x 5 of eSpeak's voice variants each (``VOICES``: male, female,
  child and elderly variants, formant and Klatt synthesis), 40 distinct variants in all.
- **Split by voice**: per accent 4 voices train and 1 voice tests (32 / 8 voices, 80 / 20 %), so no
  test voice, and no test variant, is ever heard in training (test voices: en-us+f3, en+m3,
  en-gb-scotland+Annie, en-gb-x-rp+david, en-029+belinda, en-us-nyc+Gene, en-gb-x-gbclan+quincy,
  en-gb-x-gbcwmd+steph). Every voice says every word in every setting, so both splits are balanced
  over the 10 words: 1,920 train and 480 test clips.
- **Settings**: speaking rates ``RATES`` = 140, 180, 230 words per minute (eSpeak's default: 175) x
  base pitches ``PITCHES`` = 35, 65 (eSpeak's 0..100 scale, default 50); the pitch range
  (intonation) is drawn per clip from 20..80. 40 voices x 10 words x 6 settings = 2,400 clips.
- **Clips**: 16 kHz mono, 1 s, x float32 (N, 1, 16000) in [-1, 1], stored as 16-bit PCM. eSpeak's
  22,050 Hz output is resampled with ``librosa.resample`` (soxr_hq), its silence trimmed
  (``librosa.effects.trim``, 40 dB below the peak), the word placed at a random offset of up to
  0.25 s and zero-padded to 1 s, scaled to a random peak level in 0.3..0.9, and white noise added at
  a random 30..45 dB SNR (relative to the word's power). y int64: the digit (``classes``: "zero" ...).
- **Deterministic**: fixed voice lists and settings; the random draws of a clip come from a
  generator seeded with ``seed`` and a CRC of the clip's (voice, word, rate, pitch), which also
  seeds eSpeak's breath noise; each (voice, rate, pitch) is spoken by a private, freshly loaded copy
  of the library (eSpeak keeps state across utterances, see ``_ESpeak``). So a clip is the same
  bytes whatever else is built with it, in any process, with any number of threads (for the same
  versions of espeakng-loader, librosa and soxr). Each split is shuffled with ``seed``.

Defaults for attacks and models: ``eps`` = ``DEFAULT_EPS`` (0.001, L-inf on the waveform, -60 dBFS:
the loudest perturbation it allows has an SNR of about 37 dB on the median test clip and 26 dB on
the quietest), ``sequence="mel"``. ``info`` holds the voice lists, counts, settings, the source
(library versions), the build time and the cache path, and ``voice_test``: per test clip, the index
of its voice in ``info["test_voices"]``. ``groups`` names the voice of each training clip, so the
validation split that ``sd.load_dataset`` carves (``val_fraction`` of the training voices, default
10 %: 4 of the 32) holds out whole voices: like the test voices, the validation voices are never
heard in training (``ssmdefense.data.splits``; 1,680 train / 240 validation clips by default).

**Cache**: ``<root>/spoken-digits-v1/`` with ``spoken-digits.npz`` (no pickles) and
``manifest.json`` (format version, build settings, SHA-256 of the npz), where ``<root>`` is
``cache_dir``, else ``$SSMDEFENSE_CACHE_DIR``, else ``platformdirs.user_cache_dir("ssmdefense")``.
Both files are written atomically (temp file + ``os.replace``, manifest last) and the npz bytes are
deterministic, so processes building at once cannot corrupt it. A missing, partial or corrupt
cache, or one built with other settings, is detected on load and rebuilt (one log line says why);
``rebuild=True``, or deleting the folder, forces a rebuild. Building takes about 7 s on 2 CPU cores
(measured: 6.1 s of CPU, 7.5 s wall on a busy machine; per clip about 0.6 ms of synthesis and
1 ms of resampling and trimming, per voice and setting 4 ms to load a fresh library copy, plus
librosa's first import); loading the cache about 0.3 s. The cache takes 77 MB.

Parameters (keyword-only): ``cache_dir=None``, ``rebuild=False``, ``seed=0``; for smaller
variants (tests, quick experiments) ``accents`` (a subset of ``ACCENTS``, default all), ``rates``
(default ``RATES``) and ``pitches`` (default ``PITCHES``).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .. import progress
from ..errors import SSMDefenseError
from .base import Dataset

log = logging.getLogger("ssmdefense")

NAME = "spoken-digits"
FORMAT_VERSION = 1
CACHE_FOLDER = "spoken-digits-v1"
DATA_FILE, MANIFEST_FILE = "spoken-digits.npz", "manifest.json"
DEFAULT_EPS = 0.001  # L-inf waveform budget: about 37 dB worst-case SNR on the median test clip
# `ssmdefense defend` settings that fit the default run in under 5 minutes on 2 cores (docs/audio.md)
RUN_DEFAULTS = {"epochs": 8, "eval_samples": 240}

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# accent (an eSpeak NG language in espeak-ng-data/lang/gmw) -> (4 train variants, 1 test variant);
# variants are files in espeak-ng-data/voices/!v. Every variant is used by exactly one voice.
VOICES = {
    "en-us": (("m1", "f1", "Alex", "klatt"), "f3"),
    "en": (("m2", "f2", "Andy", "edward"), "m3"),
    "en-gb-scotland": (("m4", "f4", "Denis", "adam"), "Annie"),
    "en-gb-x-rp": (("m6", "f5", "Jacky", "Reed"), "david"),
    "en-029": (("m7", "Alicia", "Mario", "mike2"), "belinda"),
    "en-us-nyc": (("m8", "Andrea", "Michael", "zac"), "Gene"),
    "en-gb-x-gbclan": (("antonio", "anika", "robert", "grandma"), "quincy"),
    "en-gb-x-gbcwmd": (("travis", "linda", "paul", "grandpa"), "steph"),
}
ACCENTS = tuple(VOICES)
RATES = (140, 180, 230)  # words per minute (eSpeak: 80..450, default 175)
PITCHES = (35, 65)  # base pitch (eSpeak: 0..100, default 50)
PITCH_RANGE = (20, 80)  # pitch range drawn per clip (eSpeak: 0 monotone .. 100, default 50)
SNR_DB = (30.0, 45.0)  # white noise, drawn per clip
PEAK = (0.3, 0.9)  # peak level, drawn per clip
MAX_OFFSET = SAMPLE_RATE // 4  # the word starts within the first 0.25 s
TRIM_DB = 40  # silence = more than 40 dB below the peak
RESAMPLER = "soxr_hq"

# eSpeak NG's C API (speak_lib.h)
AUDIO_OUTPUT_SYNCHRONOUS = 2  # like RETRIEVAL (audio to the callback), returns when done
INITIALIZE_DONT_EXIT = 0x8000  # without it, missing data makes the library call exit()
POS_CHARACTER = 1
CHARS_UTF8 = 1
EE_OK, EE_NOT_FOUND = 0, 2
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
# int callback(short *wav, int numsamples, espeak_EVENT *events); 0 = continue, 1 = abort
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_PROTOTYPES = {  # name: (argtypes, restype)
    "espeak_Initialize": ([ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
    "espeak_Info": ([ctypes.c_void_p], ctypes.c_char_p),
    "espeak_SetSynthCallback": ([_SYNTH_CALLBACK], None),
    "espeak_SetVoiceByName": ([ctypes.c_char_p], ctypes.c_int),
    "espeak_SetParameter": ([ctypes.c_int, ctypes.c_int, ctypes.c_int], ctypes.c_int),
    "espeak_Synth": (
        [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ],
        ctypes.c_int,
    ),
    "espeak_Synchronize": ([], ctypes.c_int),
    "espeak_Terminate": ([], ctypes.c_int),
    "espeak_ng_SetRandSeed": ([ctypes.c_long], ctypes.c_int),
}

_build_lock = threading.Lock()  # one build at a time per process (the cache files, eSpeak's globals)


def _find_srand():
    """libc's ``srand`` (the process-wide seed of ``rand()``, which eSpeak uses), or None."""
    try:
        srand = ctypes.CDLL(None).srand if sys.platform != "win32" else ctypes.cdll.msvcrt.srand
    except (OSError, AttributeError):
        return None
    srand.argtypes, srand.restype = [ctypes.c_uint], None
    return srand


_libc_srand = _find_srand()


def _fail(message: str) -> SSMDefenseError:
    return SSMDefenseError(f"{NAME}: {' '.join(str(message).split())}")


def _loader():
    """(library path, data path, espeakng-loader version) of the bundled eSpeak NG."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise _fail(f"cannot synthesise: espeakng-loader is not installed ({exc})") from None
    try:
        lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except Exception as exc:  # it raises RuntimeError when its data folder is missing
        raise _fail(f"espeakng-loader has no eSpeak NG data: {exc}") from None
    return lib, data, importlib.metadata.version("espeakng-loader")


class _ESpeak:
    """A private instance of libespeak-ng: a fresh copy of the shared library, for one voice.

    eSpeak keeps state across utterances that no API call resets (the pitch-flutter phase of its
    wave generator is a function-level static; espeak_Initialize/Terminate keep it): the same word
    synthesised twice in one process differs slightly, even in length. A copy of the .so, loaded
    from its own path, gets its own globals in their initial state, so what it says depends only on
    the calls made on it. Loading, initialising and setting a voice take about 4 ms; ``close``
    unloads the copy again.
    """

    def __init__(self, library: str, data: str, workdir: str):
        copy = Path(workdir) / f"espeak-{uuid.uuid4().hex}{Path(library).suffix}"
        try:
            shutil.copyfile(library, copy)
            self.lib = ctypes.CDLL(str(copy))
        except OSError as exc:
            raise _fail(f"cannot load the eSpeak NG library {library}: {exc}") from None
        finally:
            if sys.platform != "win32":  # the loaded image stays mapped
                copy.unlink(missing_ok=True)
        for name, (argtypes, restype) in _PROTOTYPES.items():
            try:
                fn = getattr(self.lib, name)
            except AttributeError:
                raise _fail(f"the eSpeak NG library {library} has no function {name}") from None
            fn.argtypes, fn.restype = argtypes, restype
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced while the library may call it
        self.sample_rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            self.close()
            raise _fail(f"eSpeak NG failed to initialise with its data in {data}")
        self.lib.espeak_SetSynthCallback(self._callback)
        self.version = (self.lib.espeak_Info(None) or b"?").decode()

    def _collect(self, wav, n, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())  # int16 (n)
        return 0

    def set_voice(self, accent: str, variant: str) -> None:
        # eSpeak ignores an unknown variant without an error, so its file is checked by the caller.
        status = self.lib.espeak_SetVoiceByName(f"{accent}+{variant}".encode())
        if status != EE_OK:
            reason = "no such voice" if status == EE_NOT_FOUND else f"error {status}"
            raise _fail(f"eSpeak NG cannot set voice {accent}+{variant} ({reason})")

    def say(self, word: str, rate: int, pitch: int, pitch_range: int, seed: int) -> np.ndarray:
        """The samples (int16, at ``sample_rate``) of ``word`` in the current voice.

        Breath noise (voices with a ``breath`` setting) comes from libc's ``rand()``, which eSpeak
        seeds with the time, and from eSpeak's own generator: both are seeded with ``seed`` first.
        """
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, value, 0)
        self.lib.espeak_ng_SetRandSeed(seed)
        if _libc_srand is not None:
            _libc_srand(seed)
        self._chunks = []
        text = word.encode() + b"\0"
        status = self.lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if status != EE_OK or not self._chunks:
            raise _fail(f"eSpeak NG produced no audio for {word!r} (status {status})")
        return np.concatenate(self._chunks)  # (T)

    def close(self) -> None:
        self.lib.espeak_Terminate()
        import _ctypes

        unload = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
        if unload is not None:
            unload(self.lib._handle)


def _check_variants(data: str, accents) -> None:
    missing = [
        v for a in accents for v in (*VOICES[a][0], VOICES[a][1]) if not (Path(data) / "voices" / "!v" / v).is_file()
    ]
    if missing:
        raise _fail(f"eSpeak NG data in {data} lacks the voice variant(s) {', '.join(missing)}")


def _place(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Trimmed word (T) -> 1 s clip (CLIP_SAMPLES) float64: offset, peak level, white noise."""
    wave = wave[:CLIP_SAMPLES]  # crop (keeps the onset); the longest words take about 0.8 s
    offset = int(rng.integers(0, min(MAX_OFFSET, CLIP_SAMPLES - len(wave)) + 1))
    peak, snr_db = rng.uniform(*PEAK), rng.uniform(*SNR_DB)
    wave = wave * (peak / np.abs(wave).max())
    noise_std = np.sqrt(np.mean(wave**2) / 10.0 ** (snr_db / 10.0))
    clip = rng.standard_normal(CLIP_SAMPLES) * noise_std  # (T)
    clip[offset : offset + len(wave)] += wave
    return np.clip(clip, -1.0, 1.0)


def _synthesise(accents, rates, pitches, seed: int) -> tuple[dict, dict]:
    """Every clip of ``accents`` -> (arrays to cache, info). Deterministic (see the module docstring)."""
    import librosa

    library, data, loader_version = _loader()
    _check_variants(data, accents)
    train_voices = [f"{a}+{v}" for a in accents for v in VOICES[a][0]]
    test_voices = [f"{a}+{VOICES[a][1]}" for a in accents]
    split = {"train": ([], [], []), "test": ([], [], [])}  # pcm, label, voice index
    version, longest = "?", 0
    with tempfile.TemporaryDirectory(prefix="ssmdefense-espeak-", ignore_cleanup_errors=True) as workdir:
        for name, voices in (("train", train_voices), ("test", test_voices)):
            pcm, labels, voice_ix = split[name]
            settings = list(itertools.product(enumerate(voices), rates, pitches))
            what = f"spoken-digits: synthesising the {name} clips"
            for (v_ix, voice), rate, pitch in progress.track(settings, what, unit="voice settings"):
                engine = _ESpeak(library, data, workdir)  # fresh: the words depend only on voice, rate, pitch
                try:
                    version = engine.version
                    engine.set_voice(*voice.split("+"))
                    for label, word in enumerate(WORDS):
                        key = zlib.crc32(f"{voice}|{word}|{rate}|{pitch}".encode())
                        rng = np.random.default_rng([seed, key])
                        pitch_range = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
                        raw = engine.say(word, rate, pitch, pitch_range, seed=int(rng.integers(2**31)))  # (T)
                        wave = librosa.resample(
                            raw / 32768.0, orig_sr=engine.sample_rate, target_sr=SAMPLE_RATE, res_type=RESAMPLER
                        )  # (T)
                        wave, _ = librosa.effects.trim(wave, top_db=TRIM_DB)  # (T')
                        if not np.abs(wave).max() > 0:
                            raise _fail(f"eSpeak NG voice {voice} produced silence for {word!r}")
                        longest = max(longest, len(wave))
                        pcm.append(np.round(_place(wave, rng) * 32767).astype(np.int16))  # (T)
                        labels.append(label)
                        voice_ix.append(v_ix)
                finally:
                    engine.close()
    arrays = {}
    for i, name in enumerate(("train", "test")):
        pcm, labels, voice_ix = split[name]
        order = np.random.default_rng([seed, i]).permutation(len(labels))
        arrays[f"x_{name}"] = np.stack(pcm)[order][:, None]  # (N 1 T) int16
        arrays[f"y_{name}"] = np.asarray(labels, dtype=np.int64)[order]  # (N)
        arrays[f"voice_{name}"] = np.asarray(voice_ix, dtype=np.int16)[order]  # (N)
    info = {
        "train_voices": train_voices,
        "test_voices": test_voices,
        "voices_disjoint": not set(train_voices) & set(test_voices),
        "n_clips": len(split["train"][1]) + len(split["test"][1]),
        "n_train": len(split["train"][1]),
        "n_test": len(split["test"][1]),
        "source": f"eSpeak NG via espeakng-loader {loader_version}",
        "espeak_ng_version": version,
        "longest_word_seconds": round(longest / SAMPLE_RATE, 3),  # above 1: some words were cropped
    }
    return arrays, info


def _settings(accents, rates, pitches, seed: int) -> dict:
    """Everything the arrays depend on; a cache built with other settings is rebuilt."""
    try:
        loader_version = importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError:
        loader_version = None  # a rebuild then says that it is missing
    return {
        "format": FORMAT_VERSION,
        "espeakng_loader": loader_version,
        "seed": seed,
        "voices": {a: [list(VOICES[a][0]), VOICES[a][1]] for a in accents},
        "words": list(WORDS),
        "rates": list(rates),
        "pitches": list(pitches),
        "pitch_range": list(PITCH_RANGE),
        "snr_db": list(SNR_DB),
        "peak": list(PEAK),
        "max_offset": MAX_OFFSET,
        "trim_db": TRIM_DB,
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "resampler": RESAMPLER,
    }


# ----------------------------------------------------------------------------------------- cache


def cache_folder(cache_dir=None) -> Path:
    """Where the dataset is cached: ``<cache_dir or $SSMDEFENSE_CACHE_DIR or the user cache>/spoken-digits-v1``."""
    root = cache_dir or os.environ.get("SSMDEFENSE_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("ssmdefense")
    return Path(root).expanduser() / CACHE_FOLDER


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """``write(file)`` into a temp file next to ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_npz(f, arrays: dict) -> None:
    """An uncompressed .npz that ``np.load`` reads, with fixed timestamps: same arrays, same bytes."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in sorted(arrays):
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(entry, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(arrays[name]), allow_pickle=False)


def _save(folder: Path, arrays: dict, settings: dict, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # left by a build that was killed; not another one's, running now
        try:
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink()
        except OSError:
            pass
    data_path = folder / DATA_FILE
    _atomic_write(data_path, lambda f: _write_npz(f, arrays))
    manifest = {
        "format": FORMAT_VERSION,
        "settings": settings,
        "sha256": _sha256(data_path),
        "data_file": DATA_FILE,
        "info": info,
    }
    _atomic_write(folder / MANIFEST_FILE, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


class _StaleCache(Exception):
    """The cache cannot be used; the message says why."""


def _load(folder: Path, settings: dict) -> tuple[dict, dict]:
    """(arrays, manifest info) of a complete, intact cache built with ``settings``, else _StaleCache."""
    manifest_path, data_path = folder / MANIFEST_FILE, folder / DATA_FILE
    if not manifest_path.is_file():
        raise _StaleCache("has no manifest" if data_path.exists() else "is empty")
    try:
        manifest = json.loads(manifest_path.read_text())
        digest, info = manifest["sha256"], manifest["info"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _StaleCache(f"has an unreadable manifest ({type(exc).__name__})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise _StaleCache(f"has format {manifest.get('format')!r}, not {FORMAT_VERSION}")
    if manifest.get("settings") != settings:
        raise _StaleCache("was built with other settings")
    if not data_path.is_file():
        raise _StaleCache(f"has no {DATA_FILE}")
    if _sha256(data_path) != digest:
        raise _StaleCache(f"has a {DATA_FILE} that does not match its checksum")
    n_per_voice = len(WORDS) * len(settings["rates"]) * len(settings["pitches"])
    n_train_voices = sum(len(train) for train, _ in settings["voices"].values())
    expected = {"train": n_train_voices * n_per_voice, "test": len(settings["voices"]) * n_per_voice}
    try:
        with np.load(data_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for name, n in expected.items():
            x, y, v = arrays[f"x_{name}"], arrays[f"y_{name}"], arrays[f"voice_{name}"]
            if x.shape != (n, 1, CLIP_SAMPLES) or x.dtype != np.int16 or y.shape != (n,) or v.shape != (n,):
                raise ValueError(f"{name} arrays of shapes {x.shape}, {y.shape}, {v.shape}")
            if n and (y.min() < 0 or y.max() >= len(WORDS)):
                raise ValueError("labels out of range")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise _StaleCache(f"has an unusable {DATA_FILE} ({' '.join(str(exc).split())})") from None
    return arrays, info


# --------------------------------------------------------------------------------------- dataset


def _from_pcm(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.float32)  # (N 1 T)
    x /= 32767.0
    return x


def spoken_digits(
    *,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    seed: int = 0,
    accents=None,
    rates=None,
    pitches=None,
) -> Dataset:
    """The words "zero" ... "nine" by 40 eSpeak NG voices, 1,920 train / 480 test clips (disjoint voices).

    Built on first use (a few seconds) and cached; see the module docstring for the details.
    """
    accents = ACCENTS if accents is None else tuple([accents] if isinstance(accents, str) else accents)
    unknown = [a for a in accents if a not in VOICES]
    if unknown or not accents or len(set(accents)) != len(accents):
        raise _fail(f"accents must be distinct names among {', '.join(ACCENTS)}; got {', '.join(accents) or '(none)'}")
    rates = RATES if rates is None else tuple(int(r) for r in np.atleast_1d(rates))
    pitches = PITCHES if pitches is None else tuple(int(p) for p in np.atleast_1d(pitches))
    if not rates or not all(80 <= r <= 450 for r in rates):
        raise _fail(f"rates must be words per minute in 80..450; got {rates}")
    if not pitches or not all(0 <= p <= 100 for p in pitches):
        raise _fail(f"pitches must be in 0..100; got {pitches}")
    folder = cache_folder(cache_dir)
    with _build_lock:
        settings = _settings(accents, rates, pitches, int(seed))
        try:
            if rebuild:
                raise _StaleCache("rebuild")
            t0 = time.perf_counter()
            arrays, info = _load(folder, settings)
            info["load_seconds"] = round(time.perf_counter() - t0, 3)
        except _StaleCache as why:
            if str(why) == "is empty":
                log.info("%s: building the dataset on first use (about 10 s) into %s", NAME, folder)
            elif rebuild:
                log.info("%s: rebuilding the dataset in %s (rebuild=True)", NAME, folder)
            else:
                log.warning("%s: cache %s %s; rebuilding it", NAME, folder, why)
            t0 = time.perf_counter()
            arrays, info = _synthesise(accents, rates, pitches, int(seed))
            info["build_seconds"] = round(time.perf_counter() - t0, 2)
            log.info("%s: built %d clips in %.1f s", NAME, info["n_clips"], info["build_seconds"])
            try:
                _save(folder, arrays, settings, info)
            except OSError as exc:
                log.warning("%s: could not write the cache in %s (%s); using the dataset uncached", NAME, folder, exc)
    info = {**info, "cache": str(folder), "settings": settings, "voice_test": arrays["voice_test"]}
    return Dataset(
        NAME,
        _from_pcm(arrays["x_train"]),
        arrays["y_train"],
        _from_pcm(arrays["x_test"]),
        arrays["y_test"],
        nb_classes=len(WORDS),
        clip_values=(-1.0, 1.0),
        sequence="mel",
        info=info,
        sample_rate=SAMPLE_RATE,
        eps=DEFAULT_EPS,
        classes=list(WORDS),
        defaults=dict(RUN_DEFAULTS),
        groups=np.asarray(info["train_voices"])[arrays["voice_train"]],  # validation holds out whole voices
    )
