"""The loop's per-epoch evaluation: clean accuracy and robust accuracy under a registered attack
(PGD with ``max_iter`` steps by default), with the same random starts every epoch so epochs compare.
Under ``torchrun`` each rank evaluates its share of the samples and the counts are summed; lazy data
is read in chunks (``data.stream``)."""

from __future__ import annotations

import numpy as np

from .. import distributed
from ..api import get_attack
from ..data.stream import chunks
from ..seeding import seeded


def evaluate_epoch(
    clf,
    x,
    y: np.ndarray | None,
    *,
    eps: float,
    max_iter: int,
    seed: int,
    samples: int | None = None,
    attack: str = "pgd",
) -> dict:
    """``{"clean_accuracy", "robust_accuracy": {"<attack>-<max_iter>": ...}}`` of ``clf`` on the first
    ``samples`` of (x, y) (all when None); ``x`` may be a lazy ``Dataset`` (y None)."""

    n = len(x) if samples is None else min(samples, len(x))
    world = distributed.current()
    mine = distributed.share(n, world)
    adversary = get_attack(attack, clf, eps=eps, max_iter=max_iter, batch_size=256)
    clean = robust = 0
    # predictions too inside: ART's predict iterates a DataLoader, which draws from torch's global
    # generator; outside, whether epochs are evaluated would change what is trained
    with seeded(seed + world.rank):
        for xc, yc in chunks(x, y, indices=range(mine.start, mine.stop)):
            x_adv = adversary.generate(xc.astype(np.float32), yc)
            clean += int((clf.predict(xc).argmax(1) == yc).sum())
            robust += int((clf.predict(x_adv).argmax(1) == yc).sum())
    clean, robust = distributed.all_sum([clean, robust])
    return {"clean_accuracy": clean / n, "robust_accuracy": {f"{attack}-{max_iter}": robust / n}}
