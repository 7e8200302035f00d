"""Tensor-in, tensor-out PGD used *inside* training steps.

Written by hand because ART's PGD works on numpy arrays through the estimator (a host copy and a
model-mode switch per call) and only maximises cross-entropy; a training step needs a batched
torch attack that stays on the device and takes any loss (TRADES maximises a KL divergence).
Evaluation always uses ART's own PGD (the ``pgd`` attack plugin).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..modes import eval_mode, weights_frozen


def pgd_linf(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    eps_step: float,
    steps: int,
    clip: tuple[float, float],
    random_start: bool = True,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    x_init: torch.Tensor | None = None,
) -> torch.Tensor:
    """L-inf PGD maximising ``loss_fn(model(x_adv), y)`` (default cross-entropy); ``y`` is passed
    to ``loss_fn`` as it is (labels, or clean probabilities for TRADES' KL).

    Starts at ``x_init`` when given (TRADES: x + 0.001 N(0, 1)), else at a uniform random point of
    the ball (``random_start``) or at x. Runs with the model in eval mode and its weights frozen
    (input gradients only: the convolutional SSMs then compute their kernel once per attack instead of
    once per step, ``ConvolutionalSSM.kept_operator``), and gives both back as they were. Returns a
    detached ``x_adv`` with ``|x_adv - x|_inf <= eps`` and ``clip[0] <= x_adv <= clip[1]``.
    """
    loss_fn = loss_fn or F.cross_entropy
    with eval_mode(model), weights_frozen(model):
        x = x.detach()
        lo, hi = clip
        if x_init is not None:
            x_adv = x_init.detach().clamp(lo, hi)  # (B ...)
        elif random_start:
            x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(lo, hi)  # (B ...)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = loss_fn(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)  # (B ...); no parameter gradients accumulate
            x_adv = x_adv.detach() + eps_step * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(lo, hi)  # project
    return x_adv.detach()
