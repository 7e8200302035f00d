"""Spatial attack: adversarially chosen rotations and translations (Engstrom et al., ICML 2019,
"A Rotation and a Translation Suffice", https://arxiv.org/abs/1712.02779), through Foolbox's
``SpatialAttack``, wrapped as an ART ``EvasionAttack``.

For each image it tries rotations in [-max_rotation, max_rotation] degrees and translations in
[-max_translation, max_translation] pixels along both image axes (a grid, or random draws), and
keeps the first transformation that makes the model misclassify that image (bilinear resampling,
zero padding). An image no transformation fools is returned unchanged.

Not an eps-ball attack: the perturbation is a small geometric transformation, so its L-p distance
to x is not bounded. ``eps`` is accepted only so that callers that pass a budget to every attack
(``ssmdefense evaluate``, ``evaluate_robustness``) can run it; its value is ignored, and the
accuracy is the same at every eps.

Arguments:
    max_rotation (float): largest rotation, in degrees. Default: 30.
    max_translation (float): largest shift along each image axis, in pixels. Default: 3 (for 28 x 28
        MNIST; scale it to the image size, e.g. 1 or 2 on 8 x 8 digits).
    num_rotations (int): rotations on the grid (grid search), evenly spaced from -max_rotation to
        max_rotation (an odd number includes 0; 1 tries -max_rotation only, as in Foolbox). Default: 5.
    num_translations (int): translations per axis on the grid (grid search), spaced likewise.
        Default: 5.
    grid_search (bool): True: try the whole grid (num_rotations * num_translations ** 2
        transformations, deterministic); False: ``random_steps`` random draws (NumPy's global
        generator). Default: True.
    random_steps (int): draws when grid_search is False. Default: 100.
    eps (float | None): ignored (see above). Default: None.
    batch_size (int): images per Foolbox call. Default: 128.
    verbose (bool): a progress bar over batches (stderr). Default: False.

Shape: images (N, C, H, W) (channels first) in the estimator's natural shape; x_adv has the same
shape and dtype and stays inside the estimator's ``clip_values`` (when None, inside the range of x).
``y``: class indices or one-hot labels; None attacks the estimator's own predictions (as ART does).

Foolbox runs ``estimator.model`` (natural-shape input -> logits) directly, so ART preprocessing or
defences attached to the estimator are not applied during the search.

Examples::

    attack = sd.get_attack("spatial", clf, max_rotation=30, max_translation=3)
    x_adv = attack.generate(x_test, y_test)
"""

from __future__ import annotations

import warnings

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification import PyTorchClassifier
from tqdm.auto import tqdm

from ..modes import eval_mode
from ..validation import boolean
from ._common import check_count, check_ignored_eps, check_image_estimator, check_number, class_indices


class FoolboxSpatialAttack(EvasionAttack):
    """ART wrapper of ``foolbox.attacks.SpatialAttack`` on a PyTorch estimator."""

    attack_params = EvasionAttack.attack_params + [
        "max_rotation",
        "max_translation",
        "num_rotations",
        "num_translations",
        "grid_search",
        "random_steps",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (PyTorchClassifier,)

    def __init__(
        self,
        estimator,
        max_rotation: float = 30.0,
        max_translation: float = 3.0,
        num_rotations: int = 5,
        num_translations: int = 5,
        grid_search: bool = True,
        random_steps: int = 100,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.max_rotation = max_rotation
        self.max_translation = max_translation
        self.num_rotations = num_rotations
        self.num_translations = num_translations
        self.grid_search = grid_search
        self.random_steps = random_steps
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        import foolbox as fb
        import torch

        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"spatial needs images (N, C, H, W); got x of shape {x.shape}")
        labels = class_indices(self.estimator, x, y, int(self.batch_size))
        clip = self.estimator.clip_values
        lo, hi = (float(clip[0]), float(clip[1])) if clip is not None else (float(x.min()), float(x.max()))
        model = self.estimator.model
        attack = fb.attacks.SpatialAttack(
            max_translation=self.max_translation,
            max_rotation=self.max_rotation,
            num_translations=int(self.num_translations),
            num_rotations=int(self.num_rotations),
            grid_search=self.grid_search,
            random_steps=int(self.random_steps),
        )
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        x_adv = np.empty_like(x)
        starts = range(0, len(x), int(self.batch_size))
        with eval_mode(model):  # Foolbox warns about a model in train mode
            fmodel = fb.PyTorchModel(model, bounds=(lo, hi), device=self.estimator.device)
            for start in tqdm(starts, desc="spatial", disable=not self.verbose):
                end = start + int(self.batch_size)
                # Foolbox asserts that inputs lie within the bounds: clip away rounding errors.
                images = torch.from_numpy(np.clip(x[start:end], lo, hi)).to(self.estimator.device, dtype)
                targets = torch.from_numpy(labels[start:end]).to(self.estimator.device)
                with warnings.catch_warnings():
                    # Foolbox 3.3.4 calls torch.meshgrid without indexing=; torch warns that the
                    # default will change. Harmless: the default it relies on is "ij".
                    warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
                    adv, _, _ = attack(fmodel, images, targets)
                # Bilinear resampling with zero padding can leave [lo, hi] when 0 is outside it.
                x_adv[start:end] = np.clip(adv.detach().cpu().numpy(), lo, hi).astype(x.dtype)
        return x_adv

    def _check_params(self) -> None:
        super()._check_params()
        check_number("max_rotation", self.max_rotation, 0.0, 180.0)
        check_number("max_translation", self.max_translation, 0.0)
        for name in ("num_rotations", "num_translations", "random_steps", "batch_size"):
            check_count(name, getattr(self, name))
        for name in ("grid_search", "verbose"):
            boolean(name, getattr(self, name))


def spatial(
    estimator,
    *,
    max_rotation: float = 30.0,
    max_translation: float = 3.0,
    num_rotations: int = 5,
    num_translations: int = 5,
    grid_search: bool = True,
    random_steps: int = 100,
    eps: float | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> FoolboxSpatialAttack:
    """The ``spatial`` attack bound to ``estimator`` (see the module docstring)."""
    check_ignored_eps("spatial", eps)
    check_image_estimator("spatial", estimator)
    if not getattr(estimator, "channels_first", True):
        raise ValueError("spatial needs channels-first images (N, C, H, W); the estimator is channels-last")
    return FoolboxSpatialAttack(
        estimator,
        max_rotation=max_rotation,
        max_translation=max_translation,
        num_rotations=num_rotations,
        num_translations=num_translations,
        grid_search=grid_search,
        random_steps=random_steps,
        batch_size=batch_size,
        verbose=verbose,
    )
