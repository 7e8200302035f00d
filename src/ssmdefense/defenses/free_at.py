"""``free-at``: adversarial training for free (Shafahi et al., NeurIPS 2019,
https://arxiv.org/abs/1904.12843), "FreeAT-m".

Every minibatch is replayed ``m = replays`` times in a row. Each replay takes ONE forward/backward
pass at the perturbed batch, and that one pass gives both gradients::

    x_adv  = clip(x + delta[:B], lo, hi)
    loss   = CE(f(x_adv), y)
    theta <- optimizer step with grad_theta loss                (one optimizer + schedule step)
    delta <- clip(delta + eps_step * sign(grad_delta loss), -eps, eps)

``delta`` is ONE perturbation of batch shape (B, ...) that persists from replay to replay and from
minibatch to minibatch, as in the paper's code (``global_noise_data``, zeros at the start): a
minibatch starts from the perturbation the previous one ended with. A smaller last batch uses and
updates the first rows ``delta[:B]``. ``delta`` is saved with the resume state (``extra_state``),
so ``fit(..., resume=True)`` continues exactly; a new ``fit`` starts again from zero. The model
stays in train mode throughout (the paper's code).

The budget: ``fit(nb_epochs)`` runs ``ceil(nb_epochs / m)`` epochs of ``m`` optimizer steps per
batch, so FreeAT-m takes about as many optimizer steps (and forward/backward passes) as
``nb_epochs`` epochs of standard training (the paper's "N/m epochs"). The per-step cosine schedule
spans all of them. The loss and training accuracy the loop reports are those of the last replay.

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget, for training and the PGD-10 evaluation. Default: 0.1.
    replays (int): m, replays of each minibatch (and the epoch divisor). Default: 4, the AdS
        paper's FreeAT setting.
    eps_step (float | None): step of the perturbation update; None means eps, as in the paper
        (its code's ``fgsm_step`` equals ``clip_eps``). Default: None.

Examples::

    trainer = sd.get_defense("free-at", clf, eps=0.1, replays=4)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=8)  # 2 epochs x 4 replays

    ssmdefense defend --defense free-at -p replays=4 --epochs 8
"""

import torch
import torch.nn.functional as F

from ..validation import integer, positive
from .loop import TrainingLoop


class FreeATTrainer(TrainingLoop):
    name = "free-at"
    defense_params = TrainingLoop.defense_params + ("replays", "eps_step")

    def __init__(self, classifier, *, eps: float = 0.1, replays: int = 4, eps_step: float | None = None, **loop_params):
        self.replays, self.eps_step = replays, eps_step
        super().__init__(classifier, eps=eps, **loop_params)  # stores the loop's parameters, checks them all
        if self.eps_step is None:
            self.eps_step = self.eps
        # m optimizer steps per batch, and nb_epochs / m epochs: the budget of nb_epochs standard epochs
        self.steps_per_batch = replays
        self.epoch_divisor = replays
        self.delta: torch.Tensor | None = None  # (B ...) the persistent perturbation

    def _check_params(self) -> None:
        super()._check_params()
        integer("replays", self.replays, 1)
        positive("eps_step", self.eps_step, optional=True)

    def _delta_for(self, x: torch.Tensor) -> torch.Tensor:
        """The persistent perturbation, (re)made to cover batch ``x``: zeros at first (the paper),
        zero rows appended if a batch is larger than any before, remade for another input shape."""
        delta = self.delta
        if delta is None or delta.shape[1:] != x.shape[1:] or delta.device != x.device or delta.dtype != x.dtype:
            delta = torch.zeros_like(x)  # (B ...)
        elif len(delta) < len(x):
            delta = torch.cat([delta, torch.zeros_like(x[len(delta) :])])  # (B ...)
        self.delta = delta
        return delta

    def train_batch(self, model, optimizer, scheduler, x, y):
        lo, hi = self.clip
        delta = self._delta_for(x)
        B = len(x)
        model.train()
        for _ in range(self.replays):
            noise = delta[:B].clone().requires_grad_(True)  # (B ...)
            logits = model((x + noise).clamp(lo, hi))  # (B C)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # the one backward pass: weight gradients and noise.grad together
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                delta[:B] = (noise + self.eps_step * noise.grad.sign()).clamp(-self.eps, self.eps)
        return loss.detach(), logits.detach()

    def on_fit_start(self, x, y, **settings) -> None:
        self.delta = None  # a new fit starts from a zero perturbation, like the first one

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {} if self.delta is None else {"delta": self.delta}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        delta = tensors.get("delta")
        self.delta = None if delta is None else delta.clone()
