"""``WithBase``: a defense that changes the model or the training data and leaves the training to a base
defense on the shared loop (``ads``, ``augment``)."""

from __future__ import annotations

import torch

from .loop import LOOP_PARAMS, TrainingLoop


class WithBase(TrainingLoop):
    """A defense that changes the model or the training data and leaves the training itself to a
    base defense: ``base`` names any registered defense built on this loop (``pgd-at``, ``trades``,
    ``free-at``, ``yopo``, ``minmax``, ...). The loop's parameters are shared; every other
    parameter goes to the base, which checks it. Subclasses override ``transform(x)``."""

    #: the registry passes parameters it cannot list on to this factory (the base's)
    accepts_unlisted_params = True

    def __init__(self, classifier, *, base: str = "pgd-at", **params):
        from ..api import get_defense
        from ..plugins import registry

        loop = {k: params.pop(k) for k in LOOP_PARAMS if k in params}
        super().__init__(classifier, **loop)
        factory = registry("defenses").get(base).factory
        if not (isinstance(factory, type) and issubclass(factory, TrainingLoop)) or issubclass(factory, WithBase) \
                or factory.fit is not TrainingLoop.fit:
            raise ValueError(f"base must be a defense that trains batch by batch on the shared loop "
                             f"(pgd-at, trades, free-at, yopo, minmax, fbf, none, ...); got {base!r}")
        self.base = get_defense(base, classifier, eps=self.eps, seed=self.seed, verbose=False, **params)
        self.steps_per_batch, self.epoch_divisor = self.base.steps_per_batch, self.base.epoch_divisor

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The batch the base defense trains on (identity here)."""
        return x

    def train_batch(self, model, optimizer, scheduler, x, y):
        return self.base.train_batch(model, optimizer, scheduler, self.transform(x), y)

    def on_fit_start(self):
        self.base.on_fit_start()

    def extra_state(self):
        return self.base.extra_state()

    def load_extra_state(self, tensors):
        self.base.load_extra_state(tensors)

    def describe(self) -> dict:
        own = super().describe()
        return {**own, "base": self.base.name,
                "base_params": {k: v for k, v in self.base.describe().items() if k not in own}}
