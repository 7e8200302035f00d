"""``crown-ibp``: certified training by CROWN-IBP (Zhang et al., 2020, https://arxiv.org/abs/1906.06316),
for the models ``certify --method crown`` bounds (S4, S4D, DSS with or without AdS, the MLP; images
read as rows).

The worst-case margins are a mix of two lower bounds in the L-inf ball: CROWN-IBP's (a backward
linear pass from the margins to the input, each relaxation built from the interval bounds of a
forward pass; ``crown.margin_bounds(..., ibp_nodes=True)``) and plain IBP's:
``m = beta * m_crown_ibp + (1 - beta) * m_ibp``, and the loss is
``kappa * CE(clean) + (1 - kappa) * CE(-m)``. The schedule is the ``ibp`` defense's (``warmup`` with
eps 0 and kappa 1, then over ``ramp`` eps rises to ``eps`` and kappa falls to ``kappa``); over the same
ramp beta falls from 1 to ``beta``, the paper's β_start = 1, β_end = 0 by default. The backward pass
keeps what the linear layers share (the encoder, the LTI convolution and the output projection
compose exactly), where interval bounds widen at each one; it costs about as much as a forward pass
per class. The final evaluation reports verified accuracy by interval bounds, like ``ibp``'s.

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget of the bounds at the end of the ramp, and of the PGD-10 evaluation.
    kappa (float): the clean loss's final weight, in [0, 1]. Default: 0 (the paper's).
    beta (float): CROWN-IBP's final weight in the margins, in [0, 1]. Default: 0 (the paper's).
    warmup (float): fraction of the steps trained with eps 0. Default: 0.1.
    ramp (float): fraction of the steps over which eps, kappa and beta move. Default: 0.5.

Examples::

    trainer = sd.get_defense("crown-ibp", clf, eps=0.1)
    trainer.fit(x_train, y_train, validation_data=(x_val, y_val), nb_epochs=30)
"""

import torch
import torch.nn.functional as F

from ..certification import crown
from ..certification.ibp import margin_lower_bounds
from ..validation import number
from .ibp import IBPTrainer


class CrownIBPTrainer(IBPTrainer):
    name = "crown-ibp"
    defense_params = IBPTrainer.defense_params + ("beta",)

    def __init__(self, classifier, *, kappa: float = 0.0, beta: float = 0.0, **params):
        self.beta = beta
        super().__init__(classifier, kappa=kappa, **params)
        crown.margin_bounds(  # a model CROWN cannot go through fails here, before any training
            classifier.model,
            *(torch.zeros((1, *classifier.input_shape), device=classifier.device),) * 2,
            torch.zeros(1, dtype=torch.long, device=classifier.device),
            ibp_nodes=True,
        )

    def _check_params(self) -> None:
        super()._check_params()
        number("beta", self.beta, 0, 1)

    def training_step(self, model, x, y):
        eps, kappa = self.schedule(self.progress)
        logits = model(x)  # (B C)
        loss = F.cross_entropy(logits, y)
        if eps > 0:
            beta = 1.0 - self.ramped(self.progress) * (1.0 - self.beta)
            lo_clip, hi_clip = self.clip
            lower, upper = (x - eps).clamp(min=lo_clip), (x + eps).clamp(max=hi_clip)
            margins = (1 - beta) * margin_lower_bounds(model, lower, upper, y, train=True)  # (B C) 0 at y
            if beta > 0:
                both = crown.margin_bounds(model, lower, upper, y, ibp_nodes=True, train=True)  # (B C) +inf at y
                margins = margins + beta * both.masked_fill(F.one_hot(y, both.shape[1]).bool(), 0.0).float()
            loss = kappa * loss + (1 - kappa) * F.cross_entropy(-margins, y)
        return loss, logits
