"""What a defense costs: its seconds per training batch against standard training's, timed side by
side in the same process on copies of the model (the trained one is untouched), as reports state it."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..seeding import seeded


def measure_overhead(trainer, x: np.ndarray, y: np.ndarray, batch_size: int, batches: int = 3) -> dict:
    """Seconds per batch of this defense and of standard training, timed side by side on copies
    of the model (the trained one is untouched, random generators restored), and the overhead
    ratio of a whole run: (defense seconds per batch / standard) / ``epoch_divisor``."""
    clf = trainer._classifier
    n = min(len(x), batches * batch_size)
    xb = torch.from_numpy(x[:n]).to(clf.device).split(batch_size)  # batches x (B ...)
    yb = torch.from_numpy(y[:n]).to(clf.device).split(batch_size)  # batches x (B)

    def timed(step) -> float:
        model = copy.deepcopy(clf.model).train()
        optimizer = torch.optim.AdamW(trainer.parameter_groups(model), lr=trainer.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        start = time.perf_counter()
        for xi, yi in zip(xb, yb):
            step(model, optimizer, scheduler, xi, yi)
        return (time.perf_counter() - start) / len(xb)

    with seeded(trainer.seed):
        extra = {k: v.clone() for k, v in trainer.extra_state().items()}
        defense = timed(trainer.train_batch)
        standard = timed(standard_batch)
        trainer.load_extra_state(extra)
    return {
        "defense_batch_seconds": defense,
        "standard_batch_seconds": standard,
        "overhead_ratio": defense / standard / trainer.epoch_divisor,
    }


def standard_batch(model, optimizer, scheduler, x, y):
    """One step of standard training (cross-entropy on the clean batch): the overhead reference."""
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
