"""Time shift: the worst-case delay or advance of each waveform, the audio counterpart of the
spatial attack (Engstrom et al., ICML 2019, "A Rotation and a Translation Suffice",
https://arxiv.org/abs/1712.02779: a small, natural transformation chosen adversarially).

A grid search: shifts evenly spaced from ``-max_shift_ms`` to ``+max_shift_ms`` (rounded to whole
samples at ``sample_rate``; 0 is left out), tried in order of increasing ``|shift|`` (for equal
``|shift|`` the advance first, then the delay; in ``mode="both"`` the circular shift before the
zero-filled one). Each example gets the first shifted version that the model misclassifies; an
example that no shift fools, or that is already misclassified, is returned unchanged (as Foolbox's
spatial attack does). ``attack.transformations`` then holds, per example, the ``(mode, shift in
samples)`` it got, or None.

Budget: not an eps-ball. The waveform moves by at most ``max_shift_ms`` milliseconds (positive:
delayed, content moves later; negative: advanced); its L-p distance to x is not bounded. ``eps``
is accepted only so that callers that pass a budget to every attack (``ssmdefense evaluate``,
``evaluate_robustness``) can run it; its value is ignored. The result is exactly x or one shifted
copy of x (a circular shift moves the samples that fall off one end to the other; a zero shift
fills with 0, clipped into ``clip_values``).

Cost: one prediction of x plus, per grid point and mode, one prediction of the examples not yet
fooled: at most ``1 + (num_shifts - 1) * modes`` forward passes, no gradients. Shifts are torch
operations (``torch.roll``, slicing) on the estimator's device. torchaudio has no shift transform,
hence the few lines here.

Arguments:
    max_shift_ms (float): largest shift, in milliseconds, in either direction. Default: 100.
    num_shifts (int): grid points from -max_shift_ms to +max_shift_ms, 0 included when odd (and then
        skipped: it is the input itself). Default: 21 (10 ms apart at the default budget).
    mode (str): "circular" (``torch.roll``: the waveform wraps around), "zero" (shifted in zeros, the
        end that falls off is lost), or "both" (try both at each shift). Default: "both".
    sample_rate (int | None): samples per second; None takes ``estimator.sample_rate``. Default: None.
    eps (float | None): ignored (see above). Default: None.
    batch_size (int): waveforms transformed and predicted at a time. Default: 128.
    verbose (bool): a progress bar over batches and grid points (stderr). Default: False.

Shape: mono waveforms (N, 1, T), the estimator's natural audio shape; x_adv has the same shape and
dtype and stays inside ``clip_values``. ``y``: class indices or one-hot labels; None attacks the
estimator's own predictions (as ART does).

Examples::

    attack = sd.get_attack("time-shift", clf, max_shift_ms=100)
    x_adv = attack.generate(x_test, y_test)
    attack.transformations[:5]   # e.g. [('circular', -160), None, ('zero', 480), ...]
"""

from __future__ import annotations

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

MODES = ("circular", "zero", "both")


def shift_waveform(x, shift: int, mode: str = "circular"):
    """``x`` (..., T) (a torch tensor) delayed by ``shift`` samples (advanced when negative):
    ``mode="circular"`` wraps around (``torch.roll``), ``"zero"`` fills with zeros."""
    import torch

    if mode == "circular":
        return torch.roll(x, shifts=int(shift), dims=-1)
    if mode != "zero":
        raise ValueError(f"mode must be 'circular' or 'zero'; got {mode!r}")
    T = x.shape[-1]
    s = max(-T, min(T, int(shift)))
    out = torch.zeros_like(x)  # (... T)
    if s >= 0:
        out[..., s:] = x[..., : T - s]
    else:
        out[..., : T + s] = x[..., -s:]
    return out


class TimeShiftAttack(WaveformSearchAttack, EvasionAttack):
    """Per example, the smallest shift (on a grid of +-``max_shift_ms``) that fools the model."""

    attack_params = EvasionAttack.attack_params + [
        "max_shift_ms",
        "num_shifts",
        "mode",
        "sample_rate",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)
    name = "time-shift"

    def __init__(
        self,
        estimator,
        max_shift_ms: float = 100.0,
        num_shifts: int = 21,
        mode: str = "both",
        sample_rate: int | None = None,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.max_shift_ms = max_shift_ms
        self.num_shifts = num_shifts
        self.mode = mode
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def shifts(self) -> list[int]:
        """The shifts tried, in samples, in the order they are tried (0 left out)."""
        rate = resolve_sample_rate(self.name, self.sample_rate, self.estimator)
        grid = np.linspace(-self.max_shift_ms, self.max_shift_ms, int(self.num_shifts)) * rate / 1000.0
        shifts = list(dict.fromkeys(int(round(s)) for s in grid if int(round(s)) != 0))  # grid order, no repeats
        return sorted(shifts, key=abs)  # stable: the advance before the delay of the same size

    def candidates(self, length: int) -> list:
        modes = ("circular", "zero") if self.mode == "both" else (self.mode,)
        return [
            ((mode, s), lambda xb, s=s, mode=mode: shift_waveform(xb, s, mode)) for s in self.shifts() for mode in modes
        ]

    def _check_params(self) -> None:
        super()._check_params()
        check_number("max_shift_ms", self.max_shift_ms, 0.0)
        for name in ("num_shifts", "batch_size"):
            check_count(name, getattr(self, name))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        resolve_sample_rate(self.name, self.sample_rate, self.estimator)
        boolean("verbose", self.verbose)


def time_shift(
    estimator,
    *,
    max_shift_ms: float = 100.0,
    num_shifts: int = 21,
    mode: str = "both",
    sample_rate: int | None = None,
    eps: float | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> TimeShiftAttack:
    """The ``time-shift`` attack bound to ``estimator`` (see the module docstring)."""
    check_ignored_eps("time-shift", eps)
    check_waveform_estimator("time-shift", estimator)
    return TimeShiftAttack(
        estimator,
        max_shift_ms=max_shift_ms,
        num_shifts=num_shifts,
        mode=mode,
        sample_rate=sample_rate,
        batch_size=batch_size,
        verbose=verbose,
    )
