"""Decoding helpers shared by the audio dataset loaders (Speech Commands, UrbanSound8K, ...).

Everything here turns audio files into float32 mono waveforms in [-1, 1] of one fixed length:

1. **Decode** with ``soundfile`` (libsndfile: WAV/FLAC/OGG, PCM 8/16/24/32-bit and float). Only
   when soundfile cannot read a file is ``librosa.load`` tried (it goes through audioread/FFmpeg
   where those exist). ``torchaudio.load`` is not used: it needs torchcodec and FFmpeg. PCM is
   scaled by libsndfile to [-1, 1) (16-bit: divided by 32768; unsigned 8-bit is centred first).
2. **Reject** a file that cannot be decoded, holds no samples, or holds NaN/Inf: ``decode``
   raises :class:`AudioReadError` (an ``SSMDefenseError``) whose ``reason`` is ``"unreadable"``,
   ``"empty"`` or ``"non_finite"``. The loaders skip such files and count them.
3. **Downmix** to mono by averaging the channels (no channel is preferred).
4. **Resample** to the requested rate with ``librosa.resample`` (``res_type="soxr_hq"``, librosa's
   default), only when the file's rate differs.
5. **Clip** to [-1, 1]: a float WAV may hold larger values and resampling a full-scale signal may
   overshoot slightly; such files are counted as ``clipped``.
6. **Fix the length** with :func:`fix_length`: a short clip is padded with zeros *at the end* (the
   sound keeps its onset at t = 0, as in torchaudio's and TensorFlow's Speech Commands pipelines);
   a long clip is cropped *keeping its start* (the first ``length`` samples), which is also what
   ``librosa.util.fix_length`` does. ``align="center"`` pads/crops symmetrically instead.

:func:`load_clips` does all of that for a list of files, in the given (deterministic) order, with
a small thread pool (libsndfile and soxr release the GIL), writing into one preallocated array and
collecting what was skipped and converted, so each loader logs one summary line per load.

:class:`LazyClips` does the same for one file at a time, when an item is read (a dataset too large
to hold in memory, read through a ``DataLoader`` whose workers decode): it holds only the paths and
labels, and a file that cannot be used raises a one-line ``SSMDefenseError`` naming it instead of
being skipped (the index of every item is fixed before anything is decoded).

:class:`ClipDecoder` joins the two (``decoder.load`` is :func:`load_clips`, ``decoder(path)`` one
clip of :class:`LazyClips`): it is the audio decoder of the file-dataset template of
``ssmdefense.data.files`` (a selection of files per split, one decoder, eager and lazy loading from
the same code), which ``gtsrb`` follows too with ``image_io.ImageDecoder``.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import progress
from . import files
from .files import FileDecoder, LazyFiles, UnusableFile, default_workers, one_line, ordered_map

RES_TYPE = "soxr_hq"  # librosa's default resampler
#: how every clip of a folder-backed audio dataset is made to fit (recorded in its ``info["settings"]``)
CONVERSION = {
    "pad": "zeros at end",
    "crop": "keep start",
    "resampler": f"librosa {RES_TYPE}",
    "downmix": "mean of channels",
}
SKIP_REASONS = {
    "unreadable": "unreadable",
    "empty": "empty (no samples)",
    "non_finite": "non-finite (NaN/Inf samples)",
}


class AudioReadError(UnusableFile):
    """A file that cannot be used as a clip; ``reason`` is a key of ``SKIP_REASONS``."""

    def __init__(self, path, reason: str, detail: str = ""):
        text = f"{path}: {SKIP_REASONS.get(reason, reason)}"
        super().__init__(path, f"{text} ({detail})" if detail else text)
        self.reason, self.detail = reason, detail


@dataclass
class DecodedAudio:
    """One decoded clip: ``wave`` float32 (T,) mono at the requested rate, in [-1, 1], plus what
    the file was (``source_rate``, ``channels``, libsndfile ``subtype`` such as "PCM_16")."""

    wave: np.ndarray
    source_rate: int
    channels: int
    subtype: str
    source_frames: int
    clipped: bool = False


UNKNOWN_WHEN_LAZY = "unknown: lazy=true decodes each clip when it is read"  # info entries only decoding knows


@contextmanager
def _quiet_fallback():
    """Hide librosa's "PySoundFile failed" and audioread deprecation warnings: the fallback is
    ours, and a file it cannot read is reported by the loader. ``warnings.catch_warnings`` is not
    thread-safe, so only the main thread changes the filters (worker threads see them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySoundFile failed")
        warnings.filterwarnings("ignore", message=".*audioread", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="audioread")
        yield


def _read_raw(path) -> tuple[np.ndarray, int, str]:
    """(frames, channels) float32, rate, subtype; soundfile first, librosa.load as the fallback."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            subtype = f.subtype or "?"
            data = f.read(dtype="float32", always_2d=True)
            return data, int(f.samplerate), subtype
    except Exception as sf_exc:  # libsndfile cannot parse it: try librosa (audioread / FFmpeg)
        first = f"{type(sf_exc).__name__}: {sf_exc}"
    try:
        import librosa

        with _quiet_fallback():
            data, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except Exception:
        raise AudioReadError(path, "unreadable", one_line(first)) from None
    data = np.asarray(data, dtype=np.float32)
    data = data[:, None] if data.ndim == 1 else data.T  # librosa gives (channels, frames)
    return np.ascontiguousarray(data), int(rate), "librosa"


def decode(path, sample_rate: int | None = None) -> DecodedAudio:
    """Decode ``path`` to a mono float32 waveform at ``sample_rate`` (None: the file's own rate).

    Raises :class:`AudioReadError` for a file that cannot be decoded (``reason="unreadable"``),
    has no samples (``"empty"``) or contains NaN/Inf (``"non_finite"``).
    """
    data, rate, subtype = _read_raw(path)
    frames, channels = data.shape
    if frames == 0 or channels == 0:
        raise AudioReadError(path, "empty")
    if rate <= 0:
        raise AudioReadError(path, "unreadable", f"sample rate {rate}")
    if not np.isfinite(data).all():
        raise AudioReadError(path, "non_finite")
    wave = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float32)
    if sample_rate is not None and rate != sample_rate:
        import librosa

        wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate, res_type=RES_TYPE)
    wave = np.asarray(wave, dtype=np.float32)
    clipped = bool(np.abs(wave).max(initial=0.0) > 1.0)
    if clipped:
        wave = np.clip(wave, -1.0, 1.0)
    return DecodedAudio(wave, rate, channels, subtype, frames, clipped)


def read_wav(path, sample_rate: int | None = None) -> np.ndarray:
    """The mono float32 waveform (T,) of ``path`` at ``sample_rate``; see :func:`decode`."""
    return decode(path, sample_rate).wave


def fix_length(wave: np.ndarray, length: int, *, align: str = "start") -> np.ndarray:
    """``wave`` (T,) padded with zeros or cropped to exactly ``length`` samples.

    ``align="start"`` (the loaders' choice): pad at the end, crop keeping the first ``length``
    samples. ``align="center"``: pad both sides equally (the extra sample at the end) and crop the
    middle. Returns ``wave`` itself when it already has the right length.
    """
    if align not in ("start", "center"):
        raise ValueError(f"align must be 'start' or 'center'; got {align!r}")
    n = wave.shape[-1]
    if n == length:
        return wave
    if n > length:
        start = 0 if align == "start" else (n - length) // 2
        return wave[..., start : start + length]
    before = 0 if align == "start" else (length - n) // 2
    out = np.zeros(wave.shape[:-1] + (length,), dtype=wave.dtype)
    out[..., before : before + n] = wave
    return out


@dataclass
class ClipSet:
    """What :func:`load_clips` returns: ``x`` (K, 1, length) float32 for the K files kept (in the
    order given), ``kept`` their indices into the input list, ``skipped`` (path, reason, detail)
    for the others, and counts of conversions."""

    x: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    source_rates: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    subtypes: Counter = field(default_factory=Counter)
    resampled: int = 0
    downmixed: int = 0
    padded: int = 0
    cropped: int = 0
    clipped: int = 0
    decoder_fallback: int = 0  # read by librosa.load because soundfile could not

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason, _ in self.skipped))

    def conversions(self) -> dict:
        return {
            "resampled": self.resampled,
            "downmixed": self.downmixed,
            "padded": self.padded,
            "cropped": self.cropped,
            "clipped": self.clipped,
            "decoder_fallback": self.decoder_fallback,
            "source_rates": dict(sorted(self.source_rates.items())),
            "source_channels": dict(sorted(self.channels.items())),
            "source_subtypes": dict(sorted(self.subtypes.items())),
        }


def load_clips(paths, *, sample_rate: int, length: int, num_workers: int | None = None) -> ClipSet:
    """Decode each of ``paths`` (see :func:`decode`), fixed to ``length`` samples at ``sample_rate``.

    Files that raise :class:`AudioReadError` are skipped and listed in ``ClipSet.skipped``; the
    others fill ``x`` in the order of ``paths``.
    """
    paths = [Path(p) for p in paths]
    workers = default_workers() if num_workers is None else int(num_workers)

    def work(path):
        try:
            clip = decode(path, sample_rate)
        except AudioReadError as exc:
            return exc
        except Exception as exc:  # anything else the decoders throw at a broken file
            return AudioReadError(path, "unreadable", one_line(f"{type(exc).__name__}: {exc}"))
        n = clip.wave.shape[0]
        clip.wave = fix_length(clip.wave, length)
        return clip, n

    out = ClipSet(np.zeros((len(paths), 1, length), dtype=np.float32), np.zeros(0, dtype=np.int64))
    kept: list[int] = []
    with _quiet_fallback():
        decoded = progress.track(ordered_map(work, paths, workers), "decoding audio files", len(paths), "files")
        for i, result in enumerate(decoded):
            if isinstance(result, AudioReadError):
                out.skipped.append((str(paths[i]), result.reason, result.detail))
                continue
            clip, n = result
            out.x[len(kept), 0] = clip.wave
            kept.append(i)
            out.source_rates[clip.source_rate] += 1
            out.channels[clip.channels] += 1
            out.subtypes[clip.subtype] += 1
            out.resampled += clip.source_rate != sample_rate
            out.downmixed += clip.channels > 1
            out.padded += n < length
            out.cropped += n > length
            out.clipped += clip.clipped
            out.decoder_fallback += clip.subtype == "librosa"
    if len(kept) < len(paths):
        try:
            out.x.resize((len(kept), 1, length), refcheck=False)  # shrink in place, no copy
        except ValueError:
            out.x = out.x[: len(kept)].copy()
    out.kept = np.asarray(kept, dtype=np.int64)
    return out


@dataclass(frozen=True)
class ClipDecoder(FileDecoder):
    """Audio files as mono float32 clips (1, ``length``) in [-1, 1] at ``sample_rate``, read by the mel
    front end by default: :func:`decode` then :func:`fix_length`, one file (``decoder(path)``, a
    lazy item) or many (:func:`load_clips`, the eager load). ``name`` (the dataset) starts the error
    of a file a lazy item cannot use."""

    name: str
    sample_rate: int
    length: int

    clip_values = (-1.0, 1.0)
    sequence = "mel"

    @property
    def shape(self) -> tuple[int, int]:
        return (1, self.length)

    def __call__(self, path) -> np.ndarray:
        try:
            with _quiet_fallback():
                clip = decode(path, self.sample_rate)
        except AudioReadError as exc:
            problem = SKIP_REASONS.get(exc.reason, exc.reason) + (f" ({exc.detail})" if exc.detail else "")
        except Exception as exc:  # anything else the decoders throw at a broken file
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        else:
            return np.ascontiguousarray(fix_length(clip.wave, self.length))[None]  # (1 T)
        raise UnusableFile(path, one_line(f"{self.name}: {path} is {problem}"))

    def load(self, paths, num_workers: int | None) -> ClipSet:
        return load_clips(paths, sample_rate=self.sample_rate, length=self.length, num_workers=num_workers)

    def why_none(self, loaded: ClipSet, total: int, root) -> str:
        return describe_skips(loaded.skipped, total, root)

    def items(self, paths, labels) -> LazyClips:
        return LazyClips(paths, labels, self.sample_rate, self.length, name=self.name)


class LazyClips(LazyFiles):
    """Clips decoded when read: item ``i`` is ``(x, y)``, ``x`` the float32 tensor (1, ``length``) of
    ``paths[i]`` at ``sample_rate`` (the conversion of :func:`load_clips`: :func:`decode`, then
    :func:`fix_length`) and ``y`` the int ``labels[i]``.

    A :class:`~ssmdefense.data.files.LazyFiles` of a :class:`ClipDecoder`: it holds only the paths
    and the labels, pickles small (``DataLoader`` workers) and opens no file when created. A file
    that cannot be decoded, holds no samples or holds NaN/Inf raises :class:`SSMDefenseError` with
    one line naming it (``name`` starts the message): unlike :func:`load_clips` it cannot be
    skipped, since the dataset's length and labels are fixed before any file is read.
    """

    def __init__(self, paths, labels, sample_rate: int, length: int, *, name: str = "audio"):
        super().__init__(paths, labels, ClipDecoder(str(name), int(sample_rate), int(length)))
        self.sample_rate, self.length, self.name = int(sample_rate), int(length), str(name)

    def __repr__(self) -> str:
        return f"LazyClips({len(self)} clips, sample_rate={self.sample_rate}, length={self.length})"


def merge_conversions(clipsets) -> dict:
    """The :meth:`ClipSet.conversions` of several loads added up (counts summed, per-value counts
    merged and sorted), for a dataset's ``info["converted"]``."""
    merged: dict = {}
    for c in clipsets:
        for key, value in c.conversions().items():
            if isinstance(value, dict):
                slot = merged.setdefault(key, {})
                for k, n in value.items():
                    slot[k] = slot.get(k, 0) + n
            else:
                merged[key] = merged.get(key, 0) + value
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in merged.items()}


def describe_skips(skipped, total: int, root=None, shown: int = 3) -> str:
    """'skipped 3 of 120 audio files (1 empty (no samples), 2 unreadable): a.wav, b.wav, c.wav'."""
    counts = Counter(reason for _, reason, _ in skipped)
    parts = ", ".join(f"{n} {SKIP_REASONS.get(r, r)}" for r, n in sorted(counts.items()))
    names = [_relative(p, root) for p, _, _ in skipped[:shown]]
    more = ", ..." if len(skipped) > shown else ""
    return f"skipped {len(skipped)} of {total} audio files ({parts}): {', '.join(names)}{more}"


def _relative(path, root) -> str:
    if root is None:
        return str(path)
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def skipped_examples(skipped, root=None, limit: int = 100) -> list[dict]:
    """Up to ``limit`` skipped files as {"path", "reason", "detail"} (paths relative to ``root``)."""
    return [{"path": _relative(p, root), "reason": r, **({"detail": d} if d else {})} for p, r, d in skipped[:limit]]


def decode_splits(
    name: str, splits: dict, *, sample_rate: int, length: int, num_workers: int | None, root: Path
) -> tuple[dict, list, int, dict]:
    """Decode ``splits`` (``{split: (paths, labels)}``, the dataset's selection) with a
    :class:`ClipDecoder` (``files.decode_splits``): ``({split: (x, y)}`` of the clips that decoded,
    the skipped files ``[(path, reason, detail)]``, how many files there were, the merged
    conversions). A split none of whose files decodes is an error naming ``name``."""
    decoder = ClipDecoder(name, sample_rate, length)
    labelled, loaded = files.decode_splits(name, splits, decoder, num_workers=num_workers, root=root)
    skipped = [s for clips in loaded.values() for s in clips.skipped]
    total = sum(len(paths) for paths, _ in splits.values())
    return labelled, skipped, total, merge_conversions(loaded.values())
