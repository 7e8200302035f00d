"""``trades``: TRADES (Zhang et al., ICML 2019, https://arxiv.org/abs/1901.08573).

TRADES trades clean accuracy against robustness by adding to the clean cross-entropy a
boundary term: the KL divergence between the model's predictions on ``x`` and on the worst
``x'`` in the L-inf ball around ``x``.

Inner maximisation (model in eval mode, clean probabilities ``p = softmax(f(x))`` computed once,
without gradient)::

    x'_0     = clip(x + 0.001 * N(0, I))                       (the paper's code: at x' = x the
                                                                 KL and its gradient are 0)
    x'_{k+1} = clip(Proj_{|x'-x|_inf <= eps}(x'_k + eps_step * sign(grad_x' KL(p || softmax(f(x'_k))))))

for ``max_iter`` steps. Unlike ART's ``AdversarialTrainerTRADESPyTorch``, which crafts ``x'`` with
cross-entropy PGD, the attack here maximises the KL term itself, as in the paper and its code.

Outer minimisation (model in train mode; gradients flow through both ``f(x)`` and ``f(x')``)::

    loss = CE(f(x), y) + beta * KL(softmax(f(x)) || softmax(f(x')))      (KL averaged over the batch)

The training accuracy the loop reports is that of the clean batch.

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget, for training and the PGD-10 evaluation. Default: 0.1.
    beta (float): weight of the KL term, >= 0 (0 is standard training). Default: 1.0, the AdS
        paper's MNIST value (it uses 6 on CIFAR-10, as TRADES does).
    max_iter (int): steps of the inner maximisation. Default: 10.
    eps_step (float | None): step size; None means 2.5 * eps / max_iter, the same rule as
        ``pgd-at`` (enough steps to cross the ball and come back; the AdS paper's MNIST setting,
        0.04 for eps 0.3 in 10 steps, is 1.33 * eps / max_iter, and TRADES' own CIFAR setting is
        0.007 for eps 0.031 in 10 steps, 2.26 * eps / max_iter). Default: None.

Examples::

    trainer = sd.get_defense("trades", clf, eps=0.1, beta=6.0)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=5)

    ssmdefense defend --defense trades -p beta=6 --eps 0.1
"""

import torch
import torch.nn.functional as F

from ..modes import eval_mode
from ..validation import integer, non_negative, positive
from .loop import TrainingLoop
from .perturb import pgd_linf

#: scale of the Gaussian start of the inner maximisation (TRADES' code)
START_SCALE = 1e-3


def kl_per_sample(p_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || softmax(logits_adv)) per sample, (B,), from clean probabilities (B, C) and
    adversarial logits (B, C)."""
    log_q = F.log_softmax(logits_adv, dim=1)  # (B C)
    return F.kl_div(log_q, p_clean, reduction="none").sum(dim=1)  # (B)


class TRADESTrainer(TrainingLoop):
    name = "trades"
    defense_params = TrainingLoop.defense_params + ("beta", "max_iter", "eps_step")

    def __init__(
        self,
        classifier,
        *,
        eps: float = 0.1,
        beta: float = 1.0,
        max_iter: int = 10,
        eps_step: float | None = None,
        **loop_params,
    ):
        self.beta, self.max_iter, self.eps_step = beta, max_iter, eps_step
        super().__init__(classifier, eps=eps, **loop_params)  # stores the loop's parameters, checks them all
        self.beta = float(self.beta)
        if self.eps_step is None:
            self.eps_step = 2.5 * self.eps / self.max_iter

    def _check_params(self) -> None:
        super()._check_params()
        non_negative("beta", self.beta)
        integer("max_iter", self.max_iter, 1)
        positive("eps_step", self.eps_step, optional=True)

    def perturb(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The inner maximisation: ``x'`` in the eps-ball around ``x`` (and in the clip range) that
        maximises KL(softmax(f(x)) || softmax(f(x'))), from the small Gaussian start. Runs in eval
        mode and restores the model's mode; returns a detached (B, ...) tensor."""
        x = x.detach()
        with eval_mode(model), torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)  # (B C)
        start = x + START_SCALE * torch.randn_like(x)  # (B ...): at x itself the KL gradient is exactly 0
        return pgd_linf(
            model,
            x,
            p_clean,
            eps=self.eps,
            eps_step=self.eps_step,
            steps=self.max_iter,
            clip=self.clip,
            x_init=start,
            loss_fn=lambda logits, p: kl_per_sample(p, logits).sum(),
        )

    def training_step(self, model, x, y):
        if self.beta == 0:  # standard training: skip the attack
            logits = model(x)  # (B C)
            return F.cross_entropy(logits, y), logits
        x_adv = self.perturb(model, x)  # (B ...)
        logits = model(x)  # (B C); two passes, as in the paper's code (batch statistics stay per input)
        logits_adv = model(x_adv)  # (B C)
        natural = F.cross_entropy(logits, y)
        robust = kl_per_sample(F.softmax(logits, dim=1), logits_adv).mean()  # batchmean
        return natural + self.beta * robust, logits
