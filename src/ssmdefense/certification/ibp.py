"""Interval bound propagation (Gowal et al. 2018) through the LTI sequence models, S4, S4D, DSS and
S5 blocks (with or without AdS), and through the MLP baseline, on image inputs read as pixels or rows.

A box (centre c, radius r ≥ 0, elementwise) is pushed through the model layer by layer, each step
sound (the true output of every point of the input box lies in the output box):

- the serialiser (pixels, rows) only reorders: applied to c and r;
- a linear map W·x + b: centre W·c + b, radius |W|·r;
- the LTI mixer y = K ∗ u + D·u, a causal convolution along time per channel with the real kernel
  K = ``mixer.kernel(L)`` whose first tap takes D: centre K ∗ c, radius |K| ∗ r, exact per output. It is
  computed as a direct convolution in float64 (an FFT would add rounding the box must cover);
- the S5 mixer, one MIMO diagonal SSM: y_t = Σ_{s≤t} K_{t−s} u_s with matrix taps
  K_j = 2·Re(C̃ diag(Λ̄^j) B̄) (H × H) and diag(D) added to K_0 (``s5_kernel``): centre K ∗ c, radius
  |K| ∗ r (elementwise absolute values of the matrices), exact per output, by the same direct
  convolution with all H inputs feeding each output;
- ReLU (the MLP): monotone, so the values at the box's ends; the flatten only reorders;
- GELU: decreasing below its minimum at x* ≈ −0.7518 and increasing above, so its bounds are the
  values at the box's ends, and GELU(x*) when x* lies inside;
- AdS, act(W·y)·y with a monotone act: the interval of act(W·y) times the interval of y (the
  extremes of a product of intervals are among its four corner products);
- the residual add and the mean over time are linear; dropout is the identity in eval mode;
- LayerNorm: each feature's deviation from the mean x_i − mean(x) bounded exactly from the box,
  the variance between the sums of the smallest and the largest squares those deviations allow,
  then an interval division (the standard deviation is positive) and the affine part.

The logits' box certifies an input when the lower bound of the true class's logit exceeds the upper
bound of every other class's. Bounds through LayerNorm are loose (the variance is bounded
coordinate by coordinate); CROWN-style linear bounds tighten them (not built yet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import progress
from ..errors import SSMDefenseError
from ..models.ads import AdaptiveScaling
from ..models.body import CentreNorm, SequenceClassifier
from ..models.conv_ssm import ConvolutionalSSM
from ..models.mlp import MLPClassifier
from ..models.s5 import S5
from ..models.serialise import ImageToSequence
from ..modes import eval_mode

if TYPE_CHECKING:
    from ..estimators import SSMClassifier

GELU_MIN_AT = -0.7517916  # argmin of x·Φ(x): GELU falls before it and rises after it


class Box:
    """An axis-aligned box, centre ``c`` and radius ``r`` (r ≥ 0), float64 tensors of one shape."""

    def __init__(self, c: torch.Tensor, r: torch.Tensor):
        self.c, self.r = c, r

    @classmethod
    def from_bounds(cls, lower: torch.Tensor, upper: torch.Tensor) -> Box:
        return cls((lower + upper) / 2, (upper - lower) / 2)

    @property
    def lower(self) -> torch.Tensor:
        return self.c - self.r

    @property
    def upper(self) -> torch.Tensor:
        return self.c + self.r

    def __add__(self, other: Box) -> Box:
        return Box(self.c + other.c, self.r + other.r)


def linear(box: Box, layer: nn.Linear) -> Box:
    w = layer.weight.to(box.c.dtype)  # (out, in)
    c = box.c @ w.T + (0 if layer.bias is None else layer.bias.to(box.c.dtype))  # (..., out)
    return Box(c, box.r @ w.abs().T)  # (..., out)


def causal_conv(u: torch.Tensor, taps: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """y_t = Σ_{s≤t} K_{t−s} u_s, direct: u (B, L, H_in), ``taps`` a conv1d weight (H_out, H_in / groups, L)
    with tap K_j at [..., j]. Returns (B, L, H_out)."""
    L = u.shape[1]
    x = F.pad(u.transpose(1, 2), (L - 1, 0))  # (B H_in 2L-1) zeros before the start
    return F.conv1d(x, taps.flip(-1), groups=groups).transpose(1, 2)  # (B L H_out)


def lti(box: Box, mixer: ConvolutionalSSM) -> Box:
    """y = K ∗ u + D·u along time, per channel: u (B, L, H)."""
    L, H = box.c.shape[1], box.c.shape[2]
    k = mixer.kernel(L).to(box.c.dtype)  # (H, L)
    d = mixer.D.to(box.c.dtype)  # (H,)
    k = torch.cat([k[:, :1] + d[:, None], k[:, 1:]], 1)[:, None, :]  # (H 1 L) D·u_t joins the first tap: exact
    return Box(causal_conv(box.c, k, groups=H), causal_conv(box.r, k.abs(), groups=H))


def s5_kernel(mixer: S5, L: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The S5 layer's matrix taps (L, H, H), ``dtype``: K_j = 2·Re(C̃ diag(Λ̄^j) B̄), plus diag(D) at j = 0,
    so that y_t = Σ_{s≤t} K_{t−s} u_s is ``mixer(u)``. Λ̄, B̄ are the model's own (``discretize()``),
    widened exactly to complex ``dtype``; powers and products run in ``dtype``."""
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    Lambda_bar, B_bar, C_tilde = (t.to(complex_dtype) for t in mixer.discretize())  # (P/2), (P/2 H), (H P/2)
    j = torch.arange(L, dtype=dtype, device=Lambda_bar.device)  # (L)
    powers = torch.exp(j[:, None] * torch.log(Lambda_bar))  # (L P/2) Λ̄^j
    k = 2 * torch.einsum("hp,lp,pk->lhk", C_tilde, powers, B_bar).real  # (L H H)
    return torch.cat([k[:1] + torch.diag(mixer.D.to(dtype)), k[1:]])  # (L H H)


def s5_lti(box: Box, mixer: S5) -> Box:
    """y_t = Σ_{s≤t} K_{t−s} u_s with (H, H) taps: u (B, L, H)."""
    taps = s5_kernel(mixer, box.c.shape[1], box.c.dtype).permute(1, 2, 0)  # (H_out H_in L)
    return Box(causal_conv(box.c, taps), causal_conv(box.r, taps.abs()))


def gelu(box: Box) -> Box:
    lo, hi = box.lower, box.upper
    f_lo, f_hi = F.gelu(lo), F.gelu(hi)
    floor = F.gelu(torch.tensor(GELU_MIN_AT, dtype=lo.dtype))
    lower = torch.where((lo < GELU_MIN_AT) & (hi > GELU_MIN_AT), floor, torch.minimum(f_lo, f_hi))
    return Box.from_bounds(lower, torch.maximum(f_lo, f_hi))


def relu(box: Box) -> Box:
    return Box.from_bounds(box.lower.clamp(min=0), box.upper.clamp(min=0))


def ads(box: Box, module: AdaptiveScaling) -> Box:
    """act(W·y)·y: act is monotone increasing (relu, sigmoid, tanh)."""
    gate = linear(box, module.W)
    s_lo, s_hi = module.act(gate.lower), module.act(gate.upper)
    y_lo, y_hi = box.lower, box.upper
    corners = torch.stack([s_lo * y_lo, s_lo * y_hi, s_hi * y_lo, s_hi * y_hi])  # (4 ...)
    return Box.from_bounds(corners.amin(0), corners.amax(0))


def std_bounds(z_lo: torch.Tensor, z_hi: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest and largest sqrt(mean(z²) + eps) over the last axis for z in [z_lo, z_hi]: (..., 1) each."""
    square_min = torch.where((z_lo <= 0) & (z_hi >= 0), torch.zeros_like(z_lo), torch.minimum(z_lo**2, z_hi**2))
    square_max = torch.maximum(z_lo**2, z_hi**2)
    return (square_min.mean(-1, keepdim=True) + eps).sqrt(), (square_max.mean(-1, keepdim=True) + eps).sqrt()


def centred(box: Box) -> Box:
    """x − mean(x) over the last axis: exact bounds per coordinate."""
    lo, hi = box.lower, box.upper  # (..., H)
    n = lo.shape[-1]
    # x_i − mean(x) = (1 − 1/n)·x_i − (1/n)·Σ_{j≠i} x_j
    z_lo = (1 - 1 / n) * lo - (hi.sum(-1, keepdim=True) - hi) / n
    z_hi = (1 - 1 / n) * hi - (lo.sum(-1, keepdim=True) - lo) / n
    return Box.from_bounds(z_lo, z_hi)


def normalised(z: Box, norm: nn.Module) -> Box:
    """The rest of LayerNorm after the centring, from the centred box ``z``: the division by the
    standard deviation (none for ``CentreNorm``) and the affine part."""
    out = z
    if not isinstance(norm, CentreNorm):
        z_lo, z_hi = z.lower, z.upper  # (..., H)
        s_lo, s_hi = std_bounds(z_lo, z_hi, norm.eps)  # (..., 1)
        q = torch.stack([z_lo / s_lo, z_lo / s_hi, z_hi / s_lo, z_hi / s_hi])  # (4 ..., H) z / s at the corners
        out = Box.from_bounds(q.amin(0), q.amax(0))
    if getattr(norm, "elementwise_affine", True):
        g, b = norm.weight.to(z.c.dtype), norm.bias.to(z.c.dtype)
        out = Box(out.c * g + b, out.r * g.abs())
    return out


def layer_norm(box: Box, norm: nn.Module) -> Box:
    """LayerNorm, or ``CentreNorm`` (``-m norm=centre``: the centring alone, exact)."""
    return normalised(centred(box), norm)


def mixer_box(box: Box, b: nn.Module, name: str) -> Box:
    if not b.gated and isinstance(b.mixer, ConvolutionalSSM):
        return lti(box, b.mixer)
    if not b.gated and isinstance(b.mixer, S5):
        return s5_lti(box, b.mixer)
    raise SSMDefenseError(
        f"ibp cannot bound layer {name}.mixer ({type(b.mixer).__name__}): interval bounds are built for the "
        f"LTI convolution mixers S4, S4D and DSS and the S5 mixer"
    )


def block(box: Box, b: nn.Module, name: str) -> Box:
    y = gelu(mixer_box(box, b, name))
    if isinstance(b.ads, AdaptiveScaling):
        y = ads(y, b.ads)
    elif not isinstance(b.ads, nn.Identity):
        raise SSMDefenseError(f"ibp cannot bound layer {name}.ads ({type(b.ads).__name__})")
    return layer_norm(box + linear(y, b.output_linear), b.norm)


def check_image_front_end(model: nn.Module, method: str) -> tuple[nn.Module, nn.Module]:
    """(serialiser, body) of a model whose front end only reorders image pixels; else a clear error."""
    serialiser, body = getattr(model, "serialiser", None), getattr(model, "body", None)
    if not isinstance(serialiser, ImageToSequence):
        what = type(serialiser).__name__ if serialiser is not None else type(model).__name__
        raise SSMDefenseError(
            f"{method} cannot bound the front end {what}: only image sequences (pixels, rows) reorder inputs"
        )
    return serialiser, body


def logit_bounds(
    model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, *, train: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the logits of ``model`` (a ``NaturalShapeModel``) over the box [lower, upper] of
    natural inputs (N, ...): (N, classes) each; a layer that cannot be bounded is a clear error.
    Certification runs in float64 without gradients; ``train=True`` (the ``ibp`` defense) in the
    model's float32 with gradients, in the model's current mode."""
    features = _features(model, lower, upper, train)  # (N H)
    box = linear(features, getattr(model, "module", model).body.head)  # (N classes)
    return box.lower, box.upper


def margin_lower_bounds(
    model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor, *, train: bool = False
) -> torch.Tensor:
    """Lower bounds on the margins logit_y − logit_j over the box (N, classes), 0 at j = y. The head's
    rows are subtracted before the interval is taken (Gowal et al.'s elision of the last layer), so
    the bound is exact given the features' box and never looser than the difference of the logits'
    bounds. ``train`` as in ``logit_bounds``."""
    features = _features(model, lower, upper, train)  # (N H)
    head = getattr(model, "module", model).body.head
    w = head.weight.to(features.c.dtype)  # (C H)
    b = 0 if head.bias is None else head.bias.to(features.c.dtype)[y][:, None] - head.bias.to(features.c.dtype)
    dw = w[y][:, None, :] - w[None]  # (N C H) w_y − w_j
    centre = (dw @ features.c[:, :, None])[..., 0]  # (N C)
    return centre + b - (dw.abs() @ features.r[:, :, None])[..., 0]  # (N C)


def _features(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, train: bool) -> Box:
    """The box of the features the head reads (N, H): in float32 with gradients when ``train``."""
    model = getattr(model, "module", model)  # a DDP-wrapped model's own
    serialiser, body = check_image_front_end(model, "ibp")
    if not isinstance(body, (SequenceClassifier, MLPClassifier)):
        raise SSMDefenseError(
            f"ibp cannot bound the model {type(body).__name__}: it bounds SequenceClassifier bodies of S4, S4D, "
            f"DSS and S5, and the MLP"
        )
    if train:
        return _propagate(serialiser, body, lower, upper)
    with torch.no_grad(), eval_mode(model):
        return _propagate(serialiser, body, lower.double(), upper.double())


def _propagate(serialiser: nn.Module, body: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> Box:
    box = Box.from_bounds(serialiser(lower), serialiser(upper))  # (N L D)
    return _sequence_features(box, body) if isinstance(body, SequenceClassifier) else _mlp_features(box, body)


def _sequence_features(box: Box, body: SequenceClassifier) -> Box:
    box = linear(box, body.encoder)  # (N L H)
    for i, b in enumerate(body.blocks):
        box = block(box, b, f"blocks.{i}")
    return Box(box.c.mean(1), box.r.mean(1))  # (N H)


def _mlp_features(box: Box, body: MLPClassifier) -> Box:
    L = box.c.shape[1]
    if body.seq_len != L:
        raise SSMDefenseError(f"ibp: this MLP was sized for sequences of {body.seq_len} steps; got {L}")
    box = Box(box.c.flatten(1), box.r.flatten(1))  # (N L*D)
    box = relu(linear(box, body.fc1))  # (N d_hidden) dropout: the identity
    return relu(linear(box, body.fc2))  # (N d_hidden)


def certify_in_boxes(
    clf: SSMClassifier, x: np.ndarray, y: np.ndarray, eps: float, batch_size: int, method: str, decide: Callable
) -> dict:
    """The loop the box certifiers share: ``decide(lower, upper, y)`` says which of a batch's L-inf
    boxes of ``eps`` (cut to the clip range; float64) are certified for labels ``y``; the summary
    ``certify`` returns."""
    if not eps > 0:
        raise SSMDefenseError(f"eps must be positive; got {eps!r}")
    lo_clip, hi_clip = clf.clip_values if clf.clip_values is not None else (-np.inf, np.inf)
    certified = np.zeros(len(x), dtype=bool)
    with progress.phase(f"certify {method} at eps {eps:g}", total=len(x), unit="samples") as shown:
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.asarray(x[start : start + batch_size], dtype=np.float64)).to(clf.device)  # (b ...)
            yb = torch.from_numpy(np.asarray(y[start : start + batch_size], dtype=np.int64)).to(clf.device)
            lower, upper = (xb - eps).clamp(min=float(lo_clip)), (xb + eps).clamp(max=float(hi_clip))
            certified[start : start + len(xb)] = decide(lower, upper, yb).cpu().numpy()
            shown.update(len(xb))
        shown.done(f"{len(x)} samples, {int(certified.sum())} certified")
    return {
        "method": method,
        "eps": eps,
        "samples": len(y),
        "certified_accuracy": float(certified.mean()) if len(y) else 0.0,
        "certified": certified.tolist(),
    }


def certify_ibp(clf: SSMClassifier, x: np.ndarray, y: np.ndarray, *, eps: float, batch_size: int = 50) -> dict:
    """Certified accuracy in the L-inf ball of ``eps`` (within the clip range) on ``x``, ``y``: the
    true class's lower bound above every other class's upper bound."""

    def decide(lower: torch.Tensor, upper: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        margins = margin_lower_bounds(clf.model, lower, upper, yb)  # (b C)
        return margins.scatter(1, yb[:, None], torch.inf).amin(1) > 0  # (b) every wrong class's margin positive

    return certify_in_boxes(clf, x, y, eps, batch_size, "ibp", decide)
