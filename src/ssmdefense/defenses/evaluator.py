"""The loop's per-epoch evaluation: clean accuracy and robust accuracy under a registered attack
(PGD with ``max_iter`` steps by default), with the same random starts every epoch so epochs compare."""

from __future__ import annotations

import numpy as np

from ..api import get_attack
from ..seeding import seeded


def evaluate_epoch(
    clf,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    max_iter: int,
    seed: int,
    samples: int | None = None,
    attack: str = "pgd",
) -> dict:
    """``{"clean_accuracy", "robust_accuracy": {"<attack>-<max_iter>": ...}}`` of ``clf`` on the first
    ``samples`` of (x, y) (all when None)."""

    if samples is not None:
        x, y = x[:samples], y[:samples]
    adversary = get_attack(attack, clf, eps=eps, max_iter=max_iter, batch_size=256)
    with seeded(seed):
        x_adv = adversary.generate(x.astype(np.float32), y)
    return {"clean_accuracy": clf.accuracy(x, y), "robust_accuracy": {f"{attack}-{max_iter}": clf.accuracy(x_adv, y)}}
