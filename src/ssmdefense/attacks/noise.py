"""Random noise: a uniformly random point of the eps-ball around each input, the baseline every
attack must beat; for audio, also background noise at a signal-to-noise ratio.

Not a search: one random draw per input. A model that loses much accuracy to random noise of
budget ``eps`` is brittle; a gradient or black-box attack whose accuracy is not clearly below this
one's is too weak (or the gradients are masked). It says nothing about worst-case robustness.

Background noise (``snr_db`` set; mono waveforms (N, 1, T) only): each clip gets noise of the
chosen ``color`` scaled so that its SNR is exactly ``snr_db`` dB, ``||noise_i|| = ||x_i|| *
10 ** (-snr_db / 20)`` (mixed by ``torchaudio.functional.add_noise``), then the sum is clipped to
``clip_values`` (which can only lower the noise). ``eps`` and ``norm`` are not used then. The noise
is the *typical* corruption at that SNR, the baseline for ``snr-pgd``'s worst case at the same
SNR. A silent clip stays silent; a clip whose "dataset" background is silent stays unchanged.
Colors: "white" (Gaussian, flat spectrum); "pink" (power falling as 1/f, made in the frequency
domain: a white spectrum shaped by 1/sqrt(f), DC removed; NumPy's FFT, as torchaudio has no
colored-noise generator); "dataset" (the clip of another example of the same ``generate`` call:
the examples circularly permuted by a random offset, a babble-like background drawn from the data
itself; needs at least two clips).

Cost: one draw and, for "pink", one FFT pair per clip; no model evaluations.

Arguments:
    eps (float): budget (not used with snr_db). Default: 0.1.
    norm (str): "inf": every input value moves by ``uniform(-eps, eps)``; "2": uniform in the L2
        ball (a Gaussian direction scaled to length ``eps * U ** (1 / d)``, d the number of input
        values, so that the density is uniform over the ball's volume). Not used with snr_db.
        Default: "inf".
    snr_db (float | None): None: the eps-ball noise above. A finite number: background noise at
        that signal-to-noise ratio in dB (waveforms only). Default: None.
    color (str): the background's spectrum with snr_db: "white", "pink" or "dataset" (see above);
        only "white" without snr_db. Default: "white".
    seed (int | None): every ``generate`` call with the same seed draws the same noise (for the
        same batch_size). None draws fresh noise each call from NumPy's global generator, so
        ``np.random.seed`` (and the seed of ``ssmdefense evaluate``) makes it reproducible.
        Default: None.
    batch_size (int): inputs drawn at a time. Default: 128.
    verbose (bool): a progress bar over batches (stderr). Default: False.

Shape: x in the estimator's natural shape (e.g. images (N, C, H, W), waveforms (N, 1, T)); x_adv
has the same shape and dtype, stays within ``eps`` of x (in ``norm``), or at SNR >= ``snr_db``, and
inside the estimator's ``clip_values`` (when set). ``y`` is accepted for ART's interface and ignored.

Examples::

    attack = sd.get_attack("noise", clf, eps=0.1, seed=0)
    x_noisy = attack.generate(x_test)
    babble = sd.get_attack("noise", audio_clf, snr_db=10, color="dataset", seed=0).generate(x_audio)
"""

from __future__ import annotations

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.estimator import BaseEstimator
from tqdm.auto import tqdm

from ..validation import boolean, integer
from ._common import check_count, check_positive, check_snr, check_waveform_estimator, parse_norm

COLORS = ("white", "pink", "dataset")


class NoiseAttack(EvasionAttack):
    """Adds a uniformly random point of the ``norm`` eps-ball to each input, or background noise at
    ``snr_db`` to each waveform, then clips."""

    attack_params = EvasionAttack.attack_params + ["eps", "norm", "snr_db", "color", "seed", "batch_size", "verbose"]
    _estimator_requirements = (BaseEstimator,)

    def __init__(
        self,
        estimator,
        eps: float = 0.1,
        norm: str = "inf",
        seed: int | None = None,
        batch_size: int = 128,
        verbose: bool = False,
        snr_db: float | None = None,
        color: str = "white",
    ):
        super().__init__(estimator=estimator)
        self.eps = eps
        self.norm = norm
        self.snr_db = snr_db
        self.color = color
        self.seed = seed
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        norm = parse_norm(self.norm)
        # seed None: draw the generator's seed from NumPy's global state, so that seeding it (as the
        # evaluation does around every attack) reproduces the noise.
        rng = np.random.default_rng(self.seed if self.seed is not None else np.random.randint(2**31 - 1))
        if self.snr_db is not None:
            return self._background(x.astype(dtype, copy=False), rng)
        clip = self.estimator.clip_values
        x_adv = np.empty(x.shape, dtype=dtype)
        starts = range(0, len(x), int(self.batch_size))
        for start in tqdm(starts, desc="noise", disable=not self.verbose):
            xb = x[start : start + int(self.batch_size)].astype(dtype)  # (B ...)
            delta = self._sample(rng, len(xb), xb[0].size, norm).reshape(xb.shape)  # (B ...)
            xb = xb + delta.astype(dtype)
            if clip is not None:
                # Clipping moves each value towards x (x itself is in range), so it stays in the ball.
                xb = np.clip(xb, clip[0], clip[1])
            x_adv[start : start + len(xb)] = xb
        return x_adv

    def _background(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Background noise of ``color`` at exactly ``snr_db`` dB per waveform, then clipped."""
        import torch
        import torchaudio.functional as AF

        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"noise with snr_db needs mono waveforms (N, 1, T); got x of shape {x.shape}")
        if self.color == "dataset":
            if len(x) < 2:
                raise ValueError("noise with color='dataset' mixes in other clips of x: it needs at least 2 clips")
            background = np.roll(x, int(rng.integers(1, len(x))), axis=0)  # (N 1 T): another example's clip
        clip = self.estimator.clip_values
        x_adv = np.empty_like(x)
        starts = range(0, len(x), int(self.batch_size))
        for start in tqdm(starts, desc="noise", disable=not self.verbose):
            xb = x[start : start + int(self.batch_size)]  # (B 1 T)
            if self.color == "dataset":
                noise = background[start : start + len(xb)].astype(np.float64)  # (B 1 T)
            else:
                noise = self._colored(rng, len(xb), xb.shape[-1]).reshape(xb.shape)  # (B 1 T)
            # add_noise scales each row of noise to the SNR; float64 so that it is exact to ~1e-12 dB.
            noisy = AF.add_noise(
                torch.from_numpy(xb.astype(np.float64)),
                torch.from_numpy(noise),
                torch.full((len(xb), 1), float(self.snr_db), dtype=torch.float64),
            ).numpy()
            # A silent background (or silent clip and background) gives 0 * inf: keep the clip as it is.
            bad = ~np.isfinite(noisy).all(axis=(1, 2))  # (B)
            noisy[bad] = xb[bad]
            if clip is not None:
                noisy = np.clip(noisy, clip[0], clip[1])
            x_adv[start : start + len(xb)] = noisy.astype(x.dtype)
        return x_adv

    def _colored(self, rng: np.random.Generator, n: int, T: int) -> np.ndarray:
        """(n, T) float64 noise of ``color`` "white" or "pink", of arbitrary scale (add_noise rescales it)."""
        white = rng.normal(size=(n, T))  # (n T)
        if self.color == "white":
            return white
        spectrum = np.fft.rfft(white, axis=1)  # (n F): flat on average
        f = np.arange(spectrum.shape[1], dtype=np.float64)  # (F) bin index, proportional to frequency
        shape = np.zeros_like(f)
        shape[1:] = 1.0 / np.sqrt(f[1:])  # amplitude 1 / sqrt(f): power 1 / f; no DC
        return np.fft.irfft(spectrum * shape, n=T, axis=1)  # (n T)

    def _sample(self, rng: np.random.Generator, n: int, d: int, norm) -> np.ndarray:
        """(n, d) points drawn uniformly from the eps-ball of ``norm`` in d dimensions."""
        if norm == np.inf:
            return rng.uniform(-self.eps, self.eps, size=(n, d))
        direction = rng.normal(size=(n, d))  # (n d): isotropic, so its direction is uniform on the sphere
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        radius = self.eps * rng.uniform(size=(n, 1)) ** (1.0 / d)  # (n 1): P(r <= t) = (t / eps)^d
        return direction * radius

    def _check_params(self) -> None:
        super()._check_params()
        check_positive(eps=self.eps, optional=("eps",) if self.snr_db is not None else ())  # unused with snr_db
        parse_norm(self.norm)
        if self.snr_db is not None:
            check_snr("snr_db", self.snr_db)
            check_waveform_estimator("noise with snr_db", self.estimator)
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {', '.join(COLORS)}; got {self.color!r}")
        if self.color != "white" and self.snr_db is None:
            raise ValueError(
                f"color={self.color!r} needs snr_db (background noise at an SNR); the eps-ball "
                f"noise (snr_db=None) is uniform"
            )
        check_count("batch_size", self.batch_size)
        integer("seed", self.seed, 0, optional=True, numpy=True)
        boolean("verbose", self.verbose)


def noise(
    estimator,
    *,
    eps: float = 0.1,
    norm: str = "inf",
    snr_db: float | None = None,
    color: str = "white",
    seed: int | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> NoiseAttack:
    """The ``noise`` attack bound to ``estimator`` (see the module docstring)."""
    return NoiseAttack(
        estimator, eps=eps, norm=norm, seed=seed, batch_size=batch_size, verbose=verbose, snr_db=snr_db, color=color
    )
