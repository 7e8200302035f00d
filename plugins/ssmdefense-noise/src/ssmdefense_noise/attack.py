"""``noise``: uniform random noise in the L-inf eps-ball, an ART ``EvasionAttack``.

Not a gradient attack: a sanity baseline. A model that loses much accuracy to random noise of
budget ``eps`` is brittle; one that keeps its accuracy here says nothing about worst-case
robustness (use ``pgd`` or ``autoattack`` for that).

Arguments:
    eps (float): L-inf budget; each input value moves by ``uniform(-eps, eps)``. Default: 0.1.
    seed (int | None): seeds the noise; every ``generate`` call with the same seed draws the same
        noise. None draws fresh noise each call. Default: None.

Shape: x in the estimator's natural shape (e.g. images (N, C, H, W)); x_adv has the same shape and
dtype, stays within ``eps`` of x in L-inf and inside the estimator's ``clip_values`` (when set).

Examples::

    attack = sd.get_attack("noise", clf, eps=0.1, seed=0)
    x_adv = attack.generate(x_test)
"""

from __future__ import annotations

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.estimator import BaseEstimator


class NoiseAttack(EvasionAttack):
    """Adds ``uniform(-eps, eps)`` noise to every input value, then clips to ``clip_values``."""

    attack_params = EvasionAttack.attack_params + ["eps", "seed"]
    _estimator_requirements = (BaseEstimator,)

    def __init__(self, estimator, eps: float = 0.1, seed: int | None = None):
        super().__init__(estimator=estimator)
        self.eps = eps
        self.seed = seed
        self._check_params()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Noised copy of ``x``; ``y`` is accepted for ART's interface and ignored."""
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        rng = np.random.default_rng(self.seed)
        delta = rng.uniform(-self.eps, self.eps, size=x.shape).astype(dtype)  # (N ...)
        x_adv = x.astype(dtype) + delta  # (N ...)
        clip = self.estimator.clip_values
        if clip is not None:
            # Clipping a point of the box moves it towards x: it stays in the eps-ball.
            x_adv = np.clip(x_adv, clip[0], clip[1]).astype(dtype)
        return x_adv

    def _check_params(self) -> None:
        super()._check_params()
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float, np.floating, np.integer)) \
                or not self.eps > 0:
            raise ValueError(f"eps must be a positive number; got {self.eps!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0; got {self.seed!r}")


def noise(estimator, *, eps: float = 0.1, seed: int | None = None) -> NoiseAttack:
    """The ``noise`` attack bound to ``estimator`` (see the module docstring)."""
    return NoiseAttack(estimator, eps=eps, seed=seed)
