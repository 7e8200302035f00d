"""Random noise: a uniformly random point of the eps-ball around each input, the baseline every
attack must beat.

Not a search: one random draw per input. A model that loses much accuracy to random noise of
budget ``eps`` is brittle; a gradient or black-box attack whose accuracy is not clearly below this
one's is too weak (or the gradients are masked). It says nothing about worst-case robustness.

Arguments:
    eps (float): budget. Default: 0.1.
    norm (str): "inf": every input value moves by ``uniform(-eps, eps)``; "2": uniform in the L2
        ball (a Gaussian direction scaled to length ``eps * U ** (1 / d)``, d the number of input
        values, so that the density is uniform over the ball's volume). Default: "inf".
    seed (int | None): every ``generate`` call with the same seed draws the same noise (for the
        same batch_size). None draws fresh noise each call from NumPy's global generator, so
        ``np.random.seed`` (and the seed of ``ssmdefense evaluate``) makes it reproducible.
        Default: None.
    batch_size (int): inputs drawn at a time. Default: 128.
    verbose (bool): a progress bar over batches (stderr). Default: False.

Shape: x in the estimator's natural shape (e.g. images (N, C, H, W)); x_adv has the same shape and
dtype, stays within ``eps`` of x (in ``norm``) and inside the estimator's ``clip_values`` (when
set). ``y`` is accepted for ART's interface and ignored.

Examples::

    attack = sd.get_attack("noise", clf, eps=0.1, seed=0)
    x_noisy = attack.generate(x_test)
"""

from __future__ import annotations

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.estimator import BaseEstimator
from tqdm.auto import tqdm

from ..hookspecs import hookimpl
from ._common import check_count, check_positive, parse_norm


class NoiseAttack(EvasionAttack):
    """Adds a uniformly random point of the ``norm`` eps-ball to each input, then clips."""

    attack_params = EvasionAttack.attack_params + ["eps", "norm", "seed", "batch_size", "verbose"]
    _estimator_requirements = (BaseEstimator,)

    def __init__(self, estimator, eps: float = 0.1, norm: str = "inf", seed: int | None = None,
                 batch_size: int = 128, verbose: bool = False):
        super().__init__(estimator=estimator)
        self.eps = eps
        self.norm = norm
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
        clip = self.estimator.clip_values
        x_adv = np.empty(x.shape, dtype=dtype)
        starts = range(0, len(x), int(self.batch_size))
        for start in tqdm(starts, desc="noise", disable=not self.verbose):
            xb = x[start:start + int(self.batch_size)].astype(dtype)  # (B ...)
            delta = self._sample(rng, len(xb), xb[0].size, norm).reshape(xb.shape)  # (B ...)
            xb = xb + delta.astype(dtype)
            if clip is not None:
                # Clipping moves each value towards x (x itself is in range), so it stays in the ball.
                xb = np.clip(xb, clip[0], clip[1])
            x_adv[start:start + len(xb)] = xb
        return x_adv

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
        check_positive(eps=self.eps)
        parse_norm(self.norm)
        check_count("batch_size", self.batch_size)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0; got {self.seed!r}")
        if not isinstance(self.verbose, bool):
            raise TypeError(f"verbose must be True or False; got {self.verbose!r}")


def noise(estimator, *, eps: float = 0.1, norm: str = "inf", seed: int | None = None, batch_size: int = 128,
          verbose: bool = False) -> NoiseAttack:
    """The ``noise`` attack bound to ``estimator`` (see the module docstring)."""
    return NoiseAttack(estimator, eps=eps, norm=norm, seed=seed, batch_size=batch_size, verbose=verbose)


@hookimpl
def register_attacks(register):
    register("noise", noise, "Uniform random noise in the L-inf or L2 eps-ball: the baseline every attack must beat")
