"""The empirical side of a smoothing certificate: an attack on the smoothed classifier g itself.

A certified radius says no L2 perturbation shorter than it changes g's decision; an attack can only
say some perturbation does. So on the same samples, certified accuracy at radius r can never exceed
g's accuracy under an attack of radius r, and an attack that changes g's decision at a point
certified beyond r is a violation: a bug, or one of the α-rare wrong certificates.

The attack is SmoothAdv's PGD (Salman et al., NeurIPS 2019): L2 projected gradient ascent on
−log E_δ[softmax f(x + δ)]_y, the expectation estimated with ``m`` noise draws per step. ART has
no attack on a smoothed classifier, so it is written here. g's decision at the adversarial point is
judged by ``n`` fresh votes: it is "broken" when the majority is not y, and a certified sample counts
as a violation only when even the (1 − α) Clopper-Pearson upper bound on y's share is below 1/2 (g
confidently changed its mind), so that vote noise near g's boundary is not read as one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import progress
from ..modes import eval_mode
from .smoothing import votes

if TYPE_CHECKING:
    from ..estimators import SSMClassifier


def smooth_adv(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    radius: float,
    sigma: float,
    steps: int = 20,
    m: int = 16,
    generator: torch.Generator,
) -> torch.Tensor:
    """L2 PGD of ``radius`` on the smoothed classifier's log-probability of ``y``: x (B, ...) -> x_adv."""
    flat = (len(x), -1)
    step = 2.5 * radius / steps
    delta = torch.zeros_like(x)
    with eval_mode(model):
        for _ in range(steps):
            delta.requires_grad_(True)
            noise = torch.randn((m, *x.shape), generator=generator, device=x.device)  # (m, B, ...)
            logits = model((x + delta).unsqueeze(0).add(sigma * noise).flatten(0, 1))  # (m*B, C)
            p = logits.softmax(1).view(m, len(x), -1).mean(0)  # (B, C) the smoothed soft prediction
            loss = -p.gather(1, y[:, None]).clamp_min(1e-12).log().sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                g = grad.reshape(flat)  # (B, d)
                delta = delta + step * (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(x)
                norms = delta.reshape(flat).norm(dim=1).clamp_min(1e-12)  # (B,)
                delta = delta * (radius / norms).clamp(max=1.0).view(-1, *[1] * (x.ndim - 1))
    return (x + delta).detach()


def attack_check(
    clf: SSMClassifier,
    x: np.ndarray,
    y: np.ndarray,
    result: dict,
    radius: float,
    *,
    n: int = 1000,
    batch_size: int = 1000,
    seed: int = 0,
) -> dict:
    """SmoothAdv at ``radius`` on every sample the smoothed classifier gets right, judged by ``n`` votes:
    g's empirical accuracy under the attack beside its certified accuracy at that radius, and the
    violations (a sample certified beyond ``radius`` that the attack confidently flips)."""
    from statsmodels.stats.proportion import proportion_confint

    sigma, alpha = result["sigma"], result["alpha"]
    predictions, radii = np.asarray(result["predictions"]), np.asarray(result["radii"])
    right = np.flatnonzero(predictions == y)
    generator = torch.Generator(device=clf.device).manual_seed(seed)
    still_right, violations = 0, []
    batches = range(0, len(right), 32)
    for start in progress.track(batches, f"attack check: SmoothAdv at radius {radius:g}", len(batches), "batches"):
        idx = right[start : start + 32]
        xb = torch.from_numpy(np.asarray(x[idx], dtype=np.float32)).to(clf.device)  # (b, ...)
        yb = torch.from_numpy(np.asarray(y[idx], dtype=np.int64)).to(clf.device)  # (b,)
        adv = smooth_adv(clf.model, xb, yb, radius=radius, sigma=sigma, generator=generator)
        for i, xi in zip(idx, adv, strict=True):
            counts = votes(clf.model, xi, n, sigma, clf.nb_classes, batch_size, generator)  # (C,)
            still_right += int(counts.argmax() == y[i])
            upper = proportion_confint(int(counts[y[i]]), n, alpha=2 * alpha, method="beta")[1]
            if radii[i] > radius and upper < 0.5:
                violations.append(int(i))
    certified = float(((predictions == y) & (radii >= radius)).mean()) if len(y) else 0.0
    return {
        "radius": radius,
        "certified_accuracy": certified,
        "attacked_accuracy": still_right / len(y) if len(y) else 0.0,
        "violations": violations,
    }
