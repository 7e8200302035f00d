"""``augment``: the master thesis's regularisations as a defense ("Min-max optimization methods in
adversarial learning": random noise, rotation and resize/crop of the training images), alone or
under any adversarial training.

Every training batch x (N, C, H, W) is replaced by a randomly transformed copy before the base
defense sees it. Each transform is drawn independently for each sample and applied with
probability ``p``:

- rotation by an angle uniform in [-rotation, rotation] degrees about the image centre;
- resize + crop: zoom by a factor s uniform in [1, 1 + resize] (the image grows to sH x sW), then
  crop back to H x W at an offset uniform over the positions that stay inside the zoomed image;
- noise: add uniform noise in [-noise, noise] to every pixel.

The two geometric transforms are one affine map per sample, resampled once (bilinear; the pixels
a rotation brings in from outside the image take the clip range's minimum, e.g. black). In the
normalised coordinates of ``affine_grid`` (u, v in [-1, 1]; output point o, rotation R by angle a
measured in pixels, so non-square images rotate rigidly), the input point sampled is::

    x_in = R (o / s + t),   R = [[cos a, -sin a * H/W], [sin a * W/H, cos a]],
    t ~ U[-(1 - 1/s), 1 - 1/s]^2

(a = 0 where the rotation is not drawn, s = 1 and t = 0 where the resize is not). The result is
clipped to ``clip_values``. The random draws come from torch's global generator, which the loop
seeds and saves, so runs repeat and resume exactly.

Then the base defense trains on the transformed batch: ``base="none"`` (the default) is standard
training on augmented data; ``base="pgd-at"``, ``"trades"``, ``"minmax"``, ... attack the
augmented batch and train on that (the thesis combined its regularisations with min-max training).

Non-image input (``len(input_shape) != 3``, e.g. audio waveforms (1, T)): only the noise applies;
rotation and resize must be set to 0 there, or the defense refuses with a clear error.

Arguments:
    noise (float | None): half-width of the uniform noise, in input units; None means 0.1 times
        the width of the clip range (0.1 for inputs in [0, 1]); 0 turns it off. Default: None.
    rotation (float): largest rotation in degrees, 0 to 180; 0 turns it off. Default: 30.
    resize (float): largest relative zoom before cropping (0.2: up to 1.2x), >= 0; 0 turns it
        off. Default: 0.2.
    p (float): probability, per sample and per transform, that the transform is applied, in [0, 1].
        Default: 0.5 (on average half of each batch keeps each transform off, so the model also
        sees the clean data it is tested on).
    base (str): the training: "none", "pgd-at", "trades", "free-at", "yopo", "fbf", "minmax" (any
        defense that trains batch by batch on the shared loop). Default: "none".
    every parameter of the base (e.g. max_iter, eps_step for pgd-at) and of the loop.

Examples::

    trainer = sd.get_defense("augment", clf, rotation=15, resize=0.1, noise=0.05)
    trainer = sd.get_defense("augment", clf, base="pgd-at", max_iter=10)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..hookspecs import hookimpl
from .loop import WithBase


def _number(key: str, value, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        span = f">= {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
        raise ValueError(f"{key} must be a number {span}; got {value!r}")
    return float(value)


def affine_resample(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                    fill: float = 0.0) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) rotated by ``angle`` (N) radians about their centre, zoomed by
    ``scale`` (N) and cropped at ``shift`` (N, 2) (normalised (u, v) offsets of the crop centre),
    resampled bilinearly; pixels from outside the image take ``fill``. Samples the input at
    ``R (o / s + t)`` for each output point o (see the module docstring)."""
    n, _, h, w = x.shape
    cos, sin = angle.cos(), angle.sin()  # (N)
    rot = torch.stack([torch.stack([cos, -sin * (h / w)], 1),
                       torch.stack([sin * (w / h), cos], 1)], 1)  # (N 2 2), rigid in pixel units
    theta = torch.cat([rot / scale[:, None, None], rot @ shift[:, :, None]], 2)  # (N 2 3)
    grid = F.affine_grid(theta.to(x.dtype), [n, *x.shape[1:]], align_corners=False)  # (N H W 2)
    # Resample x - fill so that zero padding brings in fill (the background), not 0.
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def augment_batch(x: torch.Tensor, *, noise: float, rotation: float, resize: float, p: float,
                  clip: tuple[float, float]) -> torch.Tensor:
    """Randomly rotated, resized/cropped and noised copy of ``x`` (see the module docstring).

    ``x``: (N, C, H, W) images, or any (N, ...) batch when rotation = resize = 0 (noise only).
    Transforms that are off (0) draw no random numbers. Returns a new tensor in ``clip``.
    """
    lo, hi = clip
    n, device, dtype = len(x), x.device, x.dtype
    with torch.no_grad():
        if rotation > 0 or resize > 0:
            # Written with affine_grid/grid_sample: torchvision (not a dependency) applies one set
            # of random parameters to a whole batch, and each sample needs its own.
            zeros = torch.zeros(n, device=device, dtype=dtype)
            angle, scale, shift = zeros, zeros + 1, torch.zeros(n, 2, device=device, dtype=dtype)
            moved = torch.zeros(n, device=device, dtype=torch.bool)
            if rotation > 0:
                rotated = torch.rand(n, device=device) < p  # (N)
                angle = torch.deg2rad((torch.rand(n, device=device, dtype=dtype) * 2 - 1) * rotation) * rotated
                moved |= rotated
            if resize > 0:
                zoomed = torch.rand(n, device=device) < p  # (N)
                scale = 1 + torch.rand(n, device=device, dtype=dtype) * resize * zoomed  # (N) in [1, 1+resize]
                shift = (torch.rand(n, 2, device=device, dtype=dtype) * 2 - 1) * (1 - 1 / scale)[:, None]  # (N 2)
                moved |= zoomed
            out = affine_resample(x, angle, scale, shift, fill=lo)
            x = torch.where(moved.view(n, *[1] * (x.dim() - 1)), out, x)
        if noise > 0:
            noised = torch.rand(n, device=device) < p  # (N)
            delta = (torch.rand_like(x) * 2 - 1) * noise  # (N ...)
            x = x + delta * noised.view(n, *[1] * (x.dim() - 1))
        return x.clamp(lo, hi)


class AugmentTrainer(WithBase):
    name = "augment"

    def __init__(self, classifier, *, noise: float | None = None, rotation: float = 30.0, resize: float = 0.2,
                 p: float = 0.5, base: str = "none", **params):
        self.rotation = _number("rotation", rotation, 0.0, 180.0)
        self.resize = _number("resize", resize, 0.0)
        self.p = _number("p", p, 0.0, 1.0)
        if noise is not None:
            _number("noise", noise, 0.0)
        shape = tuple(getattr(classifier, "input_shape", ()) or ())
        if len(shape) != 3 and (self.rotation > 0 or self.resize > 0):
            raise ValueError(f"rotation and resize need image input (C, H, W); this classifier takes {shape}: "
                             f"pass rotation=0 and resize=0 to train with noise only")
        super().__init__(classifier, base=base, **params)
        lo, hi = self.clip
        self.noise = 0.1 * (hi - lo) if noise is None else float(noise)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return augment_batch(x, noise=self.noise, rotation=self.rotation, resize=self.resize, p=self.p,
                             clip=self.clip)

    def describe(self) -> dict:
        return {**super().describe(), "noise": self.noise, "rotation": self.rotation, "resize": self.resize,
                "p": self.p}


@hookimpl
def register_defenses(register):
    register("augment", AugmentTrainer,
             "Random noise, rotation and resize/crop of the training images, over any base training (thesis)")
