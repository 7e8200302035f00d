"""``ssmdefense evaluate --certify ibp,smoothing``: certified accuracy of each evaluated checkpoint beside
the empirical accuracy on the same samples, by ``certify_checkpoint``'s own code (``certify_samples``).

The certified samples are the first ``samples`` evaluated ones: the ones AutoAttack ran on when it ran
(``--aa-samples``), else the first ``CERTIFY_SAMPLES``. A bound method (``ibp``, ``crown``: every
method but ``smoothing``) certifies the model in the L-inf ball at the headline eps and a quarter and
half of it; the empirical side at each of those eps is the worst case, per sample, over the
evaluation's eps-budget attacks on the same samples (and AutoAttack's worst case at the headline eps).
Smoothing certifies the smoothed classifier g in L2 balls; its empirical side is SmoothAdv on g
(``certification.smoothing_attack``), which the model's L-inf attacks do not bound. A certified
accuracy above the empirical one is a ``violation``: a bug, since a certificate is a lower bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import progress
from ..certification import METHODS, certify
from ..errors import OptionError
from ..evaluation.robustness import attack_key, evaluate_robustness
from .certify import CertifyConfig, certify_samples

if TYPE_CHECKING:
    from ..estimators import SSMClassifier
    from .evaluate import EvaluateConfig

CERTIFY_SAMPLES = 100  # certified samples when AutoAttack does not run (certify's default too)
PER_SAMPLE = ("certified", "predictions", "radii", "snr_db")  # left out of report.json


def check_certify_settings(c: EvaluateConfig) -> list[str]:
    """The methods to certify with, each once, in the order given; ``OptionError`` for an unknown one
    or a bad ``certify_sigma`` / ``certify_n``."""
    methods = list(dict.fromkeys(c.certify))
    for m in methods:
        if m not in METHODS:
            raise OptionError("certify", "--certify", f"{m!r} is not one of {', '.join(METHODS)}")
    if "smoothing" in methods and not (isinstance(c.certify_sigma, (int, float)) and c.certify_sigma > 0):
        raise OptionError("certify_sigma", "--certify-sigma", f"must be positive; got {c.certify_sigma!r}")
    if "smoothing" in methods and not (isinstance(c.certify_n, int) and c.certify_n >= 1):
        raise OptionError("certify_n", "--certify-n", f"must be an integer >= 1; got {c.certify_n!r}")
    return methods


def certified_samples(aa_samples: int, available: int) -> int:
    """How many of the first samples are certified: AutoAttack's, else ``CERTIFY_SAMPLES``; at most ``available``."""
    return min(aa_samples or CERTIFY_SAMPLES, available)


def certify_config(c: EvaluateConfig, samples: int) -> dict:
    """report.json's config entries of the certification: the methods, samples and smoothing's settings
    (nothing without ``c.certify``, so the report is as before)."""
    if not c.certify:
        return {}
    entries = {"certify": list(dict.fromkeys(c.certify)), "certify_samples": samples}
    if "smoothing" in c.certify:
        entries.update(certify_sigma=c.certify_sigma, certify_n=c.certify_n)
    return entries


def check_bounds_apply(methods: list[str], clf: SSMClassifier, x: np.ndarray, y: np.ndarray, eps: float) -> None:
    """Fails (the method's clear error naming the layer) when a bound method cannot bound ``clf``:
    each bounds one sample at ``eps`` before any work."""
    for m in methods:
        if m != "smoothing":
            certify(clf, x[:1], y[:1], method=m, eps=eps)


def certified_section(
    c: EvaluateConfig,
    clf: SSMClassifier,
    which: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    result: dict,
    *,
    eps: float,
    samples: int,
    attacks: list[str],
    attack_params: dict,
) -> dict:
    """One checkpoint's ``certified`` section, ``{method: {"eps" | "sigma", "certified_accuracy", "curve",
    "samples", "violation", ...}}``, on the first ``samples`` of ``data`` = (x, y, natural x); ``result``
    is the checkpoint's evaluation so far (which ``attacks`` use eps, AutoAttack's worst case at ``eps``)."""
    x, y, natural_x = (a[:samples] for a in data)  # (n, ...) each
    info = result.get("attacks", {})
    budgeted = [a for a in attacks if info.get(attack_key(a, attack_params.get(a)), {}).get("uses_eps", True)]
    aa = result.get("autoattack")
    empirical = Empirical(clf, x, y, budgeted, attack_params, c.seed, autoattack=(eps, aa) if aa else None)
    sections = {}
    for m in dict.fromkeys(c.certify):
        progress.say(f"certifying by {m} on {samples} samples of {which}")
        settings = CertifyConfig(
            checkpoint=c.checkpoint,
            method=m,
            eps=eps,
            sigma=c.certify_sigma,
            n=c.certify_n,
            samples=samples,
            attack_check=m == "smoothing",  # the bounds are checked by the evaluation's attacks instead
            seed=c.seed,
        )
        found = certify_samples(settings, clf, x, y, natural_x)
        sections[m] = _smoothing_section(found) if m == "smoothing" else _bound_section(found, empirical)
    return sections


def _bound_section(found: dict, empirical: Empirical) -> dict:
    """A bound method's section: its curve with the empirical accuracy at each eps beside it, and
    ``violation`` when any certified accuracy exceeds it."""
    curve = [{**p, "empirical_accuracy": empirical.at(p["eps"])} for p in found["curve"]]
    kept = {k: v for k, v in found.items() if k not in PER_SAMPLE and k != "curve"}
    violation = any(p["certified_accuracy"] > p["empirical_accuracy"] for p in curve)
    return {**kept, "curve": curve, "empirical_attacks": empirical.names, "violation": violation}


def _smoothing_section(found: dict) -> dict:
    """Smoothing's section: the certified curve over L2 radii, SmoothAdv on the smoothed classifier at
    sigma/2 and sigma, and ``violation`` when it confidently flips a sample certified beyond its radius."""
    kept = {k: v for k, v in found.items() if k not in PER_SAMPLE}
    return {**kept, "violation": bool(found.get("violations"))}


class Empirical:
    """The empirical robust accuracy of ``clf`` on (x, y) at each eps asked for: a sample counts only
    if it is right and no attack of ``attacks`` (eps-budget attacks; none: PGD-10) fools it, and at
    ``autoattack``'s eps, (eps, its ``autoattack_check`` on the same samples), AutoAttack's worst case
    bounds it too. Each eps is attacked once, on first use."""

    def __init__(
        self,
        clf: SSMClassifier,
        x: np.ndarray,
        y: np.ndarray,
        attacks: list[str],
        attack_params: dict,
        seed: int,
        autoattack: tuple[float, dict] | None = None,
    ):
        self.clf, self.x, self.y, self.seed = clf, x, y, seed
        self.attacks, self.params, self.autoattack = attacks or ["pgd"], attack_params, autoattack
        self.names = [attack_key(a, attack_params.get(a)) for a in self.attacks]
        self.names += [autoattack[1]["attack"]] if autoattack else []
        self.found: dict[float, float] = {}

    def at(self, eps: float) -> float:
        """The empirical accuracy at ``eps``: an upper bound on every certified accuracy there."""
        if eps not in self.found:
            r = evaluate_robustness(
                self.clf, self.x, self.y, eps=eps, attacks=self.attacks, attack_params=self.params, seed=self.seed
            )
            accuracies = [r["clean_accuracy"], *r["robust_accuracy"].values()]
            accuracies += [r["worst_case"]["robust_accuracy"]] if "worst_case" in r else []
            if self.autoattack and np.isclose(eps, self.autoattack[0]):
                accuracies.append(self.autoattack[1]["worst_case"])
            self.found[eps] = float(min(accuracies))
        return self.found[eps]
