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

Arguments (plus the loop's: eps, batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed,
verbose):
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
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..checkpoint import read_meta, save
from ..distributed import current
from ..errors import CheckpointError
from ..validation import integer, positive
from .loop import TrainingLoop


class _TeacherLoop(TrainingLoop):
    """The teacher's training: cross-entropy of the hard labels on ``logits / T``."""

    name = "distillation-teacher"

    def __init__(self, classifier, *, temperature: float, **loop_params):
        self.temperature = temperature
        super().__init__(classifier, **loop_params)

    def training_step(self, model, x, y):
        logits = model(x)  # (B C)
        return F.cross_entropy(logits / self.temperature, y), logits

    def measure_overhead(self, x, y, batch_size, batches: int = 3) -> dict:
        return {}  # a teacher batch is a standard batch; the student's run reports the cost


class DistillationTrainer(TrainingLoop):
    name = "distillation"
    defense_params = TrainingLoop.defense_params + ("temperature", "teacher_epochs")
    batch_by_batch = False  # the teacher trains first: not a base for ads or augment

    def __init__(self, classifier, *, temperature: float = 100.0, teacher_epochs: int | None = None, **loop_params):
        self.temperature, self.teacher_epochs = temperature, teacher_epochs
        super().__init__(classifier, **loop_params)  # stores the loop's parameters, checks them all
        self.temperature = float(self.temperature)
        self.teacher = None  # the trained teacher (an ART classifier), after fit
        self.teacher_seconds: float | None = None

    def _check_params(self) -> None:
        super()._check_params()
        positive("temperature", self.temperature, hint="the paper uses 100")
        integer("teacher_epochs", self.teacher_epochs, 1, optional=True, hint="the nb_epochs of fit")

    # ---- the teacher, before the loop trains the student ------------------------------------------
    def on_fit_start(
        self, x: np.ndarray, y: np.ndarray, *, nb_epochs: int, batch_size: int, out: Path | None, resume: bool
    ) -> None:
        """Train the teacher, from the classifier's weights as they are before any training (or, with
        ``resume=True``, load it from ``out``), and keep it as ``self.teacher``."""
        if resume and not (out / "state.json").is_file():
            return  # nothing to resume: the loop says so next
        teacher_epochs = self.teacher_epochs or nb_epochs
        teacher_clf = copy.deepcopy(self._classifier)
        teacher_meta = {
            "role": "teacher",
            "defense": self.name,
            "temperature": self.temperature,
            "epochs": teacher_epochs,
            "seed": self.seed,
        }
        if resume:
            self.teacher_seconds = self._load_teacher(teacher_clf, out, teacher_meta)
        else:
            if self.verbose:
                tqdm.write(f"distillation: training the teacher at T={self.temperature:g} for {teacher_epochs} epochs")
            loop = _TeacherLoop(
                teacher_clf,
                temperature=self.temperature,
                eps=self.eps,
                batch_size=batch_size,
                lr=self.lr,
                weight_decay=self.weight_decay,
                ssm_weight_decay=self.ssm_weight_decay,
                eval_max_iter=self.eval_max_iter,
                seed=self.seed,
                precision=self.precision,
                verbose=self.verbose,
            )
            start = time.perf_counter()
            loop.fit(x, y, nb_epochs=teacher_epochs)  # no validation, no out_dir: not the run's model
            self.teacher_seconds = time.perf_counter() - start
            if out is not None and current().main:  # under torchrun, rank 0 writes
                save(
                    teacher_clf,
                    out / "teacher",
                    extra={**teacher_meta, "seconds": self.teacher_seconds, "metrics": loop.history[-1]},
                )
            if self.verbose:
                tqdm.write("distillation: training the student on the teacher's soft labels")
        teacher_clf.model.eval()
        self.teacher = teacher_clf

    @staticmethod
    def _load_teacher(teacher_clf, out: Path, expected: dict) -> float:
        """Load ``out/teacher.*`` into ``teacher_clf`` after checking it was trained as ``expected``;
        returns its training's wall time."""
        try:
            meta = read_meta(out / "teacher")["extra"]
            weights = load_file(str(out / "teacher.safetensors"))
        except (CheckpointError, SafetensorError, OSError) as exc:
            raise CheckpointError(f"{out} has no usable teacher checkpoint to resume from: {exc}") from None
        for key in ("temperature", "epochs", "seed"):
            if meta.get(key) != expected[key]:
                raise CheckpointError(
                    f"{out}'s teacher was trained with {key}={meta.get(key)!r}, not {expected[key]!r}"
                )
        teacher_clf.body.load_state_dict(weights)
        return meta["seconds"]

    # ---- the student -----------------------------------------------------------------------------
    def training_step(self, model, x, y):
        teacher = self.teacher.model
        with torch.no_grad():
            soft = F.softmax(teacher(x) / self.temperature, dim=1)  # (B C)
        logits = model(x)  # (B C)
        loss = -(soft * F.log_softmax(logits / self.temperature, dim=1)).sum(dim=1).mean()
        return loss, logits

    def extra_timing(self, timing: dict, nb_epochs: int) -> dict:
        """The teacher's training, counted: a teacher batch costs one standard batch."""
        teacher_epochs = self.teacher_epochs or nb_epochs
        student = timing.get("overhead_ratio")
        return {
            "teacher_seconds": self.teacher_seconds,
            "teacher_epochs": teacher_epochs,
            "student_overhead_ratio": student,
            "overhead_ratio": None if student is None else student + teacher_epochs / nb_epochs,
        }
