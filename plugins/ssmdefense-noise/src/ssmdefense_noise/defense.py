"""``noise-augment``: training on uniformly noised inputs (Gaussian/uniform data augmentation,
cf. Zantedeschi et al. 2017, https://arxiv.org/abs/1707.06728), on ssmdefense's shared loop.

Each batch ``x`` is replaced by ``clip(x + uniform(-sigma, sigma))`` and the model minimises
cross-entropy on it. The loop (``ssmdefense.TrainingLoop``) still does everything else: AdamW, the
cosine schedule, per-epoch PGD-10 evaluation at ``eps``, best/last checkpoints.

Arguments (plus the loop's: eps, batch_size, lr, weight_decay, eval_max_iter, eval_samples, seed,
verbose):
    sigma (float | None): half-width of the uniform noise; None means ``eps``. 0 is standard
        training. Default: None.

Examples::

    trainer = sd.get_defense("noise-augment", clf, sigma=0.2, eps=0.1)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmdefense import TrainingLoop
from ssmdefense.validation import number


class NoiseAugmentTrainer(TrainingLoop):
    """An ART ``Trainer``: noise augmentation of every training batch."""

    name = "noise-augment"

    def __init__(self, classifier, *, sigma: float | None = None, **loop_params):
        self.sigma = sigma
        super().__init__(classifier, **loop_params)  # stores eps, lr, ...; calls _check_params()
        if self.sigma is None:  # resolved once eps is checked
            self.sigma = self.eps

    def _check_params(self) -> None:
        super()._check_params()
        number("sigma", self.sigma, 0.0, optional=True, hint="None means eps")

    def training_step(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        lo, hi = self.clip
        noise = torch.empty_like(x).uniform_(-self.sigma, self.sigma)  # (B ...)
        x_noisy = (x + noise).clamp(lo, hi)  # (B ...)
        logits = model(x_noisy)  # (B C)
        return F.cross_entropy(logits, y), logits

    def describe(self) -> dict:
        return {**super().describe(), "sigma": self.sigma}
