"""CROWN (Zhang et al. 2018, https://arxiv.org/abs/1811.00866): backward linear bounds through the LTI
sequence models S4, S4D and DSS (with or without AdS) and the MLP baseline, on image inputs read as
rows. Written by hand: auto_LiRPA has no FFT or complex operators and needs torch < 2.9,
and ART's certifiers take only Conv2d/Linear/ReLU children (docs/certification.md).

The network is a list of steps, each linear in its input or relaxed to two linear functions of it
(one below, one above, per neuron). A bound on a linear function A·h of a hidden node is carried
back step by step to the input, where the box gives it exactly: A·x ≥ A·c − |A|·r. Carrying a lower
bound back through a relaxed step takes the lower line where a coefficient is positive and the
upper line where it is negative; an upper bound is the lower bound of −A·h. Unlike interval bounds,
this keeps what the layers share: the residual path and the branch see the same input, and two linear
maps compose into one.

- the encoder, the output projection, AdS's gate, the head: linear;
- the LTI mixer y = K ∗ u + D·u: linear, carried back through its Toeplitz matrix in float64 (a
  direct convolution: no FFT rounding);
- the residual add, LayerNorm's mean subtraction, its affine part and the mean over time: linear;
- GELU on [l, u]: two lines with the chord's slope, each shifted to touch GELU from below / above,
  found from GELU's stationary points (GELU' is monotone on (−∞, −√2], [−√2, √2], [√2, ∞));
- AdS's product act(q)·g with the gate q = W·g: McCormick's planes, linear in g and in s = act(q),
  s then between two lines in q (the chord-slope lines above for sigmoid and tanh, CROWN's for
  relu), and q linear in g;
- LayerNorm's division z = d·(v + eps)^(−1/2), v = mean(d²): McCormick's planes in d and the inverse
  standard deviation, that between the tangent and the chord of the convex (v + eps)^(−1/2), and each
  d² between its tangent and its chord. With ``-m norm=centre`` (``CentreNorm``) there is no division
  and the normalisation is exact;
- ReLU (the MLP): the usual CROWN lines.

Every relaxation needs bounds on its input; each comes from the same backward pass, from that node
to the input ("full" CROWN: a forward pass of linear bounds, tried first, certified none of the
default run's first 20 test images at eps 0.01, where this certifies 13). That costs memory and
time quadratic in a layer's neurons (L·H): about 50 MB and several seconds a sample for rows of
MNIST (28 steps of 64); pixels (784 steps) get a clear error pointing at ``ibp`` and ``smoothing``.
Relaxation offsets are widened by ``TOL``; no FFT is used, so nothing else rounds beyond float64's
last bits.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SSMDefenseError
from ..models.ads import AdaptiveScaling
from ..models.body import CentreNorm, SequenceClassifier
from ..models.conv_ssm import ConvolutionalSSM
from ..models.mlp import MLPClassifier
from ..modes import eval_mode
from .ibp import (
    Box,
    ads,
    centred,
    certify_in_boxes,
    check_image_front_end,
    gelu,
    linear,
    lti,
    normalised,
    relu,
    std_bounds,
)

if TYPE_CHECKING:
    from ..estimators import SSMClassifier

TOL = 1e-9  # added to every relaxation's offset: the bisection and float64 rounding stay inside it
MAX_BYTES = 2 * 2**30  # one batch's linear bounds, at most
SQRT2 = math.sqrt(2.0)


class Step(abc.ABC):
    """One step h_out = f(h_in); ``backward(A)`` turns a lower bound A·h_out (A: (N, M, *out)) into
    one on h_in: (A_in (N, M, *in), offset (N, M))."""

    @abc.abstractmethod
    def backward(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class LinearStep(Step):
    """A linear map T plus a constant: ``transpose(A)`` is A·T."""

    constant: torch.Tensor | None = None  # added to every output, broadcastable to (*out)

    @abc.abstractmethod
    def transpose(self, A: torch.Tensor) -> torch.Tensor: ...

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        if self.constant is None:
            return self.transpose(A), A.new_zeros(A.shape[:2])
        return self.transpose(A), dot(A, self.constant.to(A.dtype).expand(A.shape[2:]))


class Affine(LinearStep):
    """x @ W.T + b on the last axis."""

    def __init__(self, layer: nn.Linear):
        self.w, self.constant = layer.weight, layer.bias  # (out, in), (out,) or None

    def transpose(self, A: Tensor) -> Tensor:
        return A @ self.w.to(A.dtype)  # (N M ... in)


class Scale(LinearStep):
    """x·γ + β, elementwise on the last axis (LayerNorm's affine part)."""

    def __init__(self, gamma: torch.Tensor, beta: torch.Tensor):
        self.gamma, self.constant = gamma, beta

    def transpose(self, A: Tensor) -> Tensor:
        return A * self.gamma.to(A.dtype)


class Centre(LinearStep):
    """x − mean(x) over the last axis (LayerNorm's first part)."""

    def transpose(self, A: Tensor) -> Tensor:
        return A - A.mean(-1, keepdim=True)


class Convolve(LinearStep):
    """p_t = Σ_{s≤t} K_{t−s} u_s per channel (K's first tap includes D): u, p (L, H)."""

    def __init__(self, mixer: ConvolutionalSSM, L: int):
        k = mixer.kernel(L).double()  # (H, L) in the model's precision, then float64: D added exactly
        k = torch.cat([k[:, :1] + mixer.D.double()[:, None], k[:, 1:]], 1)  # (H L)
        lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]  # (L L) t − s
        self.toeplitz = torch.where(lag >= 0, k[:, lag.clamp(min=0)], 0.0)  # (H L L): [h, t, s] = K_h[t − s]

    def transpose(self, A: Tensor) -> Tensor:  # A (N M L H)
        n, m, L, H = A.shape
        A = A.permute(3, 0, 1, 2).reshape(H, n * m, L)  # (H NM L)
        A = torch.bmm(A, self.toeplitz.to(A.device, A.dtype))  # (H NM L) over s
        return A.reshape(H, n, m, L).permute(1, 2, 3, 0)  # (N M L H)


class Flatten(LinearStep):
    """(L, D) -> (L·D), the MLP's first step."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def transpose(self, A: Tensor) -> Tensor:
        return A.reshape(*A.shape[:2], *self.shape)


class Relax(Step):
    """h_out between a_l·h_in + b_l and a_u·h_in + b_u, per neuron (each (N, *shape))."""

    def __init__(self, a_l: Tensor, b_l: Tensor, a_u: Tensor, b_u: Tensor):
        self.lines = (a_l, b_l, a_u, b_u)

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        return lines_back(A, self.lines)


class Scaled(Step):
    """AdS: a = act(q)·g with the gate q = W·g; g ≥ gl, q in [ql, qu] (each (N, L, H))."""

    def __init__(self, ads: AdaptiveScaling, gl: Tensor, ql: Tensor, qu: Tensor, exact: bool = True):
        self.w = ads.W.weight  # (H H)
        self.gl, self.sl, self.su = gl, ads.act(ql), ads.act(qu)
        self.lines = activation_relaxation(ads.act_name, ql, qu, exact)

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        A_g, A_s, offset = product_back(A, self.gl, self.sl, self.su)
        A_q, more = lines_back(A_s, self.lines)
        return A_g + A_q @ self.w.to(A_q.dtype), offset + more


class Normalised(Step):
    """LayerNorm's division: z = d·(v + eps)^(−1/2), v = mean(d²) over the last axis, d in [dl, du]."""

    def __init__(self, dl: Tensor, du: Tensor, eps: float):
        self.dl = dl
        self.squares = convex_relaxation(torch.square, lambda d: 2 * d, dl, du)  # (N L H) each
        s_lo, s_hi = std_bounds(dl, du, eps)  # (N L 1)
        self.il, self.iu = 1 / s_hi, 1 / s_lo  # (N L 1) bounds of (v + eps)^(−1/2)
        inv = lambda v: (v + eps).rsqrt()  # noqa: E731
        self.inv_lines = convex_relaxation(inv, lambda v: -0.5 * (v + eps) ** -1.5, s_lo**2 - eps, s_hi**2 - eps)

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:  # A (N M L H)
        A_d, A_inv, offset = product_back(A, self.dl, self.il, self.iu)
        A_v, more = lines_back(A_inv.sum(-1, keepdim=True), self.inv_lines)  # (N M L 1)
        A_sq, most = lines_back(A_v.expand_as(A) / A.shape[-1], self.squares)  # v is the mean of the squares
        return A_d + A_sq, offset + more + most


class Residual(Step):
    """x + branch(x)."""

    def __init__(self, branch: list[Step]):
        self.branch = branch

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        A_branch, offset = back(self.branch, A)
        return A_branch.add_(A), offset


def dot(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ over the node's axes of A·b: A (N, M, *shape), b (N, *shape) or (*shape): (N, M), as a matrix product."""
    n, m = A.shape[:2]
    flat = A.reshape(n, m, -1)  # (N M S)
    if b.ndim == A.ndim - 2:
        return flat @ b.reshape(-1)  # (N M)
    return torch.bmm(flat, b.reshape(n, -1, 1))[..., 0]  # (N M)


def back(steps: list[Step], A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry the lower bound A·h_last back through ``steps`` to their input: (A_in, offset (N, M))."""
    total = A.new_zeros(A.shape[:2])
    for step in reversed(steps):
        A, offset = step.backward(A)
        total = total + offset
    return A, total


def concretize(A: torch.Tensor, offset: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """min over the box [lower, upper] (N, *shape) of A·x + offset: (N, M)."""
    return dot(A, (lower + upper) / 2) - dot(A.abs(), (upper - lower) / 2) + offset


def node_bounds(steps: list[Step], shape: tuple[int, ...], lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Lower and upper bounds (N, *shape) on every neuron of the node ``steps`` end in."""
    n, m = lower.shape[0], math.prod(shape)
    eye = torch.eye(m, dtype=lower.dtype, device=lower.device).reshape(m, *shape)  # (M *shape)
    A = torch.cat([eye, -eye]).expand(n, 2 * m, *shape)  # (N 2M *shape): each neuron, and minus it
    low = concretize(*back(steps, A), lower, upper)  # (N 2M)
    return low[:, :m].reshape(n, *shape), (-low[:, m:]).reshape(n, *shape)


# --- relaxations ---------------------------------------------------------------------------------


def gelu_grad(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / SQRT2)) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _sigmoid_grad(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _tanh_grad(x: Tensor) -> Tensor:
    return 1 - torch.tanh(x) ** 2


# f, f' and the points splitting the line into pieces where f' is monotone (one root of f' = a each)
SMOOTH = {
    "gelu": (F.gelu, gelu_grad, (-SQRT2, SQRT2)),
    "sigmoid": (torch.sigmoid, _sigmoid_grad, (0.0,)),
    "tanh": (torch.tanh, _tanh_grad, (0.0,)),
}


def _extremes_minus_line(name: str, a: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """min and max of f(x) − a·x on [lo, hi], elementwise: at the ends or where f'(x) = a, one root at
    most on each piece where f' is monotone, found by bisection."""
    f, grad, cuts = SMOOTH[name]
    h = lambda x: f(x) - a * x  # noqa: E731
    candidates = [h(lo), h(hi)]
    edges = [-math.inf, *cuts, math.inf]
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        # the root is found without gradients: h'(x*) = 0 there, so h(x*)'s gradient (training) is the same
        with torch.no_grad():
            a_end, b_end = lo.clamp(min=left), hi.clamp(max=right)  # the piece inside [lo, hi]
            g_a = grad(a_end) - a
            has_root = (a_end <= b_end) & (g_a * (grad(b_end) - a) <= 0)
            for _ in range(60):  # bisection where f' − a changes sign
                mid = (a_end + b_end) / 2
                g_mid = grad(mid) - a
                left_half = (g_a * g_mid) <= 0
                b_end, a_end = torch.where(left_half, mid, b_end), torch.where(left_half, a_end, mid)
                g_a = torch.where(left_half, g_a, g_mid)
        candidates.append(h(torch.where(has_root, (a_end + b_end) / 2, lo)))
    values = torch.stack(candidates)
    return values.amin(0), values.amax(0)


# an upper bound on |f''| over the line: GELU's is 2φ(0) ≈ 0.798 at 0, sigmoid's 1/(6√3), tanh's 4/(3√3)
CURVATURE = {"gelu": 0.8, "sigmoid": 0.097, "tanh": 0.77}
GRID = 9  # points of the grid bound


def _extremes_minus_line_on_grid(name: str, a: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Sound bounds on the min and max of f(x) − a·x on [lo, hi] from GRID evenly spaced points, widened
    by the most a function with |f''| ≤ CURVATURE can bulge between two of them (|f''|·d²/8, d their
    spacing): no root finding, about 20x cheaper than ``_extremes_minus_line`` and slightly looser."""
    f = SMOOTH[name][0]
    t = torch.linspace(0, 1, GRID, dtype=lo.dtype, device=lo.device).reshape(GRID, *[1] * lo.ndim)  # (G 1...)
    x = lo + t * (hi - lo)  # (G ...)
    h = f(x) - a * x  # (G ...)
    bulge = CURVATURE[name] * ((hi - lo) / (GRID - 1)) ** 2 / 8  # (...)
    return h.amin(0) - bulge, h.amax(0) + bulge


def smooth_relaxation(name: str, lo: Tensor, hi: Tensor, exact: bool = True) -> tuple[Tensor, ...]:
    """Two lines with the chord's slope (f' at the point when lo = hi), below and above f on [lo, hi];
    touching f when ``exact``, else placed by the cheaper grid bound (CROWN-IBP training)."""
    f, grad, _ = SMOOTH[name]
    width = hi - lo
    chord = (f(hi) - f(lo)) / width.clamp(min=1e-12)
    a = torch.where(width > 1e-9, chord, grad((lo + hi) / 2))
    b_l, b_u = (_extremes_minus_line if exact else _extremes_minus_line_on_grid)(name, a, lo, hi)
    return a, b_l, a, b_u


def relu_relaxation(lo: Tensor, hi: Tensor) -> tuple[Tensor, ...]:
    """CROWN's ReLU lines: the chord above a crossing neuron, slope 0 or 1 below (the closer one)."""
    crossing = (lo < 0) & (hi > 0)
    chord = hi / (hi - lo).clamp(min=1e-12)
    a_u = torch.where(crossing, chord, (lo >= 0).to(lo.dtype))
    b_u = torch.where(crossing, -chord * lo, torch.zeros_like(lo))
    a_l = torch.where(crossing, (hi > -lo).to(lo.dtype), (lo >= 0).to(lo.dtype))
    return a_l, torch.zeros_like(lo), a_u, b_u


def activation_relaxation(name: str, lo: Tensor, hi: Tensor, exact: bool = True) -> tuple[Tensor, ...]:
    return relu_relaxation(lo, hi) if name == "relu" else smooth_relaxation(name, lo, hi, exact)


def convex_relaxation(f: Callable, grad: Callable, lo: Tensor, hi: Tensor) -> tuple[Tensor, ...]:
    """A convex f on [lo, hi]: the tangent at the middle below, the chord above."""
    mid, width = (lo + hi) / 2, hi - lo
    a_l = grad(mid)
    chord = torch.where(width > 1e-12, (f(hi) - f(lo)) / width.clamp(min=1e-12), a_l)
    return a_l, f(mid) - a_l * mid, chord, f(lo) - chord * lo


def lines_back(A: Tensor, lines: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """A lower bound A·f(h) carried to h through f's lines (a_l, b_l, a_u, b_u), each (N, *shape): the
    lower line where A > 0, the upper where A < 0, written as A·upper + max(A, 0)·(lower − upper)."""
    a_l, b_l, a_u, b_u = lines
    pos = A.clamp(min=0)
    A_in = A * a_u[:, None] if a_l is a_u else torch.addcmul(A * a_u[:, None], pos, (a_l - a_u)[:, None])
    return A_in, dot(A, b_u + TOL) + dot(pos, b_l - b_u - 2 * TOL)


def product_back(A: Tensor, yl: Tensor, sl: Tensor, su: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A lower bound A·(y·s) split into coefficients on y and on s, by McCormick's planes
    y·s ≥ sl·y + yl·s − sl·yl and y·s ≤ su·y + yl·s − su·yl (y ≥ yl, sl ≤ s ≤ su): (A_y, A_s, offset)."""
    A_y, offset = lines_back(A, (sl.expand_as(yl), -sl * yl, su.expand_as(yl), -su * yl))
    return A_y, A * yl[:, None], offset


# --- the models ----------------------------------------------------------------------------------


def _sequence_steps(body: SequenceClassifier, lower: Tensor, upper: Tensor, ibp_nodes: bool) -> list[Step]:
    """The steps of an S4/S4D/DSS body, each relaxation built from bounds on its input: those of
    CROWN's own backward pass to that node, or (``ibp_nodes``: CROWN-IBP, for training) the interval
    box of a forward pass, with the smooth functions' lines placed by the grid bound; cheaper, looser."""
    L, H = lower.shape[1], body.d_model
    steps: list[Step] = [Affine(body.encoder)]
    box = linear(Box.from_bounds(lower, upper), body.encoder)  # (N L H) the interval box of the last node

    def bounds(node: list[Step], node_box: Box) -> tuple[Tensor, Tensor]:
        return (node_box.lower, node_box.upper) if ibp_nodes else node_bounds(node, (L, H), lower, upper)

    for i, b in enumerate(body.blocks):
        if b.gated or not isinstance(b.mixer, ConvolutionalSSM):
            raise SSMDefenseError(
                f"crown cannot bound layer blocks.{i}.mixer ({type(b.mixer).__name__}): linear bounds are built "
                f"for the LTI convolution mixers S4, S4D and DSS"
            )
        conv = Convolve(b.mixer, L)
        pl, pu = bounds([*steps, conv], lti(box, b.mixer))  # (N L H) before GELU
        branch: list[Step] = [conv, Relax(*smooth_relaxation("gelu", pl, pu, exact=not ibp_nodes))]
        g = gelu(Box.from_bounds(pl, pu))  # (N L H)
        if isinstance(b.ads, AdaptiveScaling):
            ql, qu = bounds([*steps, *branch, Affine(b.ads.W)], linear(g, b.ads.W))  # (N L H) the gate
            branch.append(Scaled(b.ads, g.lower, ql, qu, exact=not ibp_nodes))
            g = ads(g, b.ads)
        elif not isinstance(b.ads, nn.Identity):
            raise SSMDefenseError(f"crown cannot bound layer blocks.{i}.ads ({type(b.ads).__name__})")
        branch.append(Affine(b.output_linear))
        steps += [Residual(branch), Centre()]
        z = centred(box + linear(g, b.output_linear))  # (N L H)
        if not isinstance(b.norm, CentreNorm):  # LayerNorm's division; -m norm=centre has none
            z = Box.from_bounds(*bounds(steps, z))  # the centred LayerNorm input
            steps.append(Normalised(z.lower, z.upper, b.norm.eps))
        if getattr(b.norm, "elementwise_affine", True):
            steps.append(Scale(b.norm.weight, b.norm.bias))
        box = normalised(z, b.norm)
    return steps


def _mlp_steps(body: MLPClassifier, lower: Tensor, upper: Tensor, ibp_nodes: bool) -> list[Step]:
    """The steps of the MLP baseline, its ReLU lines built from bounds on their inputs (as above)."""
    steps: list[Step] = [Flatten(tuple(lower.shape[1:])), Affine(body.fc1)]
    box = linear(Box(((lower + upper) / 2).flatten(1), ((upper - lower) / 2).flatten(1)), body.fc1)  # (N d_hidden)
    for layer in (body.fc2, None):
        node = (box.lower, box.upper) if ibp_nodes else node_bounds(steps, (body.d_hidden,), lower, upper)
        steps.append(Relax(*relu_relaxation(*node)))
        if layer is not None:
            steps.append(Affine(layer))
            box = linear(relu(Box.from_bounds(*node)), layer)
    return steps


def _head(body: nn.Module, shape: tuple[int, ...], spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear spec (N, M, classes) on the logits as coefficients on the last hidden node and an offset."""
    w, b = body.head.weight.to(spec.dtype), body.head.bias.to(spec.dtype)  # (C H), (C)
    A = spec @ w  # (N M H)
    if isinstance(body, SequenceClassifier):  # the mean over time
        A = (A[:, :, None, :] / shape[0]).expand(*A.shape[:2], *shape)  # (N M L H)
    return A, spec @ b


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(serialiser, body) of a model crown can bound; else a clear error naming what it cannot."""
    serialiser, body = check_image_front_end(getattr(model, "module", model), "crown")
    if not isinstance(body, SequenceClassifier | MLPClassifier):
        raise SSMDefenseError(f"crown cannot bound the model {type(body).__name__}: it bounds S4, S4D, DSS and MLP")
    return serialiser, body


def spec_lower_bounds(
    model: nn.Module, lower: Tensor, upper: Tensor, spec: Tensor, *, ibp_nodes: bool = False, train: bool = False
) -> Tensor:
    """Lower bounds (N, M) of spec·logits (spec: (N, M, classes)) over the box [lower, upper] of natural
    inputs (N, ...), in float64; a layer that cannot be bounded is a clear error. ``ibp_nodes``: the
    relaxations from interval bounds (CROWN-IBP). ``train``: with gradients, in the model's current
    mode (the ``crown-ibp`` defense); else without, in eval mode."""
    serialiser, body = _parts(model)
    if train:  # in the model's precision
        return _spec_lower(serialiser, body, lower, upper, spec.to(lower.dtype), ibp_nodes)
    with torch.no_grad(), eval_mode(model):
        return _spec_lower(serialiser, body, lower.double(), upper.double(), spec.double(), ibp_nodes)


def _spec_lower(serialiser: nn.Module, body: nn.Module, lower: Tensor, upper: Tensor, spec: Tensor, ibp_nodes: bool):
    lower, upper = serialiser(lower), serialiser(upper)  # (N L D)
    if isinstance(body, SequenceClassifier):
        steps, shape = _sequence_steps(body, lower, upper, ibp_nodes), (lower.shape[1], body.d_model)
    else:
        steps, shape = _mlp_steps(body, lower, upper, ibp_nodes), (body.d_hidden,)
    A, offset = _head(body, shape, spec)
    return concretize(*back(steps, A), lower, upper) + offset


def _sample_bytes(model: nn.Module, lower: torch.Tensor) -> int:
    """About the memory one sample's bounds on a layer take: a coefficient per neuron and per neuron
    (or input) for each neuron's lower and upper bound, float64, some four such tensors alive."""
    body = _parts(model)[1]
    if isinstance(body, SequenceClassifier):
        neurons = lower.shape[1] * body.d_model
        return 4 * 2 * neurons * neurons * 8
    return 4 * 2 * body.d_hidden * max(body.d_hidden, math.prod(lower.shape[1:])) * 8


def logit_bounds(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds (N, classes) on each logit over the box, for tests and for plots."""
    n, classes = lower.shape[0], _classes(model)
    eye = torch.eye(classes, dtype=torch.float64, device=lower.device)
    spec = torch.cat([eye, -eye]).expand(n, 2 * classes, classes)  # (N 2C C)
    low = spec_lower_bounds(model, lower, upper, spec)
    return low[:, :classes], -low[:, classes:]


def _classes(model: nn.Module) -> int:
    return _parts(model)[1].head.out_features


def margin_bounds(
    model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor, **how: bool
) -> torch.Tensor:
    """Lower bounds (N, classes) of logit_y − logit_j over the box; +inf at j = y. ``how``:
    ``spec_lower_bounds``' ``ibp_nodes`` and ``train``."""
    classes = _classes(model)
    eye = torch.eye(classes, dtype=torch.float64, device=lower.device)
    spec = eye[y][:, None, :] - eye[None, :, :]  # (N C C): row j is e_y − e_j
    low = spec_lower_bounds(model, lower, upper, spec, **how)
    return low.masked_fill(F.one_hot(y, classes).bool(), math.inf)


def certify_crown(clf: SSMClassifier, x: np.ndarray, y: np.ndarray, *, eps: float, batch_size: int = 0) -> dict:
    """Certified accuracy in the L-inf ball of ``eps`` (within the clip range): certified when every
    margin logit_y − logit_j has a positive lower bound."""
    need = _sample_bytes(clf.model, clf.model.serialiser(torch.zeros((1, *clf.input_shape), device=clf.device)))
    if need > MAX_BYTES:
        raise SSMDefenseError(
            f"crown needs about {need / 2**30:.0f} GiB a sample here (linear bounds on every neuron of a layer "
            f"in every neuron before it); use a shorter sequence mode (rows), --method ibp or --method smoothing"
        )

    def decide(lower: Tensor, upper: Tensor, yb: Tensor) -> Tensor:
        return margin_bounds(clf.model, lower, upper, yb).amin(1) > 0  # (b)

    return certify_in_boxes(clf, x, y, eps, batch_size or max(1, MAX_BYTES // need), "crown", decide)


def certify_crown_ibp(clf: SSMClassifier, x: np.ndarray, y: np.ndarray, *, eps: float, batch_size: int = 50) -> dict:
    """Certified accuracy in the L-inf ball of ``eps`` by CROWN-IBP's bounds: the backward pass from the
    margins with each relaxation built from interval bounds (and the smooth functions' lines placed by
    the grid bound): tighter than ``ibp``, looser than ``crown``, about as cheap as one backward pass."""

    def decide(lower: Tensor, upper: Tensor, yb: Tensor) -> Tensor:
        return margin_bounds(clf.model, lower, upper, yb, ibp_nodes=True).amin(1) > 0  # (b)

    return certify_in_boxes(clf, x, y, eps, batch_size, "crown-ibp", decide)
