"""The loop's checkpoint policy: which epoch is best, what each epoch writes to the run directory and
prints (``epochs.EpochEnd`` applies it), and when a loss stops a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..checkpoint import save
from ..errors import TrainingDiverged


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


def epoch_summary(row: dict, epochs: int, eval_max_iter: int, improved: bool) -> str:
    """The line a verbose fit prints after epoch ``row["epoch"]`` of ``epochs``."""
    msg = f"epoch {row['epoch']}/{epochs}"
    if "train_loss" in row:  # (a plain ART trainer's epochs report none)
        msg += f"  loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.3f}"
    if "clean_accuracy" in row:
        ra = row["robust_accuracy"][f"pgd-{eval_max_iter}"]
        msg += f"  clean {row['clean_accuracy']:.3f}  pgd-{eval_max_iter} {ra:.3f}"
    return msg + f"  ({row['epoch_seconds']:.1f}s)" + ("  *best" if improved else "")


def finite_loss(loss, epoch: int, batch: int, out: Path | None) -> float:
    """``loss`` (a number or a one-element tensor) as a float, or ``TrainingDiverged`` when it is NaN
    or infinite: training stops at once, and the run directory keeps the checkpoints of the last
    epoch that finished (``last.*``)."""
    value = float(loss)
    if not math.isfinite(value):
        kept = f"; the last finished epoch's checkpoints are kept in {out}" if out is not None and epoch > 1 else ""
        raise TrainingDiverged(
            f"the training loss became {value} in epoch {epoch}, batch {batch}: training stopped{kept} "
            f"(a lower lr, -p lr=..., usually helps)"
        )
    return value
