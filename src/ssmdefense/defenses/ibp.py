"""``ibp``: certified training by interval bound propagation (Gowal et al., 2018,
https://arxiv.org/abs/1810.12715), for the models ``certify --method ibp`` bounds (S4, S4D, DSS, S5, MLP).

The loss mixes the clean cross-entropy with the cross-entropy of the worst-case logits the interval
bounds allow in the L-inf ball, ``kappa * CE(clean) + (1 - kappa) * CE(worst)``, where worst_j is
minus the lower bound on the margin logit_y − logit_j (0 for the true class). The margins are bounded
through the head's row differences (Gowal et al.'s elision of the last layer), which is tighter than
taking the true logit at its lower bound and the others at their upper bounds. Gowal et al.'s
schedule, on the optimizer's steps:
``warmup`` of them with eps 0 and kappa 1 (standard training), then over the next ``ramp`` eps rises
linearly to ``eps`` and kappa falls linearly to ``kappa``, which both keep to the end. The step
count comes from the learning-rate schedule, so a resumed run continues the same schedule.

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget of the bounds at the end of the ramp, and of the PGD-10 evaluation.
    kappa (float): the clean loss's final weight, in [0, 1]. Default: 0.5.
    warmup (float): fraction of the steps trained with eps 0. Default: 0.1.
    ramp (float): fraction of the steps over which eps and kappa move. Default: 0.5.

Examples::

    trainer = sd.get_defense("ibp", clf, eps=0.1)
    trainer.fit(x_train, y_train, validation_data=(x_val, y_val), nb_epochs=20)
    sd.certify(clf, x_test, y_test, method="ibp", eps=0.1)["certified_accuracy"]
"""

import torch
import torch.nn.functional as F

from ..certification.ibp import logit_bounds, margin_lower_bounds
from ..validation import number
from .loop import TrainingLoop


class IBPTrainer(TrainingLoop):
    name = "ibp"
    defense_params = TrainingLoop.defense_params + ("kappa", "warmup", "ramp")

    def __init__(self, classifier, *, kappa: float = 0.5, warmup: float = 0.1, ramp: float = 0.5, **loop_params):
        self.kappa, self.warmup, self.ramp = kappa, warmup, ramp
        self.progress = 0.0  # the fraction of the optimizer's steps taken, set before each batch
        super().__init__(classifier, **loop_params)  # stores the loop's parameters, checks them all
        logit_bounds(  # a model the bounds cannot go through fails here, before any training
            classifier.model, *(torch.zeros((1, *classifier.input_shape), device=classifier.device),) * 2
        )

    def _check_params(self) -> None:
        super()._check_params()
        for key in ("kappa", "warmup", "ramp"):
            number(key, getattr(self, key), 0, 1)
        if self.warmup + self.ramp > 1:
            raise ValueError(f"warmup + ramp must be at most 1; got {self.warmup} + {self.ramp}")

    def configure_optimizers(self, model, total_steps: int):
        self.total_steps = total_steps
        return super().configure_optimizers(model, total_steps)

    def train_batch(self, model, optimizer, scheduler, x, y):
        self.progress = scheduler.last_epoch / max(1, self.total_steps)  # restored with the schedule on resume
        return super().train_batch(model, optimizer, scheduler, x, y)

    def ramped(self, progress: float) -> float:
        """How far along the ramp ``progress`` (the fraction of the steps taken) is, from 0 to 1."""
        if self.ramp > 0:
            return min(1.0, max(0.0, (progress - self.warmup) / self.ramp))
        return float(progress >= self.warmup)

    def schedule(self, progress: float) -> tuple[float, float]:
        """(eps, kappa) at ``progress``, the fraction of the steps taken."""
        t = self.ramped(progress)
        return t * self.eps, 1.0 - t * (1.0 - self.kappa)

    def training_step(self, model, x, y):
        eps, kappa = self.schedule(self.progress)
        logits = model(x)  # (B C)
        loss = F.cross_entropy(logits, y)
        if eps > 0:
            lo_clip, hi_clip = self.clip
            lower, upper = (x - eps).clamp(min=lo_clip), (x + eps).clamp(max=hi_clip)
            worst = -margin_lower_bounds(model, lower, upper, y, train=True)  # (B C) the worst logits, shifted
            loss = kappa * loss + (1 - kappa) * F.cross_entropy(worst, y)
        return loss, logits
