"""``distillation``: defensive distillation (Papernot et al., IEEE S&P 2016, "Distillation as a
Defense to Adversarial Perturbations against Deep Neural Networks", https://arxiv.org/abs/1511.04508).

Kept as the textbook example of a defense that *masks gradients* (Carlini & Wagner 2016,
"Defensive Distillation is Not Robust to Adversarial Examples", https://arxiv.org/abs/1607.04311):
its PGD accuracy looks high, and ``ssmdefense evaluate`` (``evaluation.sanity``) flags it.

With ``F(x)`` a model's logits and ``T`` the temperature:

1. teacher: a copy of the classifier's model *with its initial weights* (taken when ``fit`` starts,
   before any training; the paper trains the teacher from scratch with the student's architecture),
   trained on the hard labels at temperature T for ``teacher_epochs``::

       L_teacher = CE(softmax(F_t(x) / T), y)

2. student: the classifier's own model, trained on the teacher's soft labels at the same T (the
   teacher in eval mode, soft labels computed without gradient)::

       p_t = softmax(F_t(x) / T)
       L_student = -sum_c p_t[c] * log_softmax(F_s(x) / T)[c]

3. deployment at T = 1: the classifier returns the student's raw logits ``F_s(x)``; nothing divides
   them at test time. Trained to match ``p_t`` after division by T, they come out about T times
   larger than a standard model's, so the softmax saturates and the cross-entropy gradient that
   PGD follows underflows to zero in float32. That is the documented gradient masking, not
   robustness: Square (no gradients) and C&W (margins of the logits) still break the model.

Both stages run on the shared loop. The teacher's run has no validation and writes no checkpoint
of the run: ``best``/``last`` (picked by PGD-10 robust accuracy, at T = 1) are the student's.
With ``out_dir`` the teacher is saved beside them as ``teacher.safetensors``/``teacher.json``
(``sd.load(run_dir / "teacher")``; its raw logits, too, are undivided) so that ``resume=True``
continues the student without retraining the teacher. The trained teacher is ``trainer.teacher``
(an ART classifier) after ``fit``.

ART's own ``DefensiveDistillation`` transformer needs a trained classifier and a student that
both output probabilities (it checks that predictions sum to 1), and leaves the temperature to
the models; this one works with logit models (every ssmdefense model) and trains both.

Cost: the teacher's training is counted. ``trainer.timing`` (``report.json`` "timing") adds
``teacher_seconds`` (wall time of the teacher's training), ``teacher_epochs``,
``student_overhead_ratio`` (the loop's side-by-side ratio: a student batch, with its extra
teacher forward pass, over a standard batch) and sets ``overhead_ratio`` for the whole run to
``student_overhead_ratio + teacher_epochs / nb_epochs`` (a teacher batch costs one standard batch).

Arguments (plus the loop's: eps, batch_size, lr, weight_decay, eval_max_iter, eval_samples, seed, verbose):
    temperature (float): T, > 0. Default: 100 (the paper's value for MNIST and CIFAR-10). Any
        T of 20 or more saturates the deployed softmax; T = 1 is plain self-distillation.
    teacher_epochs (int | None): epochs of the teacher's training; None: the ``nb_epochs`` of
        ``fit``. Default: None.

Examples::

    trainer = sd.get_defense("distillation", clf, temperature=100)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=5)
    sd.evaluation.sanity.gradient_masking_checks(clf, x_test[:200], y_test[:200], eps=0.1)
    # -> {"gradient_masking_suspected": True, ...}
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .loop import TrainingLoop


class _TeacherLoop(TrainingLoop):
    """The teacher's training: cross-entropy of the hard labels on ``logits / T``."""

    name = "distillation-teacher"

    def __init__(self, classifier, *, temperature: float, **loop_params):
        super().__init__(classifier, **loop_params)
        self.temperature = temperature

    def training_step(self, model, x, y):
        logits = model(x)  # (B C)
        return F.cross_entropy(logits / self.temperature, y), logits

    def measure_overhead(self, x, y, batch_size, batches: int = 3) -> dict:
        return {}  # a teacher batch is a standard batch; the student's run reports the cost


class DistillationTrainer(TrainingLoop):
    name = "distillation"
    defense_params = TrainingLoop.defense_params + ("temperature", "teacher_epochs")

    def __init__(self, classifier, *, temperature: float = 100.0, teacher_epochs: int | None = None,
                 **loop_params):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a positive number (the paper uses 100); got {temperature!r}")
        if teacher_epochs is not None and (isinstance(teacher_epochs, bool) or not isinstance(teacher_epochs, int)
                                           or teacher_epochs < 1):
            raise ValueError(f"teacher_epochs must be an integer >= 1 or None (the nb_epochs of fit); "
                             f"got {teacher_epochs!r}")
        self.temperature = float(temperature)
        self.teacher_epochs = teacher_epochs
        super().__init__(classifier, **loop_params)
        self.teacher = None  # the trained teacher (an ART classifier), after fit
        self.teacher_seconds: float | None = None

    # ---- the student -----------------------------------------------------------------------------
    def training_step(self, model, x, y):
        teacher = self.teacher.model
        with torch.no_grad():
            soft = F.softmax(teacher(x) / self.temperature, dim=1)  # (B C)
        logits = model(x)  # (B C)
        loss = -(soft * F.log_softmax(logits / self.temperature, dim=1)).sum(dim=1).mean()
        return loss, logits

    # ---- teacher, then student ---------------------------------------------------------------------
    def fit(self, x, y, validation_data=None, nb_epochs: int = 10, batch_size: int | None = None, out_dir=None,
            checkpoint_extra: dict | None = None, resume: bool = False, **kwargs):
        """Train the teacher (or, with ``resume=True``, load it from ``out_dir``), then the student
        (the classifier's model) on the shared loop. Arguments and return value as
        ``TrainingLoop.fit``; ``validation_data`` and the checkpoints concern the student only."""
        from ..checkpoint import read_meta, save
        from ..errors import SSMDefenseError

        if kwargs:
            raise SSMDefenseError(f"unknown fit() argument(s): {', '.join(sorted(kwargs))}")
        if not isinstance(nb_epochs, int) or isinstance(nb_epochs, bool) or nb_epochs < 1:
            raise SSMDefenseError(f"nb_epochs must be an integer >= 1; got {nb_epochs!r}")
        teacher_epochs = self.teacher_epochs or nb_epochs
        out = Path(out_dir) if out_dir is not None else None
        # The teacher starts from the classifier's initial weights, before any training.
        teacher_clf = copy.deepcopy(self._classifier)
        teacher_meta = {"role": "teacher", "defense": self.name, "temperature": self.temperature,
                        "epochs": teacher_epochs, "seed": self.seed}
        if resume and (out is None or not (out / "state.json").is_file()):
            return super().fit(x, y, validation_data=validation_data, nb_epochs=nb_epochs, batch_size=batch_size,
                               out_dir=out_dir, checkpoint_extra=checkpoint_extra, resume=True)  # the loop's error
        if resume:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                meta = read_meta(out / "teacher")["extra"]
                weights = load_file(str(out / "teacher.safetensors"))
            except (CheckpointError, SafetensorError, OSError) as exc:
                raise CheckpointError(f"{out} has no usable teacher checkpoint to resume from: {exc}") from None
            for key in ("temperature", "epochs", "seed"):
                if meta.get(key) != teacher_meta[key]:
                    raise CheckpointError(f"{out}'s teacher was trained with {key}={meta.get(key)!r}, "
                                          f"not {teacher_meta[key]!r}")
            teacher_clf.body.load_state_dict(weights)
            self.teacher_seconds = meta["seconds"]
        else:
            if self.verbose:
                from tqdm.auto import tqdm

                tqdm.write(f"distillation: training the teacher at T={self.temperature:g} for {teacher_epochs} epochs")
            loop = _TeacherLoop(teacher_clf, temperature=self.temperature, eps=self.eps,
                                batch_size=batch_size or self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                                eval_max_iter=self.eval_max_iter, seed=self.seed, verbose=self.verbose)
            start = time.perf_counter()
            loop.fit(x, y, nb_epochs=teacher_epochs)  # no validation, no out_dir: not the run's model
            self.teacher_seconds = time.perf_counter() - start
            if out is not None:
                save(teacher_clf, out / "teacher", extra={**teacher_meta, "seconds": self.teacher_seconds,
                                                          "metrics": loop.history[-1]})
            if self.verbose:
                tqdm.write("distillation: training the student on the teacher's soft labels")
        teacher_clf.model.eval()
        self.teacher = teacher_clf
        history = super().fit(x, y, validation_data=validation_data, nb_epochs=nb_epochs, batch_size=batch_size,
                              out_dir=out_dir, checkpoint_extra=checkpoint_extra, resume=resume)
        student = self.timing.get("overhead_ratio")
        self.timing = {**self.timing, "teacher_seconds": self.teacher_seconds, "teacher_epochs": teacher_epochs,
                       "student_overhead_ratio": student,
                       "overhead_ratio": None if student is None else student + teacher_epochs / nb_epochs}
        return history

    def describe(self) -> dict:
        return {**super().describe(), "temperature": self.temperature, "teacher_epochs": self.teacher_epochs}
