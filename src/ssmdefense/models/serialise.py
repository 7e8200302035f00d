"""Input serialisers: natural-shape data -> (B, L, D) sequences, inside the model.

Keeping serialisation inside the module lets ART and Foolbox attacks work on natural shapes
(images N, C, H, W), so image-only attacks (rotations, SquareAttack) apply unchanged.
"""

import torch
from torch import nn

SEQUENCE_MODES = ("pixels", "rows")


def sequence_dims(input_shape, mode: str) -> tuple[int, int]:
    """(L, D) of the sequence that ``mode`` makes from one input of ``input_shape`` (C, H, W)."""
    if mode not in SEQUENCE_MODES:
        raise ValueError(f"sequence must be one of {', '.join(SEQUENCE_MODES)}; got {mode!r}")
    if len(input_shape) != 3:
        raise ValueError(f"sequence={mode!r} needs image input_shape (C, H, W); got {tuple(input_shape)}")
    C, H, W = input_shape
    return (H * W, C) if mode == "pixels" else (H, W * C)


class ImageToSequence(nn.Module):
    """(N, C, H, W) -> (N, L, D). "pixels": L = H*W in row-major raster order, D = C.
    "rows": L = H, D = W*C (each row's pixels, channels interleaved)."""

    def __init__(self, input_shape, mode: str = "pixels"):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.mode = mode
        self.L, self.D = sequence_dims(self.input_shape, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N C H W)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input (N, {', '.join(map(str, self.input_shape))}); got {tuple(x.shape)}")
        x = x.permute(0, 2, 3, 1)  # (N H W C)
        return x.reshape(x.shape[0], self.L, self.D)  # (N L D)


class NaturalShapeModel(nn.Module):
    """A sequence body behind a serialiser: natural-shape input -> logits."""

    def __init__(self, serialiser: nn.Module, body: nn.Module):
        super().__init__()
        self.serialiser = serialiser
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: natural shape (N ...)
        return self.body(self.serialiser(x))  # (N n_classes)
