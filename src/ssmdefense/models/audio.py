"""Audio sequence modes: mono waveforms (N, 1, T) -> (N, L, D), inside the model.

- ``frames``: the waveform cut into L = ceil(T / frame) steps of ``frame`` samples (the "rows" of
  audio); the last frame is zero-padded when T is not a multiple of ``frame``.
- ``samples``: one sample per step, L = T, D = 1.
- ``mel``: a log-mel front end, torchaudio ``MelSpectrogram`` (power) + ``AmplitudeToDB``
  (``top_db``), frames as steps: L = 1 + T // hop, D = n_mels. Its settings follow librosa's
  defaults where torchaudio has a choice (Slaney mel scale and area normalisation, a periodic Hann
  window centred in an ``n_fft`` frame, centred frames with reflect padding) so that
  ``librosa.feature.melspectrogram`` with the same numbers gives the same spectrogram; every
  setting is recorded in ``params`` and therefore in checkpoints.

The mel front end is part of the classifier's model, so attacks perturb the waveform (the
``waveform`` attack space, the default). With ``attack_space="features"`` the classifier takes the
log-mel spectrogram itself, as a one-channel image (1, n_mels, frames) in dB, and attacks perturb
it directly (the thesis's second threat model): ``prepare`` turns waveforms into that input.

``kernel`` picks the implementation of the log-mel step (``auto|torch|numba``; the settings and
the results are the same): ``torch`` is torchaudio's modules; ``numba`` computes the same
``torch.stft`` (with a hand-written backward, ``ssmdefense.kernels.stft.stft``) and then the fused
Numba kernel ``ssmdefense.kernels.logmel.log_mel`` (power, mel filterbank, dB and top_db in one pass,
forward and backward); ``auto`` picks per device from
``AUTO`` (what measured faster). It is recorded in ``params``, so a checkpoint rebuilds it (older
checkpoints without it get the default).

The body sees ``(dB + 40) / 20`` (one unit is 20 dB, a factor of ten in amplitude; -40 dB is a
typical level of the speech in these datasets, so the inputs are centred near zero and of order
one, where raw dB values made the first layer's outputs large and training slow). The attack
budget in the features space is in dB.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..kernels.backend import KernelChoice, check_kernel
from ..kernels.logmel import log_mel
from ..kernels.stft import stft
from ..validation import integer, is_number, positive

ATTACK_SPACES = ("waveform", "features")
DB_REFERENCE, DB_PER_UNIT = -40.0, 20.0  # the body sees (dB - DB_REFERENCE) / DB_PER_UNIT
AMIN = 1e-10  # AmplitudeToDB's floor on the power: 10 * log10(AMIN) = -100 dB
# kernel="auto" per device type, from 64 clips at the default settings, float32, forward+backward side by side
# (benchmarks/kernels.json, log_mel). CPU: numba, 3.4x (1 s clips, one thread) and 1.8x (4 s) faster than
# torchaudio, with the STFT's backward by hand (kernels/stft.py) and the rest fused (kernels/logmel.py).
# CUDA: torch (not measured, no GPU).
AUTO = {"cpu": "numba", "cuda": "torch"}


def check_audio_shape(input_shape, mode: str) -> int:
    """T of a mono waveform input shape (1, T)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 2 or shape[0] != 1:
        raise ValueError(f"sequence={mode!r} needs mono audio input_shape (1, T); got {shape}")
    return shape[1]


class WaveformFrames(nn.Module):
    """(N, 1, T) -> (N, ceil(T / frame), frame): consecutive non-overlapping frames."""

    def __init__(self, input_shape, frame: int = 160):
        super().__init__()
        self.T = check_audio_shape(input_shape, "frames")
        self.frame = integer("frame", frame, 1)
        self.L, self.D = -(-self.T // self.frame), self.frame
        self.params = {"frame": self.frame}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N 1 T)
        pad = self.L * self.D - self.T
        x = nn.functional.pad(x[:, 0], (0, pad))  # (N L*D)
        return x.reshape(x.shape[0], self.L, self.D)  # (N L D)


class WaveformSamples(nn.Module):
    """(N, 1, T) -> (N, T, 1): one sample per step."""

    def __init__(self, input_shape):
        super().__init__()
        self.L, self.D = check_audio_shape(input_shape, "samples"), 1
        self.params: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N 1 T)
        return x.transpose(1, 2)  # (N T 1)


class LogMel(KernelChoice, nn.Module):
    """Waveforms (N, 1, T) -> log-mel spectrograms (N, 1, n_mels, frames) in dB.

    torchaudio's ``MelSpectrogram`` (power 2) then ``AmplitudeToDB(stype="power", top_db)``. The
    channel axis is kept so that ``top_db`` clamps each example at its own maximum (on a 3-D input
    torchaudio would take one maximum over the whole batch, and an example's features would depend
    on the others in its batch).

    ``kernel="numba"`` runs ``kernels.stft.stft`` (``torch.stft`` with a hand-written backward) with
    the ``Spectrogram``'s own settings and window, then
    the fused ``log_mel`` kernel with the ``MelScale``'s filterbank; the torchaudio modules stay the
    holders of those buffers, so state_dict keys do not depend on the kernel.
    ``resolved_kernel(device_type)`` says which implementation runs on a device.
    """

    KERNEL_AUTO = AUTO
    KERNEL_WHAT = "log-mel"

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        f_min: float,
        f_max: float,
        top_db: float | None,
        kernel: str = "auto",
    ):
        super().__init__()
        import torchaudio

        self.kernel_choice = check_kernel(kernel)
        self.spectrogram = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            window_fn=torch.hann_window,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm="slaney",
            mel_scale="slaney",
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N 1 T)
        spec = self.spectrogram.spectrogram  # torchaudio's Spectrogram: its settings and window
        # the kernels compute |X|^2 of a centred, reflect-padded, one-sided, unnormalised STFT, which is
        # what __init__ builds
        fused_fits = (
            not spec.pad
            and not spec.normalized
            and spec.power == 2.0
            and spec.center
            and spec.pad_mode == "reflect"
            and spec.onesided
        )
        if not fused_fits or self.resolved_kernel(x.device.type) == "torch":
            return self.to_db(self.spectrogram(x))  # (N 1 n_mels frames)

        S = stft(x.reshape(-1, x.shape[-1]), spec.n_fft, spec.hop_length, spec.window)  # (N*1 F frames)
        S = S.reshape(x.shape[:-1] + S.shape[-2:])  # (N 1 F frames)
        return log_mel(S, self.spectrogram.mel_scale.fb, self.to_db.amin, self.to_db.top_db)  # (N 1 n_mels frames)

    def max_db(self) -> float:
        """The largest value a waveform in [-1, 1] can reach: every frame sample at +-1 in phase
        with one FFT bin gives |X|^2 <= (sum of the window)^2, and a mel band sums its bins."""
        window = self.spectrogram.spectrogram.window  # (win_length)
        fb = self.spectrogram.mel_scale.fb  # (n_freqs n_mels)
        peak = float(window.abs().sum()) ** 2 * float(fb.sum(0).max())
        return 10.0 * math.log10(max(peak, AMIN))


class MelSequence(nn.Module):
    """(N, 1, T) -> (N, frames, n_mels): the log-mel front end with frames as steps (see the module
    docstring). In the ``features`` attack space the input is the log-mel image (N, 1, n_mels,
    frames) in dB instead, and ``prepare`` makes it from waveforms."""

    def __init__(
        self,
        input_shape,
        *,
        sample_rate: int = 16000,
        n_mels: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        top_db: float | None = 80.0,
        attack_space: str = "waveform",
        kernel: str = "auto",
    ):
        super().__init__()
        T = check_audio_shape(input_shape, "mel")
        check_kernel(kernel)
        integer("sample_rate", sample_rate, 1)
        win_length = round(float(positive("win_ms", win_ms)) * sample_rate / 1000)
        hop_length = round(float(positive("hop_ms", hop_ms)) * sample_rate / 1000)
        if win_length < 2 or hop_length < 1:
            raise ValueError(f"win_ms={win_ms} and hop_ms={hop_ms} are too short at {sample_rate} Hz")
        n_fft = 2 ** math.ceil(math.log2(win_length)) if n_fft is None else integer("n_fft", n_fft, 2)
        if n_fft < win_length:
            raise ValueError(f"n_fft ({n_fft}) must be >= the window ({win_length} samples = {win_ms} ms)")
        if T <= n_fft // 2:
            raise ValueError(f"clips of {T} samples are too short for n_fft={n_fft} (reflect padding)")
        integer("n_mels", n_mels, 1)
        nyquist = sample_rate / 2
        f_max = nyquist if f_max is None else float(f_max)
        if not (is_number(f_min) and 0 <= f_min < f_max <= nyquist):
            raise ValueError(
                f"need 0 <= f_min < f_max <= {nyquist:g} (the Nyquist frequency); got f_min={f_min!r}, f_max={f_max!r}"
            )
        if top_db is not None:
            top_db = float(positive("top_db", top_db))
        if attack_space not in ATTACK_SPACES:
            raise ValueError(f"attack_space must be one of {', '.join(ATTACK_SPACES)}; got {attack_space!r}")
        self.front_end = LogMel(sample_rate, n_fft, win_length, hop_length, n_mels, float(f_min), f_max, top_db, kernel)
        self.L, self.D = 1 + T // hop_length, n_mels
        self.attack_space = attack_space
        # constructor arguments with defaults resolved (what rebuilds it), then every setting in force
        self.params = {
            "sample_rate": sample_rate,
            "n_mels": n_mels,
            "win_ms": float(win_ms),
            "hop_ms": float(hop_ms),
            "n_fft": n_fft,
            "f_min": float(f_min),
            "f_max": f_max,
            "top_db": top_db,
            "attack_space": attack_space,
            "kernel": kernel,
        }
        self.settings = {
            **self.params,
            "win_length": win_length,
            "hop_length": hop_length,
            "window": "hann (periodic)",
            "center": True,
            "pad_mode": "reflect",
            "mel_scale": "slaney",
            "norm": "slaney",
            "power": 2.0,
            "amin": AMIN,
            "db_reference": DB_REFERENCE,
            "db_per_unit": DB_PER_UNIT,
        }
        if attack_space == "features":
            self.input_shape = (1, n_mels, self.L)
            self.clip_values = (10.0 * math.log10(AMIN), self.front_end.max_db())

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Waveforms (N, 1, T) -> the classifier's input: themselves, or log-mel (N, 1, n_mels, frames)."""
        return self.front_end(x) if self.attack_space == "features" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N 1 T), or (N 1 n_mels frames) for features
        db = self.front_end(x) if self.attack_space == "waveform" else x  # (N 1 n_mels frames)
        return ((db[:, 0] - DB_REFERENCE) / DB_PER_UNIT).transpose(1, 2)  # (N frames n_mels)


def frames(input_shape, *, frame: int = 160) -> WaveformFrames:
    """Audio as frame sequences: L = ceil(T / frame) steps of ``frame`` samples."""
    return WaveformFrames(input_shape, frame)


def samples(input_shape) -> WaveformSamples:
    """Audio as sample sequences: L = T steps of one sample."""
    return WaveformSamples(input_shape)
