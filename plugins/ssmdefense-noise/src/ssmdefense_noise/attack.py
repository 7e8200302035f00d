"""``gaussian-noise``: Gaussian noise kept inside the L-inf eps-ball, an ART ``EvasionAttack``.

Not a gradient attack: a sanity baseline, like ssmdefense's built-in ``noise`` (uniform in the
eps-ball). Gaussian noise puts most values near x and a few at the edge of the ball, so it probes
a different kind of random corruption. A model that loses much accuracy to it is brittle; one that
keeps its accuracy here says nothing about worst-case robustness (use ``pgd`` or ``autoattack``).

Arguments:
    eps (float): L-inf budget; each input value moves by ``normal(0, sigma)`` clipped to
        [-eps, eps]. Default: 0.1.
    sigma (float | None): standard deviation of the noise; None means ``eps / 2``. Default: None.
    seed (int | None): seeds the noise; every ``generate`` call with the same seed draws the same
        noise. None draws fresh noise each call from NumPy's global generator (so ``np.random.seed``
        makes it reproducible). Default: None.

Shape: x in the estimator's natural shape (e.g. images (N, C, H, W)); x_adv has the same shape and
dtype, stays within ``eps`` of x in L-inf and inside the estimator's ``clip_values`` (when set).

Examples::

    attack = sd.get_attack("gaussian-noise", clf, eps=0.1, sigma=0.05, seed=0)
    x_adv = attack.generate(x_test)
"""

from __future__ import annotations

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.estimator import BaseEstimator


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))


class GaussianNoiseAttack(EvasionAttack):
    """Adds ``normal(0, sigma)`` noise clipped to [-eps, eps], then clips to ``clip_values``."""

    attack_params = EvasionAttack.attack_params + ["eps", "sigma", "seed"]
    _estimator_requirements = (BaseEstimator,)

    def __init__(self, estimator, eps: float = 0.1, sigma: float | None = None, seed: int | None = None):
        super().__init__(estimator=estimator)
        self.eps = eps
        self.sigma = sigma
        self.seed = seed
        self._check_params()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Noised copy of ``x``; ``y`` is accepted for ART's interface and ignored."""
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        sigma = self.eps / 2 if self.sigma is None else self.sigma
        # seed None: seed from NumPy's global state, so that np.random.seed reproduces the noise.
        rng = np.random.default_rng(self.seed if self.seed is not None else np.random.randint(2**31 - 1))
        delta = np.clip(rng.normal(0.0, sigma, size=x.shape), -self.eps, self.eps).astype(dtype)  # (N ...)
        x_adv = x.astype(dtype) + delta  # (N ...)
        clip = self.estimator.clip_values
        if clip is not None:
            # Clipping a point of the box moves it towards x: it stays in the eps-ball.
            x_adv = np.clip(x_adv, clip[0], clip[1]).astype(dtype)
        return x_adv

    def _check_params(self) -> None:
        super()._check_params()
        if not _is_number(self.eps) or not self.eps > 0:
            raise ValueError(f"eps must be a positive number; got {self.eps!r}")
        if self.sigma is not None and (not _is_number(self.sigma) or not self.sigma > 0):
            raise ValueError(f"sigma must be a positive number (or None for eps / 2); got {self.sigma!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0
        ):
            raise ValueError(f"seed must be None or an integer >= 0; got {self.seed!r}")


def gaussian_noise(
    estimator, *, eps: float = 0.1, sigma: float | None = None, seed: int | None = None
) -> GaussianNoiseAttack:
    """The ``gaussian-noise`` attack bound to ``estimator`` (see the module docstring)."""
    return GaussianNoiseAttack(estimator, eps=eps, sigma=sigma, seed=seed)
