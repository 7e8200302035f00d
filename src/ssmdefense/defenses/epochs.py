"""The work after each training epoch, one object shared by ``TrainingLoop.fit`` and the ART-trainer
adapter (``ARTTrainerDefense.fit``): the peak memory, the evaluation on the validation data, the
choice of the best epoch, the checkpoints and ``metrics.jsonl``, the callbacks (TensorBoard's logger,
``tensorboard.py``), for the loop the resume state, and the epoch's line on the terminal.

A callback is any object with ``on_epoch_end(row)``, called with the epoch's finished row (what
``metrics.jsonl`` records) after the checkpoints and before the resume state; the process that
writes the run directory alone runs them."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .. import progress
from .checkpoints import best_checkpoint_key, epoch_summary, write_epoch


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak memory so far in MiB: CUDA memory allocated by torch on a GPU, else the
    peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class EpochEnd:
    """Called with each epoch's training row; records it in ``trainer.history``.

    ``trainer`` has ``name``, ``eval_max_iter``, ``evaluate(x, y)`` (clean and PGD accuracy),
    ``history``, ``best_epoch`` and ``best_state``; ``validation`` is (x_val, y_val) or None (then
    the last epoch is the best); ``out`` the run directory this process writes (None: none);
    ``callbacks`` what else each finished epoch goes to (module docstring).
    """

    def __init__(
        self,
        trainer,
        clf,
        validation: tuple | None,
        *,
        out: Path | None,
        checkpoint_extra: dict | None,
        epochs: int,
        verbose: bool,
        callbacks: Sequence = (),
    ):
        self.trainer, self.clf, self.validation, self.callbacks = trainer, clf, validation, tuple(callbacks)
        self.out, self.checkpoint_extra, self.epochs, self.verbose = out, checkpoint_extra or {}, epochs, verbose
        self.best_key: tuple | None = None  # the best epoch's (PGD accuracy, clean accuracy), or (epoch,)

    def __call__(self, row: dict, save_state: Callable[[tuple], None] | None = None) -> bool:
        """Finish the epoch of ``row`` (its training figures); ``save_state(best_key)`` writes the
        resume state after the checkpoints. Returns whether the epoch is the best so far."""
        trainer, epoch = self.trainer, row["epoch"]
        row["peak_memory_mb"] = peak_memory_mb(self.clf.device)
        if self.validation is not None:
            start = time.perf_counter()
            with progress.phase(f"epoch {epoch}: clean and PGD-{trainer.eval_max_iter} accuracy", line=False):
                row.update(trainer.evaluate(*self.validation))
            row["eval_seconds"] = time.perf_counter() - start
        trainer.history.append(row)
        improved = self._pick(row, epoch)
        if self.out is not None:
            meta = {**self.checkpoint_extra, "epoch": epoch, "defense": trainer.name, "metrics": row}
            write_epoch(self.clf, self.out, meta, improved)
        for callback in self.callbacks:
            callback.on_epoch_end(row)
        if self.out is not None:
            if save_state is not None:
                save_state(self.best_key)
        if self.verbose:  # the epoch's line (ssmdefense.progress: on a terminal, between the bars)
            progress.say(epoch_summary(row, self.epochs, trainer.eval_max_iter, improved))
        return improved

    def _pick(self, row: dict, epoch: int) -> bool:
        """Whether ``epoch`` improves on the best (``best_checkpoint_key`` on the validation data, else
        the later epoch); an improving epoch becomes the trainer's ``best_epoch`` and a copy of its
        weights its ``best_state``."""
        validated = self.validation is not None
        key = best_checkpoint_key(row, self.trainer.eval_max_iter) if validated else (epoch,)
        if self.best_key is not None and not tuple(key) > tuple(self.best_key):
            return False
        self.best_key = tuple(key)
        self.trainer.best_epoch, self.trainer.best_state = epoch, copy.deepcopy(self.clf.body.state_dict())
        return True
