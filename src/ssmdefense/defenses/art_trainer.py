"""``ARTTrainerDefense``: a plain ART ``Trainer`` registered as a defense, made whole.

A plugin may register any ART trainer (``fit(x, y, ...)`` and ``get_classifier()``), for example a
factory returning ART's ``AdversarialTrainerMadryPGD`` unchanged. ``ssmdefense defend`` needs more
than that (``contracts.Defense``): a ``fit`` that evaluates every epoch and writes the run's
``best``/``last`` checkpoints, ``describe()``, ``timing`` and ``name``. ``api.get_defense`` wraps
such a trainer in this adapter, which

- trains one epoch per ``trainer.fit(x, y, nb_epochs=1, batch_size=...)`` call when the trainer's
  ``fit`` takes ``nb_epochs`` (ART's trainers do), so that each epoch is evaluated (clean and PGD
  accuracy at ``eps``, as the shared loop does: ``evaluator.py``) and checkpointed by the loop's
  policy (``checkpoints.py``: best by PGD accuracy, and last). A ``fit`` without ``nb_epochs`` is
  called once, as one epoch;
- records ``describe()`` as the trainer's class and the run's settings, and no cost ratio (the
  trainer's batches are its own business: ``timing`` is empty);
- cannot resume: an ART trainer keeps its optimiser and attack state to itself, so
  ``resume=True`` is a clear error instead of a run that silently restarts.
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path

from ..contracts import Defense, missing
from ..errors import SSMDefenseError
from ..labels import as_training_data
from ..seeding import seed_everything
from .checkpoints import best_checkpoint_key, write_epoch
from .evaluator import evaluate_epoch

#: what ``ssmdefense defend`` passes to every defense factory; the adapter keeps the values it uses
RUN_PARAMS = ("eps", "seed", "batch_size", "eval_samples", "verbose")


class ARTTrainerDefense:
    """``contracts.Defense`` around the ART trainer ``trainer`` registered as defense ``name``."""

    def __init__(
        self,
        trainer,
        name: str,
        *,
        eps: float = 0.1,
        seed: int = 0,
        batch_size: int = 64,
        eval_samples: int | None = None,
        verbose: bool = True,
        eval_max_iter: int = 10,
    ):
        self.trainer, self.name = trainer, name
        self.eps, self.seed, self.batch_size = eps, seed, batch_size
        self.eval_samples, self.verbose, self.eval_max_iter = eval_samples, verbose, eval_max_iter
        self.timing: dict = {}
        self.history: list[dict] = []
        self._epoch_fit = "nb_epochs" in inspect.signature(trainer.fit).parameters

    def get_classifier(self):
        return self.trainer.get_classifier()

    def describe(self) -> dict:
        return {
            "art_trainer": f"{type(self.trainer).__module__}.{type(self.trainer).__name__}",
            "eps": self.eps,
            "batch_size": self.batch_size,
            "eval_max_iter": self.eval_max_iter,
            "seed": self.seed,
        }

    def fit(
        self,
        x,
        y,
        validation_data=None,
        nb_epochs: int = 10,
        batch_size: int | None = None,
        out_dir=None,
        checkpoint_extra: dict | None = None,
        resume: bool = False,
    ) -> list[dict]:
        """Train with the ART trainer, epoch by epoch, evaluating and checkpointing like ``TrainingLoop.fit``
        (same arguments; ``resume`` is refused, see the module docstring). Returns one dict per epoch."""
        if resume:
            raise SSMDefenseError(
                f"defense {self.name!r} is a plain ART trainer ({type(self.trainer).__name__}): "
                f"it keeps no training state to resume from; start the run again"
            )
        clf = self.get_classifier()
        x, y = as_training_data(x, y, clf.input_shape, clf.nb_classes)
        if validation_data is not None:
            validation_data = as_training_data(*validation_data, clf.input_shape, clf.nb_classes)
        out = Path(out_dir) if out_dir is not None else None
        epochs = nb_epochs if self._epoch_fit else 1
        kwargs = {"nb_epochs": 1, "batch_size": batch_size or self.batch_size} if self._epoch_fit else {}
        seed_everything(self.seed)
        best_key, self.history = None, []
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            self.trainer.fit(x, y, **kwargs)
            row = {"epoch": epoch, "epoch_seconds": time.perf_counter() - start}
            if validation_data is not None:
                t_eval = time.perf_counter()
                row.update(
                    evaluate_epoch(
                        clf,
                        *validation_data,
                        eps=self.eps,
                        max_iter=self.eval_max_iter,
                        seed=self.seed,
                        samples=self.eval_samples,
                    )
                )
                row["eval_seconds"] = time.perf_counter() - t_eval
            self.history.append(row)
            key = best_checkpoint_key(row, self.eval_max_iter) if validation_data is not None else (epoch,)
            improved = best_key is None or key > best_key
            best_key = key if improved else best_key
            if out is not None:
                meta = {**(checkpoint_extra or {}), "epoch": epoch, "defense": self.name, "metrics": row}
                write_epoch(clf, out, meta, improved)
            if self.verbose:
                print(
                    f"{self.name} epoch {epoch}/{epochs}: " + _summary(row, self.eval_max_iter),
                    file=sys.stderr,
                    flush=True,
                )
        return self.history


def _summary(row: dict, max_iter: int) -> str:
    if "clean_accuracy" not in row:
        return f"{row['epoch_seconds']:.1f}s"
    return (
        f"clean {row['clean_accuracy']:.3f}  pgd-{max_iter} {row['robust_accuracy'][f'pgd-{max_iter}']:.3f}  "
        f"({row['epoch_seconds']:.1f}s)"
    )


def as_defense(trainer, name: str, params: dict):
    """``trainer`` itself when it is a whole ``contracts.Defense``; otherwise wrapped in
    ``ARTTrainerDefense`` with the run's settings found in ``params``."""
    if not missing(trainer, Defense):
        return trainer
    return ARTTrainerDefense(trainer, name, **{k: params[k] for k in RUN_PARAMS if k in params})
