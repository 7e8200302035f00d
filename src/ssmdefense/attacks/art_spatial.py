"""ART's spatial transformation attack (Engstrom et al., ICML 2019, https://arxiv.org/abs/1712.02779),
``SpatialTransformation``, fixed for channels-first images.

A grid search over one rotation and one translation applied to *all* inputs: it keeps the
transformation that changes the most of the model's predictions (ART's criterion; compare
``spatial``, which picks a transformation per image). Translations are whole pixels, images are
resampled by scipy (cubic spline, zero padding) and clipped to the estimator's ``clip_values``.

The fix: ART 1.20.1 sizes its translation grid from ``x.shape[1]`` and ``x.shape[2]`` whatever
the layout; for channels-first input (N, C, H, W) those are C and H, so with one channel every
translation along H rounds to 0 px. Here the grid is in pixels along the real H and W axes, and
each candidate is applied through ART's own fixed-transformation path. Each ``generate`` call
searches afresh (ART's reuses the transformation its first call found) and records the one it
chose in ``attack_trans_x`` (pixels along H), ``attack_trans_y`` (pixels along W), ``attack_rot``
(degrees) and ``fooling_rate``.

Not an eps-ball attack: ``eps`` is accepted only so that callers that pass a budget to every
attack (``ssmdefense evaluate``, ``evaluate_robustness``) can run it; its value is ignored.

Arguments:
    max_translation (float): largest shift along each image axis, in pixels (not ART's percent of
        the image size); the grid is rounded to whole pixels. Default: 3.
    num_translations (int): shifts per axis on the grid, evenly spaced from -max_translation to
        max_translation (an odd number includes 0; 1 tries -max_translation only, as in ART).
        Default: 5.
    max_rotation (float): largest rotation, in degrees. Default: 30.
    num_rotations (int): rotations on the grid, spaced likewise. Default: 5.
    eps (float | None): ignored (see above). Default: None.
    batch_size (int): batch size of the predictions that score each candidate. Default: 128.
    verbose (bool): a progress bar over the grid (stderr). Default: False.

Shape: images (N, C, H, W) or, for a channels-last estimator, (N, H, W, C); x_adv has the same
shape. ``y`` is accepted for ART's interface and ignored (the criterion is the model's predictions).

Examples::

    attack = sd.get_attack("art-spatial", clf, max_translation=3, max_rotation=30)
    x_adv = attack.generate(x_test)
    attack.attack_trans_x, attack.attack_trans_y, attack.attack_rot, attack.fooling_rate
"""

from __future__ import annotations

import numpy as np
from art.attacks.evasion import SpatialTransformation
from tqdm.auto import tqdm

from ..validation import boolean
from ._common import check_count, check_ignored_eps, check_image_estimator, check_number


class PixelSpatialTransformation(SpatialTransformation):
    """``SpatialTransformation`` whose translation grid is in pixels of the real image axes."""

    attack_params = SpatialTransformation.attack_params + ["batch_size"]

    def __init__(
        self,
        classifier,
        max_translation: float = 3.0,
        num_translations: int = 5,
        max_rotation: float = 30.0,
        num_rotations: int = 5,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        self.batch_size = batch_size  # before ART's __init__, which calls _check_params
        super().__init__(
            classifier,
            max_translation=max_translation,
            num_translations=num_translations,
            max_rotation=max_rotation,
            num_rotations=num_rotations,
            verbose=verbose,
        )

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"art-spatial needs images (N, C, H, W); got x of shape {x.shape}")
        # ART's grid, in whole pixels, duplicates removed; the same budget along H and along W.
        grid = np.linspace(-self.max_translation, self.max_translation, self.num_translations).tolist()
        shifts = sorted({round(v) for v in grid})
        angles = sorted(set(np.linspace(-self.max_rotation, self.max_rotation, self.num_rotations).tolist()))
        bs = int(self.batch_size)
        pred = self.estimator.predict(x, batch_size=bs).argmax(axis=1)  # (N)
        best, x_best = (0.0, 0, 0, 0.0), x.copy()  # nothing fools: the identity, as in ART
        with tqdm(total=len(shifts) ** 2 * len(angles), desc="art-spatial", disable=not self.verbose) as bar:
            for dx in shifts:
                for dy in shifts:
                    for rot in angles:
                        x_i = self._transform(x, dx, dy, rot)
                        rate = float((self.estimator.predict(x_i, batch_size=bs).argmax(axis=1) != pred).mean())
                        if rate > best[0]:
                            best, x_best = (rate, dx, dy, rot), x_i
                        bar.update(1)
        self.fooling_rate, self.attack_trans_x, self.attack_trans_y, self.attack_rot = best
        return x_best

    def _transform(self, x: np.ndarray, dx: int, dy: int, rot: float) -> np.ndarray:
        """ART's fixed-transformation path: with all three set, its generate only applies them
        (shift along H by dx and W by dy for channels-first input, rotate, clip)."""
        self.attack_trans_x, self.attack_trans_y, self.attack_rot = dx, dy, rot
        return super().generate(x)

    def _check_params(self) -> None:
        # ART's own checks take max_translation in percent (and test max_translation > 180 where it
        # means max_rotation), so they are replaced, not extended.
        check_number("max_translation", self.max_translation, 0.0)
        check_number("max_rotation", self.max_rotation, 0.0, 180.0)
        for name in ("num_translations", "num_rotations", "batch_size"):
            check_count(name, getattr(self, name))
        boolean("verbose", self.verbose)


def art_spatial(
    estimator,
    *,
    max_translation: float = 3.0,
    num_translations: int = 5,
    max_rotation: float = 30.0,
    num_rotations: int = 5,
    eps: float | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> PixelSpatialTransformation:
    """The ``art-spatial`` attack bound to ``estimator`` (see the module docstring)."""
    check_ignored_eps("art-spatial", eps)
    check_image_estimator("art-spatial", estimator)
    return PixelSpatialTransformation(
        estimator,
        max_translation=max_translation,
        num_translations=num_translations,
        max_rotation=max_rotation,
        num_rotations=num_rotations,
        batch_size=batch_size,
        verbose=verbose,
    )
