"""Sanity checks against gradient masking (Carlini et al. 2019, "On Evaluating Adversarial
Robustness", https://arxiv.org/abs/1902.06705, section 5; Athalye et al. 2018, "Obfuscated
Gradients Give a False Sense of Security", https://arxiv.org/abs/1802.00420).

A model whose gradients are zero, noisy or misleading (a saturated softmax, a hard rounding, a
defensively distilled model deployed at T = 1) looks robust to PGD without being robust. Each check
below compares attacks whose results must be ordered a certain way on an honest model; a check
that fails marks the evaluation "gradient masking suspected".

The comparisons allow for the noise of a finite test set, as binomial standard errors (``Z`` = 2 of
them, about 95 %) rather than a fixed margin, so a check fails on a real inconsistency, not on the
luck of 200 samples. Two attacks on the same samples are compared pairwise: the difference of their
accuracies is (n_ab - n_ba) / n, where n_ab samples survive one attack but not the other, and its
standard error is about sqrt(n_ab + n_ba) / n (McNemar's); so ``tol = Z sqrt(max(1, n_ab + n_ba)) / n``.
Points of the eps curve (accuracies only) use the unpaired error, ``Z sqrt((p1 q1 + p2 q2) / n)``.
At n = 200, PGD-10 0.485 against Square 0.460 with 20 samples that differ gives tol 0.045: not
flagged, while a masked model whose PGD accuracy is 0.9 and Square's 0.2 is. A number given as
``tol`` replaces them all (the old fixed margin).

==========================  ===========================================================  ==========
check                       passes when                                                  catches
==========================  ===========================================================  ==========
``accuracy_falls_with_eps`` PGD accuracy along the eps curve never rises by more than tol  noisy grads
``large_eps_breaks``        PGD at an eps spanning the clip range leaves <= 0.1 accuracy  zero grads
``more_steps``              PGD with 5x the steps is not weaker than PGD (<= + tol)       noisy grads
``more_restarts``           PGD with 5 random restarts is not weaker (<= + tol)           noisy grads
``black_box_not_stronger``  Square (no gradients) is not stronger than PGD (>= - tol)     any masking
``noise_weaker``            PGD beats uniform noise in the eps-ball, overall and per sample  any masking
``loss_rises``              PGD raises the loss of most correctly classified samples     zero grads
==========================  ===========================================================  ==========

``black_box_not_stronger`` runs Square (ART's, squares of pixels) on image-shaped input (C, H, W) and
Square-1D (``attacks/square_1d.py``, segments of the waveform) on waveforms (1, T); on other input it
is reported as skipped (``passed: None``), not passed.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np

from ..api import get_attack
from ..seeding import seeded
from .robustness import DEFAULT_ATTACK_PARAMS, attack_key

SLACK = 1e-9  # float rounding: 0.175 >= 0.195 - 0.02 must hold
Z = 2.0  # standard errors a comparison allows (about 95 % two-sided)


def paired_tolerance(correct_a: np.ndarray, correct_b: np.ndarray, z: float = Z) -> float:
    """``z`` standard errors of the difference of two accuracies on the same samples (per-sample
    correctness ``correct_a``, ``correct_b``): ``z sqrt(max(1, discordant)) / n``."""
    discordant = int((np.asarray(correct_a) != np.asarray(correct_b)).sum())
    return z * math.sqrt(max(1, discordant)) / len(correct_a)


def unpaired_tolerance(p_a: float, p_b: float, n: int, z: float = Z) -> float:
    """``z`` standard errors of the difference of two accuracies measured on ``n`` samples each."""
    return max(z * math.sqrt((p_a * (1 - p_a) + p_b * (1 - p_b)) / n), 1 / n)


CHECKS = (
    "accuracy_falls_with_eps",
    "large_eps_breaks",
    "more_steps",
    "more_restarts",
    "black_box_not_stronger",
    "noise_weaker",
    "loss_rises",
)


SQUARE_NAMES = {"square": "Square", "square-1d": "Square-1D"}


def _predict(clf, name, x, y, eps, seed, **params):

    with seeded(seed):
        x_adv = get_attack(name, clf, eps=eps, **params).generate(x, y)
    return clf.predict(x_adv.astype(np.float32)).argmax(1)


def pgd_loss_trace(clf, x, y, *, eps, steps, eps_step=None, batch_size=128) -> np.ndarray:
    """Per-sample loss at each step of an L-inf PGD started at ``x`` (no random start).

    Written here rather than with ART's PGD because ART does not expose the loss per iteration; it
    uses only the estimator's ART interface (``loss_gradient`` and ``compute_loss``), so it sees the
    same loss as every ART attack. Returns an array (steps + 1, N); row 0 is the clean loss.
    """
    eps_step = 2.5 * eps / steps if eps_step is None else eps_step
    lo, hi = clf.clip_values if clf.clip_values is not None else (-np.inf, np.inf)
    trace = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]  # (B ...), (B)
        x_adv, rows = xb.copy(), []
        for step in range(steps + 1):
            rows.append(clf.compute_loss(x_adv, yb, reduction="none"))  # (B)
            if step == steps:
                break
            grad = clf.loss_gradient(x_adv, yb)  # (B ...)
            x_adv = np.clip(np.clip(x_adv + eps_step * np.sign(grad), xb - eps, xb + eps), lo, hi)
            x_adv = x_adv.astype(xb.dtype)
        trace.append(np.stack(rows))  # (steps+1 B)
    return np.concatenate(trace, axis=1)  # (steps+1 N)


def _check(name, passed, detail, **values):
    return {
        "name": name,
        "passed": passed,
        "detail": detail,
        "values": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()},
    }


def gradient_masking_checks(
    clf,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    pgd: dict | None = None,
    curve: list[dict] | None = None,
    tol: float | None = None,
    steps_factor: int = 5,
    restarts: int = 5,
    large_eps: float | None = None,
    large_eps_max_accuracy: float = 0.1,
    square_max_iter: int = 300,
    seed: int = 0,
) -> dict:
    """Run the gradient-masking checks of this module on ``clf`` at L-inf budget ``eps``.

    Args:
        clf: an ART classifier with ``clip_values`` (an ``SSMClassifier``).
        x, y: test inputs (natural shape) and class indices.
        eps: the budget of the headline robust accuracy.
        pgd: parameters of the reference PGD (default: the report's PGD-10).
        curve: an ``evaluate_robustness`` curve to check for monotonicity (its PGD key); computed at
            0, eps/2, eps, 2 eps when None.
        tol: a fixed accuracy slack for every comparison (absolute fraction); None (the default):
            ``Z`` binomial standard errors of each comparison (the module docstring).
        steps_factor, restarts: the "more steps" and "more restarts" PGD variants.
        large_eps: budget that must break the model (default: the whole clip range, where any
            input is reachable); ``large_eps_max_accuracy`` is the accuracy allowed there.
        square_max_iter: queries of the Square (or, on waveforms, Square-1D) attack: the black-box reference.
        seed: seeds every attack.

    Returns ``{"gradient_masking_suspected": bool, "checks": [{"name", "passed", "detail",
    "values"}, ...], "settings": {...}}``; ``passed`` is None for a check that could not run.
    """

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as inputs, and at least one; got {len(x)} inputs, {len(y)} labels")
    if clf.clip_values is None:
        raise ValueError("the gradient-masking checks need an estimator with clip_values")
    pgd = {**DEFAULT_ATTACK_PARAMS["pgd"], **(pgd or {})}
    key = attack_key("pgd", pgd)
    steps = int(pgd["max_iter"])
    lo, hi = (float(v) for v in clf.clip_values)
    large_eps = float(hi - lo) if large_eps is None else float(large_eps)
    checks = []

    pred_pgd = _predict(clf, "pgd", x, y, eps, seed, **pgd)
    correct_pgd = pred_pgd == y
    acc_pgd = float(correct_pgd.mean())

    if curve is None:
        curve = [
            {
                "eps": e,
                key: float((_predict(clf, "pgd", x, y, e, seed, **pgd) == y).mean())
                if e
                else float((clf.predict(x).argmax(1) == y).mean()),
            }
            for e in (0.0, eps / 2, eps, 2 * eps)
        ]
    points = [(p["eps"], p[key]) for p in sorted(curve, key=lambda p: p["eps"]) if key in p]
    n = len(y)

    def slack(a, b) -> float:  # per-sample correctness: paired; accuracies: unpaired
        if tol is not None:
            return tol
        if isinstance(a, float):
            return unpaired_tolerance(a, b, n)
        return paired_tolerance(a, b)

    rises = [
        (a, b, acc_b - acc_a)
        for (a, acc_a), (b, acc_b) in pairwise(points)
        if acc_b - acc_a > slack(acc_a, acc_b) + SLACK
    ]
    checks.append(
        _check(
            "accuracy_falls_with_eps",
            not rises,
            f"{key} accuracy along eps "
            + " -> ".join(f"{a:.3f}" for _, a in points)
            + (
                ""
                if not rises
                else f"; rises by {max(r[2] for r in rises):.3f} between eps {rises[0][0]:g} and {rises[0][1]:g}"
            ),
            eps=[e for e, _ in points],
            accuracy=[a for _, a in points],
        )
    )

    big = {**pgd, "max_iter": steps * steps_factor, "eps_step": None}
    acc_large = float((_predict(clf, "pgd", x, y, large_eps, seed, **big) == y).mean())
    checks.append(
        _check(
            "large_eps_breaks",
            acc_large <= large_eps_max_accuracy + SLACK,
            f"PGD-{steps * steps_factor} at eps {large_eps:g} (the whole clip range) leaves accuracy {acc_large:.3f} "
            f"(must be <= {large_eps_max_accuracy:g})",
            eps=large_eps,
            accuracy=acc_large,
        )
    )

    correct_steps = (
        _predict(clf, "pgd", x, y, eps, seed, **{**pgd, "max_iter": steps * steps_factor, "eps_step": None}) == y
    )
    acc_steps = float(correct_steps.mean())
    checks.append(
        _check(
            "more_steps",
            acc_steps <= acc_pgd + slack(correct_steps, correct_pgd) + SLACK,
            f"PGD-{steps * steps_factor} {acc_steps:.3f} vs {key} {acc_pgd:.3f}",
            accuracy=acc_steps,
            reference=acc_pgd,
            steps=steps * steps_factor,
        )
    )

    correct_restarts = _predict(clf, "pgd", x, y, eps, seed, **{**pgd, "num_random_init": restarts}) == y
    acc_restarts = float(correct_restarts.mean())
    checks.append(
        _check(
            "more_restarts",
            acc_restarts <= acc_pgd + slack(correct_restarts, correct_pgd) + SLACK,
            f"{key} with {restarts} restarts {acc_restarts:.3f} vs one start {acc_pgd:.3f}",
            accuracy=acc_restarts,
            reference=acc_pgd,
            restarts=restarts,
        )
    )

    shape = tuple(clf.input_shape)
    # Square's squares of pixels on images; on waveforms the same search with 1-D segments
    black_box = "square" if len(shape) == 3 else "square-1d" if len(shape) == 2 and shape[0] == 1 else None
    if black_box is not None:
        pred_square = _predict(clf, black_box, x, y, eps, seed, max_iter=square_max_iter)
        acc_square = float((pred_square == y).mean())
        checks.append(
            _check(
                "black_box_not_stronger",
                acc_square >= acc_pgd - slack(pred_square == y, correct_pgd) - SLACK,
                f"{SQUARE_NAMES[black_box]} ({square_max_iter} queries, no gradients) {acc_square:.3f} "
                f"vs {key} {acc_pgd:.3f}",
                accuracy=acc_square,
                reference=acc_pgd,
                attack=black_box,
            )
        )
    else:
        checks.append(
            _check(
                "black_box_not_stronger",
                None,
                f"skipped: Square needs images (C, H, W) or waveforms (1, T); this estimator takes {shape}",
            )
        )

    correct_noise = _predict(clf, "noise", x, y, eps, seed) == y
    acc_noise = float(correct_noise.mean())
    noise_only = float((~correct_noise & correct_pgd).mean())  # broken by noise, not by PGD
    checks.append(
        _check(
            "noise_weaker",
            acc_pgd <= acc_noise + slack(correct_noise, correct_pgd) + SLACK
            and noise_only <= slack(correct_noise, correct_pgd) + SLACK,
            f"uniform noise {acc_noise:.3f} vs {key} {acc_pgd:.3f}; noise breaks {noise_only:.3f} of the samples "
            f"PGD does not",
            accuracy=acc_noise,
            reference=acc_pgd,
            noise_only=noise_only,
        )
    )

    clean_correct = clf.predict(x).argmax(1) == y
    trace = pgd_loss_trace(clf, x, y, eps=eps, steps=steps)  # (steps+1 N)
    rise = trace[-1, clean_correct] - trace[0, clean_correct]  # (n correct)
    rose = float((rise > 0).mean()) if rise.size else 0.0
    checks.append(
        _check(
            "loss_rises",
            rose > 0.5,
            f"over {steps} PGD steps the loss rose for {rose:.3f} of the {int(clean_correct.sum())} correctly "
            f"classified samples (mean loss {trace[0].mean():.4f} -> {trace[-1].mean():.4f})",
            fraction_rising=rose,
            mean_loss=[float(v) for v in trace.mean(axis=1)],
        )
    )

    return {
        "gradient_masking_suspected": any(c["passed"] is False for c in checks),
        "checks": checks,
        "settings": {
            "eps": eps,
            "reference": key,
            "tol": tol if tol is not None else f"binomial, {Z:g} standard errors",
            "steps_factor": steps_factor,
            "restarts": restarts,
            "large_eps": large_eps,
            "large_eps_max_accuracy": large_eps_max_accuracy,
            "square_max_iter": square_max_iter,
            "samples": int(len(y)),
            "seed": seed,
        },
    }
