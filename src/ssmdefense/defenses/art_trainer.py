"""``ARTTrainerDefense``: a plain ART ``Trainer`` registered as a defense, made whole.

A plugin may register any ART trainer (``fit(x, y, ...)`` and ``get_classifier()``), for example a
factory returning ART's ``AdversarialTrainerMadryPGD`` unchanged. ``ssmdefense defend`` needs more
than that (``contracts.Defense``): a ``fit`` that evaluates every epoch and writes the run's
``best``/``last`` checkpoints, ``describe()``, ``timing`` and ``name``. ``api.get_defense`` wraps
such a trainer in this adapter, which

- trains one epoch per ``trainer.fit(x, y, nb_epochs=1, batch_size=...)`` call when the trainer's
  ``fit`` takes ``nb_epochs`` (ART's trainers do), so that each epoch is evaluated (clean and PGD
  accuracy at ``eps``, as the shared loop does: ``evaluator.py``) and checkpointed by the loop's
  policy (``epochs.EpochEnd``, the loop's own: best by PGD accuracy, and last). A ``fit`` without
  ``nb_epochs`` is called once, as one epoch;
- records ``describe()`` as the trainer's class and the run's settings, and no cost ratio (the
  trainer's batches are its own business: ``timing`` is empty);
- cannot resume: an ART trainer keeps its optimiser and attack state to itself, so
  ``resume=True`` is a clear error instead of a run that silently restarts.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from .. import progress
from ..contracts import Defense, missing
from ..errors import SSMDefenseError
from ..labels import as_training_data
from ..seeding import seed_everything
from .epochs import EpochEnd
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
        self.best_epoch, self.best_state = None, None  # the best epoch's number and weights, after fit
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
        callbacks=(),
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
        self.history = []
        end = EpochEnd(self, clf, validation_data, out=out, checkpoint_extra=checkpoint_extra, epochs=epochs,
                       verbose=True, callbacks=callbacks)  # fmt: skip
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            with progress.phase(f"{self.name} epoch {epoch}/{epochs}", line=False):  # EpochEnd prints its line
                self.trainer.fit(x, y, **kwargs)
            end({"epoch": epoch, "epoch_seconds": time.perf_counter() - start})
        return self.history

    def evaluate(self, x, y) -> dict:
        """Clean and PGD accuracy of the current weights on (x, y), as the shared loop evaluates."""
        clf, samples = self.get_classifier(), self.eval_samples
        return evaluate_epoch(clf, x, y, eps=self.eps, max_iter=self.eval_max_iter, seed=self.seed, samples=samples)


def as_defense(trainer, name: str, params: dict):
    """``trainer`` itself when it is a whole ``contracts.Defense``; otherwise wrapped in
    ``ARTTrainerDefense`` with the run's settings found in ``params``."""
    if not missing(trainer, Defense):
        return trainer
    return ARTTrainerDefense(trainer, name, **{k: params[k] for k in RUN_PARAMS if k in params})
