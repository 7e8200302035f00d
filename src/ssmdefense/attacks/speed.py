"""Speed change: the worst-case faster or slower playback of each waveform (the "resampling"
perturbation of audio augmentation, e.g. Ko et al., Interspeech 2015, "Audio Augmentation for
Speech Recognition", https://www.danielpovey.com/files/2015_interspeech_augmentation.pdf), chosen
adversarially like the spatial attack's rotations (Engstrom et al., https://arxiv.org/abs/1712.02779).

A grid search over speed factors evenly spaced in ``[1 - max_change, 1 + max_change]`` (1 is left
out: it is the input), tried in order of increasing ``|factor - 1|`` (for equal distance the slower
one first). A factor f plays the clip f times as fast: duration T / f, every frequency times f (pitch
and tempo change together, as on a tape). Each example gets the first version the model
misclassifies; an example that nothing fools, or that is already misclassified, is returned
unchanged. ``attack.transformations`` holds, per example, the factor it got, or None.

Resampling: ``torchaudio.functional.resample`` (windowed sinc) from ``a`` to ``b`` samples per unit
time, where ``a / b`` is the factor as a fraction with terms of at most 100 (exact for the default
grid; otherwise within 1e-4 of it). Not ``torchaudio.functional.speed``: it derives the rates as
``int(factor * sample_rate)`` and ``sample_rate``, whose ratio in lowest terms can have terms in the
thousands, and resample's cost grows with them. The result is then cropped, or zero-padded at the
end, back to T samples: the start stays aligned (sample 0 stays at time 0), a sped-up clip ends in
silence, a slowed-down one loses its end.

Budget: not an eps-ball: at most ``max_change`` relative change of speed; the L-p distance to x is not
bounded. ``eps`` is accepted only so that callers that pass a budget to every attack can run it;
its value is ignored. The result is exactly x or one resampled copy of x, clipped into ``clip_values``.

Cost: one prediction of x plus, per factor, one resampling and one prediction of the examples not
yet fooled: at most ``1 + num_factors`` forward passes over the batch (one fewer when 1 is on the
grid), no gradients. Resampling runs batched on the estimator's device and is cheap next to the
model (8 factors on 100 one-second clips: ~0.03 s on one CPU core).

Arguments:
    max_change (float): largest relative change of speed, in [0, 1). Default: 0.1 (0.9x to 1.1x).
    num_factors (int): grid points from 1 - max_change to 1 + max_change (1 included when odd, and
        skipped). Default: 9 (steps of 0.025 at the default budget).
    eps (float | None): ignored (see above). Default: None.
    batch_size (int): waveforms transformed and predicted at a time. Default: 128.
    verbose (bool): a progress bar over batches and factors (stderr). Default: False.

Shape: mono waveforms (N, 1, T); x_adv has the same shape and dtype and stays inside
``clip_values``. ``y``: class indices or one-hot labels; None attacks the estimator's own
predictions (as ART does). No sample rate is needed: a speed factor is a ratio.

Examples::

    attack = sd.get_attack("speed", clf, max_change=0.1)
    x_adv = attack.generate(x_test, y_test)
    attack.transformations[:5]   # e.g. [0.975, None, 1.05, ...]
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from ..validation import boolean, number
from ._common import WaveformSearchAttack, check_count, check_ignored_eps, check_waveform_estimator

MAX_TERMS = 100  # largest numerator / denominator of the resampling ratio


def change_speed(x, factor: float):
    """``x`` (..., T) (a torch tensor) played ``factor`` times as fast, cropped or zero-padded at the
    end back to T samples (the start stays aligned)."""
    import torch
    import torchaudio.functional as AF

    ratio = Fraction(float(factor)).limit_denominator(MAX_TERMS)  # factor ~ a / b
    a, b = ratio.numerator, ratio.denominator
    T = x.shape[-1]
    y = AF.resample(x, orig_freq=a, new_freq=b) if a != b else x  # (... ~T b / a)
    if y.shape[-1] >= T:
        return y[..., :T].contiguous()
    return torch.nn.functional.pad(y, (0, T - y.shape[-1]))  # (... T)


class SpeedAttack(WaveformSearchAttack, EvasionAttack):
    """Per example, the speed factor closest to 1 (within +-``max_change``) that fools the model."""

    attack_params = EvasionAttack.attack_params + ["max_change", "num_factors", "batch_size", "verbose"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)
    name = "speed"

    def __init__(
        self, estimator, max_change: float = 0.1, num_factors: int = 9, batch_size: int = 128, verbose: bool = False
    ):
        super().__init__(estimator=estimator)
        self.max_change = max_change
        self.num_factors = num_factors
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def factors(self) -> list[float]:
        """The speed factors tried, in the order they are tried (1 left out)."""
        grid = np.linspace(1.0 - self.max_change, 1.0 + self.max_change, int(self.num_factors))
        factors = list(dict.fromkeys(round(float(f), 12) for f in grid if abs(f - 1.0) > 1e-12))
        return sorted(factors, key=lambda f: abs(f - 1.0))  # stable: the slower before the faster

    def candidates(self, length: int) -> list:
        return [(f, lambda xb, f=f: change_speed(xb, f)) for f in self.factors()]

    def _check_params(self) -> None:
        super()._check_params()
        number("max_change", self.max_change, 0.0, 1.0, high_open=True, hint="a relative change of speed", numpy=True)
        for name in ("num_factors", "batch_size"):
            check_count(name, getattr(self, name))
        boolean("verbose", self.verbose)


def speed(
    estimator,
    *,
    max_change: float = 0.1,
    num_factors: int = 9,
    eps: float | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> SpeedAttack:
    """The ``speed`` attack bound to ``estimator`` (see the module docstring)."""
    check_ignored_eps("speed", eps)
    check_waveform_estimator("speed", estimator)
    return SpeedAttack(
        estimator, max_change=max_change, num_factors=num_factors, batch_size=batch_size, verbose=verbose
    )
