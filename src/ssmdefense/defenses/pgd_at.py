"""``pgd-at``: PGD adversarial training (Madry et al., 2018, https://arxiv.org/abs/1706.06083).

Each batch is replaced by its L-inf PGD adversarial examples (random start, ``max_iter`` steps of
size ``eps_step``), and the model minimises cross-entropy on them.

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget, for training and the PGD-10 evaluation. Default: 0.1.
    eps_step (float | None): step size; None means 2.5 * eps / max_iter. Default: None.
    max_iter (int): PGD steps per batch. Default: 10.
    random_start (bool): Default: True.

Examples::

    trainer = sd.get_defense("pgd-at", clf, eps=0.1, max_iter=10)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=5)
"""

import torch.nn.functional as F

from ..validation import integer, positive
from .loop import TrainingLoop
from .perturb import pgd_linf


class PGDATTrainer(TrainingLoop):
    name = "pgd-at"
    defense_params = TrainingLoop.defense_params + ("eps_step", "max_iter", "random_start")

    def __init__(
        self,
        classifier,
        *,
        eps: float = 0.1,
        eps_step: float | None = None,
        max_iter: int = 10,
        random_start: bool = True,
        **loop_params,
    ):
        self.eps_step, self.max_iter, self.random_start = eps_step, max_iter, bool(random_start)
        super().__init__(classifier, eps=eps, **loop_params)  # stores the loop's parameters, checks them all
        if self.eps_step is None:
            self.eps_step = 2.5 * self.eps / self.max_iter

    def _check_params(self) -> None:
        super()._check_params()
        integer("max_iter", self.max_iter, 1)
        positive("eps_step", self.eps_step, optional=True)

    def training_step(self, model, x, y):
        x_adv = pgd_linf(
            model,
            x,
            y,
            eps=self.eps,
            eps_step=self.eps_step,
            steps=self.max_iter,
            clip=self.clip,
            random_start=self.random_start,
        )  # (B ...)
        logits = model(x_adv)  # (B C)
        return F.cross_entropy(logits, y), logits
