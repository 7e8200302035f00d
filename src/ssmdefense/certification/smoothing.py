"""Randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019): a certificate for every model.

The smoothed classifier g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), returns class A with a
radius R = σ·Φ⁻¹(p_A) in which no L2 perturbation can change its decision, where p_A is a lower
bound on P(f(x + δ) = A). Cohen's CERTIFY: pick A by the votes of ``n0`` noisy copies, count A's
votes among ``n`` fresh ones, take the one-sided (1 − α) Clopper-Pearson lower bound p_A; abstain
when p_A < 1/2. With probability at least 1 − α per input, an answer that is not an abstention is
g's and R is certified for g (not for the base model f that was trained).

Written here rather than through ART's ``PyTorchRandomizedSmoothing.certify``, which repeats each
input ``n`` times in one float64 array before predicting: 100,000 copies of a one-second 16 kHz
clip are 12.8 GB. Here the noise is drawn in chunks of ``batch_size`` on the model's device, in
float32, from one seeded torch generator, so memory is one chunk; the confidence bound is ART's
(statsmodels' Clopper-Pearson interval). tests/test_certify_smoothing.py checks the votes and the
bound against ART's on the same model.

The noise is added where the classifier takes its inputs: image pixels, the waveform, or the
features of a sequence mode that attacks them (``attack_space=features``). Nothing is clipped:
the certificate is about g on all of R^d, as in the paper.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.stats import norm

from .. import progress
from ..errors import SSMDefenseError
from ..modes import eval_mode
from ..validation import integer, number

if TYPE_CHECKING:
    from ..estimators import SSMClassifier

DEFAULT_N0, DEFAULT_N, DEFAULT_ALPHA = 100, 10_000, 0.001
ABSTAIN = -1


def lower_confidence_bound(votes: int, n: int, alpha: float) -> float:
    """The one-sided (1 − ``alpha``) Clopper-Pearson lower bound on a proportion seen ``votes`` times
    in ``n`` draws (ART's: statsmodels' two-sided interval at 2·alpha)."""
    from statsmodels.stats.proportion import proportion_confint

    return float(proportion_confint(votes, n, alpha=2 * alpha, method="beta")[0])


def largest_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius ``n`` samples can certify: every vote for the class gives p_A = α^(1/n), so
    R = σ·Φ⁻¹(α^(1/n)). A median radius at this value is capped by ``n``, not a property of the model."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def votes(
    model: torch.nn.Module,
    x: torch.Tensor,
    n: int,
    sigma: float,
    nb_classes: int,
    batch_size: int,
    generator: torch.Generator,
) -> np.ndarray:
    """How often ``model`` predicts each class on ``n`` copies of ``x`` (one input, its shape as the
    model takes it) with Gaussian noise of std ``sigma``, in chunks of ``batch_size``: (nb_classes,)."""
    counts = torch.zeros(nb_classes, dtype=torch.int64)
    with torch.no_grad(), eval_mode(model):
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            noise = torch.randn((m, *x.shape), generator=generator, device=x.device)  # (m, ...input)
            predicted = model(x.unsqueeze(0) + sigma * noise).argmax(1)  # (m,)
            counts += torch.bincount(predicted.cpu(), minlength=nb_classes)
    return counts.numpy()


def certify_smoothing(
    clf: SSMClassifier,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float,
    n0: int = DEFAULT_N0,
    n: int = DEFAULT_N,
    alpha: float = DEFAULT_ALPHA,
    batch_size: int = 1000,
    seed: int = 0,
) -> dict:
    """CERTIFY on each input of ``x`` (as ``clf`` takes it) with labels ``y``: the smoothed
    predictions and certified L2 radii, and their summary (``summarise``)."""
    sigma = number("sigma", sigma, 0, error=SSMDefenseError)
    if sigma <= 0:
        raise SSMDefenseError(f"sigma must be positive; got {sigma!r}")
    integer("n0", n0, 1, error=SSMDefenseError)
    integer("n", n, 1, error=SSMDefenseError)
    integer("batch_size", batch_size, 1, error=SSMDefenseError)
    alpha = number("alpha", alpha, 0, 0.5, error=SSMDefenseError)
    if not 0 < alpha < 0.5:
        raise SSMDefenseError(f"alpha must be in (0, 0.5); got {alpha!r}")
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y).astype(np.int64)
    if tuple(x.shape[1:]) != tuple(clf.input_shape):
        raise SSMDefenseError(f"x has shape {x.shape[1:]} per sample; the classifier takes {tuple(clf.input_shape)}")
    device = clf.device
    generator = torch.Generator(device=device).manual_seed(seed)
    predictions, radii = np.full(len(x), ABSTAIN), np.zeros(len(x))
    start = time.perf_counter()
    for i in progress.track(range(len(x)), f"certify smoothing (sigma {sigma:g}, n {n})", unit="samples"):
        xi = torch.from_numpy(x[i]).to(device)  # (...input)
        chosen = int(votes(clf.model, xi, n0, sigma, clf.nb_classes, batch_size, generator).argmax())
        counted = votes(clf.model, xi, n, sigma, clf.nb_classes, batch_size, generator)[chosen]
        p_a = lower_confidence_bound(int(counted), n, alpha)
        if p_a >= 0.5:
            predictions[i], radii[i] = chosen, sigma * norm.ppf(p_a)
    result = summarise(predictions, radii, y, sigma=sigma, n=n, alpha=alpha)
    result.update(n0=n0, seconds=time.perf_counter() - start)
    return result


def summarise(predictions: np.ndarray, radii: np.ndarray, y: np.ndarray, *, sigma: float, n: int, alpha: float) -> dict:
    """report.json's ``smoothing`` section: certified accuracy against the L2 radius (a sample counts
    at radius r when g is right and certified beyond r), the abstain rate, the median certified
    radius over all samples (0 where g abstains or is wrong) and the largest radius ``n`` allows."""
    correct = predictions == y  # (N,) an abstention is never correct
    certified = np.where(correct, radii, 0.0)  # (N,)
    cap = largest_radius(sigma, n, alpha)
    grid = sorted({0.0, *(round(sigma * f, 6) for f in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)), math.floor(cap * 1e6) / 1e6})
    return {
        "method": "smoothing",
        "sigma": sigma,
        "n": n,
        "alpha": alpha,
        "samples": len(y),
        "certified_accuracy": float(correct.mean()) if len(y) else 0.0,  # at radius 0: g's accuracy
        "abstain_rate": float((predictions == ABSTAIN).mean()) if len(y) else 0.0,
        "median_radius": float(np.median(certified)) if len(y) else 0.0,
        "largest_radius": cap,
        "curve": [
            {"radius": r, "certified_accuracy": float((correct & (radii >= r)).mean()) if len(y) else 0.0} for r in grid
        ],
        "predictions": predictions.tolist(),
        "radii": radii.tolist(),
    }


def radius_as_snr(x: np.ndarray, radii: np.ndarray) -> list[float | None]:
    """Each clip's certified L2 radius as an SNR in dB, 20·log10(‖x‖₂ / R): the quietest perturbation
    the certificate rules out, in the unit audio budgets use (None where R is 0)."""
    norms = np.linalg.norm(np.asarray(x, dtype=np.float64).reshape(len(x), -1), axis=1)  # (N,)
    return [None if r <= 0 or v == 0 else float(20 * math.log10(v / r)) for v, r in zip(norms, radii, strict=True)]
