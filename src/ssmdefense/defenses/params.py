"""A defense's parameters, ART-style (as an ART attack's ``attack_params`` and ``_check_params``):
``TrainingLoop.defense_params`` names the keyword parameters a defense accepts (the registry's
``-p`` keys), ``_check_params()`` checks the values held, and ``describe()`` reports them.

Here: the declaration rule every ``TrainingLoop`` subclass follows (``declare_params``, run by
``__init_subclass__``) and the checks of the loop's own parameters (``check_loop_params``).
"""

from __future__ import annotations

import inspect

from ..validation import integer, non_negative, positive

LOOP_PARAMS = (
    "eps",
    "batch_size",
    "lr",
    "weight_decay",
    "ssm_weight_decay",
    "eval_max_iter",
    "eval_samples",
    "seed",
    "precision",
    "verbose",
)
PRECISIONS = ("fp32", "bf16")


def declare_params(cls: type) -> None:
    """A subclass that declares no ``defense_params`` gets its parent's plus the keyword-only
    parameters of its own ``__init__``; a declaration that misses one of those is a ``TypeError``
    when the class is defined (a bug in the defense, not a user's mistake)."""
    init = cls.__dict__.get("__init__")
    params = () if init is None else inspect.signature(init).parameters.values()
    own = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)
    if "defense_params" not in cls.__dict__:
        cls.defense_params = tuple(dict.fromkeys(super(cls, cls).defense_params + own))
    elif missing := [name for name in own if name not in cls.defense_params]:
        raise TypeError(
            f"{cls.__name__}.defense_params does not declare {', '.join(missing)}, which its __init__ takes"
        )


def check_loop_params(trainer) -> None:
    """``ValueError`` for a bad value of the loop's own parameters (``TrainingLoop._check_params``)."""
    for key in ("eps", "lr"):
        positive(key, getattr(trainer, key))
    for key in ("batch_size", "eval_max_iter"):
        positive(key, getattr(trainer, key), integer=True)
    positive("eval_samples", trainer.eval_samples, integer=True, optional=True)
    non_negative("weight_decay", trainer.weight_decay)
    non_negative("ssm_weight_decay", trainer.ssm_weight_decay)
    integer("seed", trainer.seed)
    if trainer.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {trainer.precision!r}")
    if trainer._classifier.clip_values is None:
        raise ValueError("the classifier needs clip_values (e.g. (0.0, 1.0)) to keep perturbations valid")
