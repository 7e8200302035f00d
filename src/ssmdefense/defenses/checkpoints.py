"""The loop's checkpoint policy: which epoch is best, and what each epoch writes to the run directory."""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import save


def best_checkpoint_key(row: dict, eval_max_iter: int) -> tuple:
    """The best epoch has the highest PGD robust accuracy; ties go to the higher clean accuracy."""
    return row["robust_accuracy"][f"pgd-{eval_max_iter}"], row["clean_accuracy"]


def write_epoch(clf, out: Path, meta: dict, improved: bool) -> None:
    """``last.*`` every epoch, ``best.*`` when the epoch improved on the best, and one line of
    ``metrics.jsonl`` (``meta["metrics"]``); ``meta`` is stored in the checkpoints."""
    save(clf, out / "last", extra=meta)
    if improved:
        save(clf, out / "best", extra=meta)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(meta["metrics"]) + "\n")
