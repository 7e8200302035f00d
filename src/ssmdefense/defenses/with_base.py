"""``WithBase``: a defense that changes the model or the training data and leaves the training to a base
defense on the shared loop (``ads``, ``augment``)."""

from __future__ import annotations

import torch

from ..api import get_defense
from ..plugins import registry
from .loop import TrainingLoop


class WithBase(TrainingLoop):
    """A defense that changes the model or the training data and leaves the training itself to a
    base defense, an instance the caller builds (``with_base`` below does it for the registered
    factories): any defense that trains batch by batch on this loop (``pgd-at``, ``trades``,
    ``free-at``, ``yopo``, ``minmax``, ``fbf``, ``none``). This loop runs the epochs; the base's
    ``train_batch`` trains each transformed batch. Subclasses override ``transform(x)`` and take
    ``base`` as their first keyword parameter (``describe()`` records it there, as its name and
    ``base_params``, the base's own parameters)."""

    def __init__(self, classifier, *, base: TrainingLoop, **loop_params):
        self.base = base
        super().__init__(classifier, **loop_params)  # stores the loop's parameters, checks them all
        self.steps_per_batch, self.epoch_divisor = base.steps_per_batch, base.epoch_divisor

    def _check_params(self) -> None:
        super()._check_params()
        if not trains_on_the_loop(type(self.base)):
            raise _not_a_base(getattr(self.base, "name", self.base))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The batch the base defense trains on (identity here)."""
        return x

    def train_batch(self, model, optimizer, scheduler, x, y):
        return self.base.train_batch(model, optimizer, scheduler, self.transform(x), y)

    def on_fit_start(self, x, y, **settings):
        self.base.on_fit_start(x, y, **settings)

    def extra_state(self):
        return self.base.extra_state()

    def load_extra_state(self, tensors):
        self.base.load_extra_state(tensors)

    def describe(self) -> dict:
        own = super().describe()  # "base" is the instance: recorded as its name and its own parameters
        base_params = {k: v for k, v in self.base.describe().items() if k not in own}
        described = {}
        for key, value in own.items():
            described.update({"base": self.base.name, "base_params": base_params} if key == "base" else {key: value})
        return described


def trains_on_the_loop(factory) -> bool:
    """Whether ``factory`` is a defense class that trains batch by batch on the shared loop."""
    return (
        isinstance(factory, type)
        and issubclass(factory, TrainingLoop)
        and not issubclass(factory, WithBase)
        and factory.fit is TrainingLoop.fit
        and factory.batch_by_batch
    )


def _not_a_base(name) -> ValueError:
    return ValueError(
        f"base must be a defense that trains batch by batch on the shared loop "
        f"(pgd-at, trades, free-at, yopo, minmax, fbf, none, ...); got {name!r}"
    )


def with_base(cls: type[WithBase], classifier, base: str, params: dict) -> WithBase:
    """``cls`` over the registered defense ``base``: what the registered factories of ``ads`` and
    ``augment`` do. ``params`` are split two ways: ``cls``'s ``defense_params`` (its own and the
    loop's) go to ``cls``, the rest to the base (its registry entry checks them). The base is given
    the loop's ``eps`` and ``seed`` and no progress output of its own."""
    mine = {k: v for k, v in params.items() if k in cls.defense_params}
    shared = {k: mine[k] for k in ("eps", "seed") if k in mine}
    base_params = {k: v for k, v in params.items() if k not in mine}
    if not trains_on_the_loop(registry("defenses").get(base).factory):  # checked before anything is built
        raise _not_a_base(base)
    return cls(classifier, base=get_defense(base, classifier, verbose=False, **shared, **base_params), **mine)
