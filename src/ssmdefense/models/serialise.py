"""Input serialisers ("sequence modes"): natural-shape data -> (B, L, D) sequences, inside the model.

Keeping serialisation inside the module lets ART and Foolbox attacks work on natural shapes
(images N, C, H, W; waveforms N, 1, T), so image-only attacks (rotations, SquareAttack) apply
unchanged to images and every attack on audio perturbs the waveform, not a derived feature.

The contract of a sequence mode (built-in ones are rows of ``ssmdefense.builtins``; a plugin adds
its own through the ``register_sequences`` hook, see docs/plugins.md):

``factory(input_shape, **params) -> nn.Module`` where ``input_shape`` is the natural shape of one
input (without the batch axis) and ``params`` are the mode's keyword settings. It raises
``ValueError`` with a clear message when the shape or a setting does not suit it. The module has

- ``L``, ``D`` (int): steps and features per step of the sequences it makes;
- ``params`` (dict of JSON values): every setting needed to rebuild it, defaults resolved, recorded
  in checkpoints so ``sd.load`` rebuilds the same front end;
- ``forward(x)``: ``(N, *input_shape) -> (N, L, D)``, differentiable;

and, only when the classifier's input is not the natural input (an attack on derived features,
e.g. ``mel`` with ``attack_space="features"``):

- ``input_shape`` (tuple): the shape the classifier takes instead of the natural one;
- ``clip_values`` (lo, hi): the valid range of that input;
- ``prepare(x)``: natural ``(N, *natural_shape)`` tensor -> ``(N, *input_shape)``, applied to the
  data before it reaches the classifier (``SSMClassifier.prepare_inputs``).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGE_MODES = ("pixels", "rows")


def check_image_shape(input_shape, mode: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"sequence={mode!r} needs image input_shape (C, H, W); got {tuple(input_shape)}")
    return tuple(int(s) for s in input_shape)


class ImageToSequence(nn.Module):
    """(N, C, H, W) -> (N, L, D). "pixels": L = H*W in row-major raster order, D = C.
    "rows": L = H, D = W*C (each row's pixels, channels interleaved)."""

    def __init__(self, input_shape, mode: str = "pixels"):
        super().__init__()
        if mode not in IMAGE_MODES:
            raise ValueError(f"image sequence mode must be one of {', '.join(IMAGE_MODES)}; got {mode!r}")
        self.natural_shape = check_image_shape(input_shape, mode)
        self.mode = mode
        C, H, W = self.natural_shape
        self.L, self.D = (H * W, C) if mode == "pixels" else (H, W * C)
        self.params: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N C H W)
        if tuple(x.shape[1:]) != self.natural_shape:
            raise ValueError(f"expected input (N, {', '.join(map(str, self.natural_shape))}); got {tuple(x.shape)}")
        x = x.permute(0, 2, 3, 1)  # (N H W C)
        return x.reshape(x.shape[0], self.L, self.D)  # (N L D)


def pixels(input_shape) -> ImageToSequence:
    """Images as pixel sequences: L = H*W steps of C values (raster order)."""
    return ImageToSequence(input_shape, "pixels")


def rows(input_shape) -> ImageToSequence:
    """Images as row sequences: L = H steps of W*C values."""
    return ImageToSequence(input_shape, "rows")


class NaturalShapeModel(nn.Module):
    """A sequence body behind a serialiser: natural-shape input -> logits."""

    def __init__(self, serialiser: nn.Module, body: nn.Module):
        super().__init__()
        self.serialiser = serialiser
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: natural shape (N ...)
        return self.body(self.serialiser(x))  # (N n_classes)
