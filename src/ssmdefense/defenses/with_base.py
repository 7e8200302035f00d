"""``WithBase``: a defense that changes the model or the training data and leaves the training to a base
defense on the shared loop (``ads``, ``augment``)."""

from __future__ import annotations

import inspect

import torch

from ..api import get_defense
from ..plugins import registry
from .loop import LOOP_PARAMS, TrainingLoop


class WithBase(TrainingLoop):
    """A defense that changes the model or the training data and leaves the training itself to a
    base defense, an instance the caller builds (``with_base`` below does it for the registered
    factories): any defense that trains batch by batch on this loop (``pgd-at``, ``trades``,
    ``free-at``, ``yopo``, ``minmax``, ``fbf``, ``none``). This loop runs the epochs; the base's
    ``train_batch`` trains each transformed batch. Subclasses override ``transform(x)``."""

    def __init__(self, classifier, *, base: TrainingLoop, **loop_params):
        super().__init__(classifier, **loop_params)
        if not trains_on_the_loop(type(base)):
            raise _not_a_base(getattr(base, "name", base))
        self.base = base
        self.steps_per_batch, self.epoch_divisor = base.steps_per_batch, base.epoch_divisor

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


def trains_on_the_loop(factory) -> bool:
    """Whether ``factory`` is a defense class that trains batch by batch on the shared loop."""
    return (isinstance(factory, type) and issubclass(factory, TrainingLoop) and not issubclass(factory, WithBase)
            and factory.fit is TrainingLoop.fit)


def _not_a_base(name) -> ValueError:
    return ValueError(f"base must be a defense that trains batch by batch on the shared loop "
                      f"(pgd-at, trades, free-at, yopo, minmax, fbf, none, ...); got {name!r}")


def with_base(cls: type[WithBase], classifier, base: str, params: dict) -> WithBase:
    """``cls`` over the registered defense ``base``: what the registered factories of ``ads`` and
    ``augment`` do. ``params`` are split three ways: ``cls``'s own keyword parameters, the loop's
    (both go to ``cls``) and the rest, which go to the base (its registry entry checks them). The
    base is given the loop's ``eps`` and ``seed`` and no progress output of its own."""
    own_names = {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY}
    mine = {k: v for k, v in params.items() if k in own_names or k in LOOP_PARAMS}
    shared = {k: mine[k] for k in ("eps", "seed") if k in mine}
    base_params = {k: v for k, v in params.items() if k not in mine}
    if not trains_on_the_loop(registry("defenses").get(base).factory):  # checked before anything is built
        raise _not_a_base(base)
    return cls(classifier, base=get_defense(base, classifier, verbose=False, **shared, **base_params), **mine)
