"""Switching a model to eval mode for a while, in one place: attacks run inside training steps, and
analyses run on models that may be training; either must give the model back in the mode it had."""

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
