"""Pitch shift: the worst-case transposition of each waveform by up to ``max_semitones`` (tempo and
duration kept), chosen adversarially like the spatial attack's rotations (Engstrom et al., ICML
2019, https://arxiv.org/abs/1712.02779); pitch shifting is a standard audio augmentation
(Salamon & Bello, 2017, https://arxiv.org/abs/1608.04363).

A grid search over semitone shifts evenly spaced in ``[-max_semitones, max_semitones]`` (0 is left
out: it is the input), tried in order of increasing ``|shift|`` (for equal size the lower pitch
first). Each example gets the first shifted version that the model misclassifies; an example that
nothing fools, or that is already misclassified, is returned unchanged. ``attack.transformations``
holds, per example, the shift in semitones it got, or None.

The transformation is ``torchaudio.functional.pitch_shift``'s: a phase-vocoder time stretch
(``torch.stft``, ``torchaudio.functional.phase_vocoder``, ``torch.istft``; Hann window of
``n_fft`` samples, hop ``n_fft // 4``) by ``r = 2 ** (-shift / 12)``, then a resampling
(``torchaudio.functional.resample``) by ``r`` back to the original duration, cropped or
zero-padded at the end to T samples. It is assembled here from those torchaudio pieces rather than
calling ``pitch_shift`` because ``pitch_shift`` resamples from ``int(sample_rate / r)`` to
``sample_rate``, whose ratio in lowest terms usually has terms near ``sample_rate``, and resample's
cost grows with them: 100 one-second clips take ~20 s at +2 semitones on a 2-core CPU, against
~0.5 s here, where ``r`` is rounded to a fraction with terms of at most 200 (within 0.2 cent on
the default grid, 2 cents at most: below what a listener can hear). At shifts where ``r`` is exact
(e.g. 12 semitones) the two agree to rounding.

Budget: not an eps-ball: at most ``max_semitones`` of transposition; the L-p distance to x is not
bounded. ``eps`` is accepted only so that callers that pass a budget to every attack can run it;
its value is ignored. The result is exactly x or one pitch-shifted copy of x, clipped into
``clip_values`` (a phase vocoder can overshoot slightly).

Cost: one prediction of x plus, per grid point, one STFT / phase vocoder / inverse STFT /
resampling and one prediction of the examples not yet fooled: at most ``1 + num_steps`` forward
passes over the batch (one fewer when 0 is on the grid), no gradients, batched on the estimator's
device. The transformation dominates: ~0.4 s per grid point for 100 one-second clips on a CPU core.

Arguments:
    max_semitones (float): largest transposition, in semitones (12 = one octave), in either
        direction; in (0, 12]. Default: 2.
    num_steps (int): grid points from -max_semitones to +max_semitones (0 included when odd, and
        skipped). Default: 9 (half-semitone steps at the default budget).
    sample_rate (int | None): samples per second, which sets the default analysis window; None takes
        ``estimator.sample_rate``; needed (here or on the estimator) unless n_fft is given. Default: None.
    n_fft (int | None): STFT size; None: about 32 ms, the power of two nearest to
        ``0.032 * sample_rate`` (512 at 16 kHz, torchaudio's default). Default: None.
    eps (float | None): ignored (see above). Default: None.
    batch_size (int): waveforms transformed and predicted at a time. Default: 128.
    verbose (bool): a progress bar over batches and grid points (stderr). Default: False.

Shape: mono waveforms (N, 1, T) with T >= n_fft // 2 + 1; x_adv has the same shape and dtype and
stays inside ``clip_values``. ``y``: class indices or one-hot labels; None attacks the estimator's
own predictions (as ART does).

Examples::

    attack = sd.get_attack("pitch-shift", clf, max_semitones=2)
    x_adv = attack.generate(x_test, y_test)
    attack.transformations[:5]   # e.g. [-0.5, None, 1.5, ...]
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from ..validation import boolean
from ._common import (
    WaveformSearchAttack,
    check_count,
    check_ignored_eps,
    check_number,
    check_waveform_estimator,
    resolve_sample_rate,
)

MAX_TERMS = 200  # largest numerator / denominator of the stretch and resampling ratio


def default_n_fft(sample_rate: int) -> int:
    """The power of two nearest to 32 ms at ``sample_rate`` (512 at 16 kHz)."""
    return 2 ** max(4, round(math.log2(0.032 * sample_rate)))


def shift_pitch(x, n_steps: float, n_fft: int = 512):
    """``x`` (..., T) (a torch tensor) transposed by ``n_steps`` semitones, same length T: the
    phase-vocoder stretch and resampling of ``torchaudio.functional.pitch_shift`` with the ratio
    rounded to a fraction of small terms (see the module docstring)."""
    import torch
    import torchaudio.functional as AF

    rate = Fraction(2.0 ** (-float(n_steps) / 12.0)).limit_denominator(MAX_TERMS)  # r = a / b
    a, b = rate.numerator, rate.denominator
    shape, T = x.shape, x.shape[-1]
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.reshape(-1, T),
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # (B F frames)
    phase_advance = torch.linspace(0, math.pi * hop, spec.shape[-2], device=x.device, dtype=x.dtype)[..., None]  # (F 1)
    stretched = AF.phase_vocoder(spec, float(rate), phase_advance)  # (B F ~frames / r)
    y = torch.istft(
        stretched, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window, length=int(round(T / float(rate)))
    )  # (B ~T / r)
    y = AF.resample(y, orig_freq=b, new_freq=a)  # (B ~T): back to the original duration, pitch times 1 / r
    y = y[..., :T] if y.shape[-1] >= T else torch.nn.functional.pad(y, (0, T - y.shape[-1]))  # (B T)
    return y.reshape(shape)


class PitchShiftAttack(WaveformSearchAttack, EvasionAttack):
    """Per example, the smallest transposition (within +-``max_semitones``) that fools the model."""

    attack_params = EvasionAttack.attack_params + [
        "max_semitones",
        "num_steps",
        "sample_rate",
        "n_fft",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)
    name = "pitch-shift"

    def __init__(
        self,
        estimator,
        max_semitones: float = 2.0,
        num_steps: int = 9,
        sample_rate: int | None = None,
        n_fft: int | None = None,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.max_semitones = max_semitones
        self.num_steps = num_steps
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def steps(self) -> list[float]:
        """The shifts tried, in semitones, in the order they are tried (0 left out)."""
        grid = np.linspace(-self.max_semitones, self.max_semitones, int(self.num_steps))
        steps = list(dict.fromkeys(round(float(s), 12) for s in grid if abs(s) > 1e-12))
        return sorted(steps, key=abs)  # stable: the lower pitch before the higher of the same size

    def _n_fft(self) -> int:
        if self.n_fft is not None:
            return int(self.n_fft)
        return default_n_fft(resolve_sample_rate(self.name, self.sample_rate, self.estimator))

    def candidates(self, length: int) -> list:
        n_fft = self._n_fft()
        if length < n_fft // 2 + 1:
            raise ValueError(
                f"pitch-shift needs waveforms of at least n_fft // 2 + 1 = {n_fft // 2 + 1} samples "
                f"(n_fft={n_fft}); got T={length}: pass a smaller n_fft"
            )
        return [(s, lambda xb, s=s: shift_pitch(xb, s, n_fft)) for s in self.steps()]

    def _check_params(self) -> None:
        super()._check_params()
        check_number("max_semitones", self.max_semitones, 0.0, 12.0)
        for name in ("num_steps", "batch_size"):
            check_count(name, getattr(self, name))
        if self.n_fft is not None:
            check_count("n_fft", self.n_fft)
            if self.n_fft < 16:
                raise ValueError(f"n_fft must be at least 16; got {self.n_fft!r}")
        if self.n_fft is None or self.sample_rate is not None:  # the rate only sets the default n_fft
            resolve_sample_rate(self.name, self.sample_rate, self.estimator)
        boolean("verbose", self.verbose)


def pitch_shift(
    estimator,
    *,
    max_semitones: float = 2.0,
    num_steps: int = 9,
    sample_rate: int | None = None,
    n_fft: int | None = None,
    eps: float | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> PitchShiftAttack:
    """The ``pitch-shift`` attack bound to ``estimator`` (see the module docstring)."""
    check_ignored_eps("pitch-shift", eps)
    check_waveform_estimator("pitch-shift", estimator)
    return PitchShiftAttack(
        estimator,
        max_semitones=max_semitones,
        num_steps=num_steps,
        sample_rate=sample_rate,
        n_fft=n_fft,
        batch_size=batch_size,
        verbose=verbose,
    )
