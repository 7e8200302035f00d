"""``yopo``: You Only Propagate Once (Zhang et al., NeurIPS 2019, https://arxiv.org/abs/1905.00877),
YOPO-m-n.

YOPO splits the network at its first layer, ``f = g o f0``, and uses Pontryagin's maximum
principle: the adversary only needs the adjoint ``p = dL/dz`` at the first layer's output
``z = f0(x + eta)``, so one full forward/backward pass buys ``n`` cheap perturbation updates that
re-run only ``f0``. Here ``f0(x) = body.encoder(serialiser(x))``: the model's serialiser (image ->
(B, L, D) sequence) followed by the body's first Linear(D, H). For one batch::

    eta ~ U(-eps, eps), projected so that lo <= x + eta <= hi
    for j = 1..m:                                                   (outer: full propagation)
        loss_j = CE(f(x + eta), y) / m          backward: weight gradients ACCUMULATE over j
        p      = d loss_j / d z,   z = f0(x + eta)                  (captured by hooks on the encoder)
        for s = 1..n:                                               (inner: first layer only, p fixed)
            eta <- Proj(eta + eps_step * sign(grad_eta <p, f0(x + eta)>))
    one optimizer step with the accumulated gradient  (1/m) sum_j grad_theta CE(f(x + eta_j), y)

(the inner steps after the m-th pass are skipped: nothing would use that eta). So the model trains
on the random start and on the perturbations after n, 2n, ..., (m - 1) n first-layer updates.

``Proj`` clips ``eta`` to ``[-eps, eps]`` and ``x + eta`` to the clip range. At the point where
``p`` was taken, ``grad_eta <p, f0(x + eta)> = grad_eta loss`` exactly (the chain rule); the inner
steps keep that ``p`` and move ``eta`` through the first layer alone, without propagating through
the whole SSM again. The model stays in train mode (the paper's code); the inner loop runs only
the Linear encoder, which has no dropout.

Differences from the paper's code, kept simple on purpose: the loss is averaged over the m outer
passes (the code sums and divides the learning rate by m instead); the first layer's weights get
their gradient from the m full backward passes, like every other layer (the code additionally
trains layer one on the Hamiltonian with its own optimizer). ``fit(nb_epochs)`` runs ``nb_epochs``
epochs (``epoch_divisor`` 1); each batch costs m full forward/backward passes plus (m - 1) * n
forward/backward passes of the encoder. The paper's runs also use short schedules (36 epochs for
its YOPO-5-3 CIFAR-10 configuration); pass fewer epochs for that. The loss the loop reports is the
mean over the m outer passes; the training accuracy is that of the last outer pass.

Needs a model whose body has a first Linear layer ``encoder`` applied to the serialised input
(every SSM built on ssmdefense's ``SequenceClassifier``: s4, s4d, dss, s5, mega, mamba); LSTM, GRU
and MLP bodies are rejected with a clear error.

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget, for training and the PGD-10 evaluation. Default: 0.1.
    m (int): outer iterations (full forward/backward passes) per batch. Default: 5.
    n (int): inner first-layer updates per outer iteration. Default: 3 (YOPO-5-3, the AdS paper).
    eps_step (float | None): step of an inner update; None means eps / 4, the ratio of the YOPO-5-3
        CIFAR-10 configuration (sigma 2/255 for eps 8/255): the (m - 1) * n = 12 steps of
        YOPO-5-3 can cross the ball 1.5 times. Default: None.

Examples::

    trainer = sd.get_defense("yopo", clf, eps=0.1, m=5, n=3)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=5)

    ssmdefense defend --defense yopo -p m=5 -p n=3
"""

import torch
import torch.nn.functional as F

from ..distributed import unwrap
from ..errors import SSMDefenseError
from ..validation import integer, positive
from .loop import TrainingLoop


def first_layer(model: torch.nn.Module):
    """``(serialiser, encoder)`` of a natural-shape ssmdefense model, whose first layer is
    ``f0(x) = encoder(serialiser(x))`` (inside a DDP wrapper too); an ``SSMDefenseError`` for any other model."""
    model = unwrap(model)
    serialiser = getattr(model, "serialiser", None)
    body = getattr(model, "body", None)
    encoder = getattr(body, "encoder", None)
    if serialiser is None or not isinstance(encoder, torch.nn.Linear):
        kind = type(body).__name__ if body is not None else type(model).__name__
        raise SSMDefenseError(
            f"yopo needs a model whose first layer is a Linear 'encoder' on the serialised input "
            f"(the SSMs built on SequenceClassifier: s4, s4d, dss, s5, mega, mamba); {kind} has none"
        )
    return serialiser, encoder


class YOPOTrainer(TrainingLoop):
    name = "yopo"
    defense_params = TrainingLoop.defense_params + ("m", "n", "eps_step")

    def __init__(
        self, classifier, *, eps: float = 0.1, m: int = 5, n: int = 3, eps_step: float | None = None, **loop_params
    ):
        self.m, self.n, self.eps_step = m, n, eps_step
        super().__init__(classifier, eps=eps, **loop_params)  # stores the loop's parameters, checks them all
        if self.eps_step is None:
            self.eps_step = self.eps / 4

    def _check_params(self) -> None:
        super()._check_params()
        for key in ("m", "n"):
            integer(key, getattr(self, key), 1)
        positive("eps_step", self.eps_step, optional=True)
        first_layer(self._classifier.model)

    def _project(self, x: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        eta = eta.clamp(-self.eps, self.eps)
        return ((x + eta).clamp(lo, hi) - x).detach()  # (B ...)

    def inner_steps(self, model: torch.nn.Module, x: torch.Tensor, eta: torch.Tensor, p: torch.Tensor):
        """``n`` sign-gradient updates of ``eta`` on ``<p, f0(x + eta)>`` with the adjoint ``p``
        (B, L, H) held fixed; only the first layer runs. Returns the new ``eta`` (detached)."""
        serialiser, encoder = first_layer(model)
        p = p.detach()
        for _ in range(self.n):
            eta = eta.detach().requires_grad_(True)
            hamiltonian = (p * encoder(serialiser(x + eta))).sum()
            (grad,) = torch.autograd.grad(hamiltonian, eta)  # (B ...); no weight gradients
            eta = self._project(x, eta.detach() + self.eps_step * grad.sign())
        return eta

    def train_batch(self, model, optimizer, scheduler, x, y):
        serialiser, encoder = first_layer(model)
        captured = {}

        def keep_output(module, inputs, z):  # z: (B L H), the first layer's output
            captured["input"], captured["z"] = inputs[0], z
            z.register_hook(lambda grad: captured.__setitem__("p", grad))  # p = d loss / d z

        model.train()
        eta = self._project(x, torch.empty_like(x).uniform_(-self.eps, self.eps))  # (B ...)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for j in range(self.m):
            captured.clear()
            x_adv = x + eta
            handle = encoder.register_forward_hook(keep_output)  # only the full pass, not the inner steps
            try:
                logits = model(x_adv)  # (B C)
            finally:
                handle.remove()
            loss = F.cross_entropy(logits, y) / self.m
            loss.backward()  # weight gradients accumulate over the m outer passes; fills captured["p"]
            if "p" not in captured or not torch.equal(captured["input"], serialiser(x_adv)):
                raise SSMDefenseError(
                    "yopo: the body's encoder is not the first layer applied to the "
                    "serialised input, so its adjoint is not the one YOPO needs"
                )
            loss_sum += loss.detach()
            if j < self.m - 1:  # the last pass's inner steps would make an eta nothing uses
                eta = self.inner_steps(model, x, eta, captured["p"])
        optimizer.step()
        scheduler.step()
        return loss_sum, logits.detach()
