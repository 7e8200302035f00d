"""Switching a model to eval mode, or freezing its weights, for a while, in one place: attacks run
inside training steps, and analyses run on models that may be training; either must give the model
back as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run a block with ``model`` in eval mode (dropout off), then restore its train/eval mode, also
    when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def weights_frozen(model: torch.nn.Module) -> Iterator[None]:
    """``model``'s trainable parameters set to ``requires_grad=False`` for the block, then restored:
    a backward pass inside computes input gradients only. The weights' ``.grad`` are put back as they
    were too (ART's ``loss_gradient`` calls ``zero_grad``, which would drop a training step's)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad for p in trainable]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, grad in zip(trainable, grads):
            p.requires_grad_(True)
            p.grad = grad
