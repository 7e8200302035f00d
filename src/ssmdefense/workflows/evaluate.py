"""``evaluate_checkpoints``: what ``ssmdefense evaluate`` does, with the same numbers and the same files::

    from ssmdefense.workflows import evaluate_checkpoints
    report = evaluate_checkpoints(checkpoint="runs/ads", attacks=["pgd", "autoattack"], samples=200)
    report.best["robust_accuracy"]["autoattack"], report.gap, report.out / "report.md"

It takes an ``EvaluateConfig`` or its fields as keywords, checks every name, value and file before any
work (``CheckpointError`` for a missing or corrupt checkpoint, ``UnknownNameError`` for an unknown
attack or dataset, ``OptionError`` for a bad setting), and writes report.json, report.md and plots/
under a temporary name that appears only when complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import progress
from ..api import get_attack
from ..certification.smoothing import DEFAULT_N
from ..checkpoint import load
from ..data.base import LazyDataset
from ..data.stream import materialise
from ..errors import OptionError, SSMDefenseError
from ..evaluation.audio import audio_budget, audio_robustness
from ..evaluation.components import analyse_components, find_body
from ..evaluation.report import read_report, write_report
from ..evaluation.robustness import (
    DEFAULT_AA_SNR_DB,
    DEFAULT_ATTACK_PARAMS,
    aa_attack,
    autoattack_check,
    best_last_gap,
    evaluate_robustness,
)
from ..evaluation.sanity import gradient_masking_checks
from ..plugins import registry
from ..seeding import seeded
from ..validation import is_number
from .checkpoints import CheckpointWork, config_of, find_checkpoints, load_test_data
from .common import check_eps, check_report_out, resolve_device, staged_directory, use_threads
from .evaluate_certified import (
    certified_samples,
    certified_section,
    certify_config,
    check_bounds_apply,
    check_certify_settings,
)

if TYPE_CHECKING:
    from ..data.base import Dataset
    from ..estimators import SSMClassifier

AUDIO_ATTACKS = ("snr-pgd", "time-shift", "speed")  # what evaluate adds on a waveform audio checkpoint
DEFAULT_EVAL_EPS_FACTORS = (1.0, 0.5, 1.5, 2.0)  # evaluate's eps list at these multiples of the run's eps
ANALYSES = ("components",)


@dataclass
class EvaluateConfig(CheckpointWork):
    """Every setting of ``ssmdefense evaluate`` (None: the checkpoint's or the toolkit's default).

    checkpoint: a run directory (its best and last checkpoints) or one checkpoint (``run/last``).
    attacks: registered attack names (``pgd`` runs 10 steps: ``pgd-10``).
    eps: eps values, the first the headline one (default: the run's eps, then 0.5x, 1.5x, 2x of it).
    attack_params: ``{attack: {key: value}}``, the ``-p ATTACK.KEY=VALUE`` settings.
    checks: the gradient-masking sanity checks (about 25 PGD-10 runs).
    analysis: extra analyses, from ``ANALYSES``; analysis_samples: train and test samples they use.
    snr_db: audio (waveform) checkpoints: SNRs of the snr-pgd curve; the time-shift and speed attacks
        run too. Empty skips all three.
    aa_samples: AutoAttack (``evaluation.robustness.autoattack_check``: the standard one, the audio
        ensemble for waveforms) on the first N samples, beside FGSM and PGD-10 on the same ones (None:
        100 for waveform checkpoints, 0 for others; 0 skips it). aa_snr_db: the audio ensemble's SNR ball.
    certify: certification methods (``certification.METHODS``: ibp, smoothing, ...) run on the AutoAttack
        samples (no AutoAttack: the first 100), beside the empirical accuracy on them
        (``workflows.evaluate_certified``); bound methods at eps, eps/2, eps/4, smoothing at
        ``certify_sigma`` with ``certify_n`` votes a sample. Empty: nothing is certified.
    dataset, data_dir, dataset_params: the test data (default: the run's, with its folder and parameters).
    out: where report.json, report.md and plots/ go (default: ``<run>/evaluation``); replaced if present.
    """

    checkpoint: Path
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    eps: list[float] | None = None
    samples: int | None = None
    attack_params: dict = field(default_factory=dict)
    checks: bool = True
    analysis: list[str] = field(default_factory=list)
    analysis_samples: int = 200
    snr_db: list[float] = field(default_factory=lambda: [40.0, 30.0, 20.0])
    aa_samples: int | None = None
    aa_snr_db: float = DEFAULT_AA_SNR_DB
    certify: list[str] = field(default_factory=list)
    certify_sigma: float = 0.25
    certify_n: int = DEFAULT_N
    out: Path | None = None
    PATHS: ClassVar[tuple[str, ...]] = ("checkpoint", "data_dir", "out")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("attacks", "eps", "analysis", "snr_db", "certify"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, [value] if isinstance(value, (str, int, float)) else list(value))


@dataclass
class EvaluationReport:
    """What ``ssmdefense evaluate`` writes to ``report.json`` (and prints with ``--json``, less ``plots``).

    config: checkpoint, dataset, attacks, eps, eps_list, samples, attack_params, seed, checks,
        analysis, sequence, sequence_params (and snr_db for audio checkpoints).
    best, last (a run directory) or checkpoint (one checkpoint): ``{"epoch", **evaluate_robustness}``
        plus ``sanity`` (checks), ``audio`` (audio checkpoints), ``autoattack`` (aa_samples),
        ``certified`` (certify: ``{method: {"eps" | "sigma", "certified_accuracy", "curve", "samples",
        "violation", ...}}``) and ``components`` (analysis); ``last``
        is ``best`` when both are the same epoch.
    gap: best minus last, when both are there. gradient_masking_suspected: with checks, whether any
        checkpoint fails one. classes: class names, when the dataset has them. budget: audio only, the
        eps as SNR in dB. plots: the PNG files written beside the report.
    out: the directory written (not in the JSON).
    """

    config: dict
    best: dict | None = None
    last: dict | None = None
    checkpoint: dict | None = None
    gap: dict | None = None
    gradient_masking_suspected: bool | None = None
    classes: list | None = None
    budget: dict | None = None
    plots: list | None = None
    out: Path | None = None

    @property
    def results(self) -> dict[str, dict]:
        """The evaluated checkpoints' sections: ``{"best": ..., "last": ...}`` or ``{"checkpoint": ...}``."""
        return {k: getattr(self, k) for k in ("best", "last", "checkpoint") if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        """The JSON of ``report.json`` (optional sections only when present, in the file's order)."""
        d = {"config": self.config}
        for key in ("classes", "budget"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d.update(self.results)
        for key in ("gap", "gradient_masking_suspected", "plots"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: dict, out: Path | None = None) -> EvaluationReport:
        return cls(
            config=d["config"],
            **{
                k: d.get(k)
                for k in (
                    "best",
                    "last",
                    "checkpoint",
                    "gap",
                    "gradient_masking_suspected",
                    "classes",
                    "budget",
                    "plots",
                )
            },
            out=out,
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EvaluationReport:
        """The report of a finished evaluation (``<run>/evaluation`` or its ``--out``)."""
        return cls.from_dict(read_report(directory, "evaluation"), out=Path(directory))


def evaluate_checkpoints(config: EvaluateConfig | None = None, **settings) -> EvaluationReport:
    """Evaluate a run's best and last checkpoints, or one checkpoint (``ssmdefense evaluate``): clean,
    per-attack, per-class and per-eps accuracy, the gradient-masking checks, the audio attacks and the
    analyses; write report.json, report.md and plots/ to ``out``. Everything is checked before any work;
    on any error nothing half-written remains."""
    c = config_of(EvaluateConfig, config, settings)
    if c.out is not None:
        check_report_out(c.out)
    attacks, attack_params = _check_evaluate(c)
    stems = find_checkpoints(c.checkpoint)
    device_type = resolve_device(c.device, c.threads)
    clfs = {k: load(s, device_type=device_type) for k, s in stems.items()}
    first = next(iter(clfs.values()))
    use_threads(c.threads, first.is_audio)
    eps_list = _eps_list(c, first)
    if "components" in c.analysis:
        for clf in clfs.values():
            find_body(clf)  # a model without SSM blocks fails here, before any work
    name, natural_x, y, data = load_test_data(first, c.dataset, c.samples, c.data_dir, c.dataset_params)
    x = first.prepare_inputs(natural_x)
    for a in attacks:  # bad attack parameters fail here, before any work
        get_attack(a, first, eps=eps_list[0], **{**DEFAULT_ATTACK_PARAMS.get(a, {}), **attack_params.get(a, {})})
    snrs = list(c.snr_db)
    waveform = first.is_audio and tuple(first.input_shape) == first.natural_shape
    audio = bool(snrs) and waveform
    aa_samples = c.aa_samples if c.aa_samples is not None else (100 if waveform else 0)
    if audio:
        for a in AUDIO_ATTACKS:
            get_attack(a, first, **{**({"snr_db": snrs[0]} if a == "snr-pgd" else {}), **attack_params.get(a, {})})
    check_bounds_apply(c.certify, first, x, y, eps_list[0])  # a model the bounds cannot go through fails here
    out = c.out
    if out is None:
        out = (c.checkpoint if c.checkpoint.is_dir() else c.checkpoint.parent) / "evaluation"
    report = EvaluationReport(
        config={
            "checkpoint": str(c.checkpoint),
            "dataset": name,
            "attacks": attacks,
            "eps": eps_list[0],
            "eps_list": sorted(set(eps_list)),
            "samples": len(y),
            "attack_params": attack_params,
            "seed": c.seed,
            "checks": c.checks,
            "analysis": list(c.analysis),
            "sequence": first.sequence,
            "sequence_params": first.sequence_params,
            "aa_samples": min(aa_samples, len(y)),
            "select_on": first.checkpoint_meta.get("extra", {}).get("select_on"),
        },
        classes=list(data.classes) if getattr(data, "classes", None) else None,
        out=out,
    )
    if first.is_audio:
        report.budget = audio_budget(first, natural_x, eps_list[0])
        if audio:
            report.config["snr_db"] = sorted(snrs, reverse=True)
    report.config.update(certify_config(c, certified_samples(aa_samples, len(y))))
    measure = {"attacks": attacks, "attack_params": attack_params, "audio": audio, "aa_samples": aa_samples}
    with staged_directory(out, overwrite=True) as tmp:
        for which, clf in clfs.items():
            epoch = clf.checkpoint_meta.get("extra", {}).get("epoch")
            if which == "last" and epoch is not None and report.best is not None and report.best["epoch"] == epoch:
                report.last = report.best  # the same epoch's weights: nothing new to measure
                continue
            result = _evaluate_one(c, clf, which, (x, y, natural_x), data, eps_list, **measure)
            setattr(report, which, {"epoch": epoch, **result})
        if report.best is not None and report.last is not None:
            report.gap = best_last_gap(report.best, report.last)
        if c.checks:
            report.gradient_masking_suspected = any(
                r["sanity"]["gradient_masking_suspected"] for r in report.results.values()
            )
        report.plots = write_report(tmp, report.to_dict(), f"ssmdefense evaluate: {c.checkpoint}")
    return report


def _check_evaluate(c: EvaluateConfig) -> tuple[list[str], dict]:
    """The settings that need no checkpoint: (the attacks, their parameters per attack)."""
    c.check()
    check_certify_settings(c)
    if c.analysis_samples < 1:
        raise OptionError("analysis_samples", "--analysis-samples", "must be at least 1")
    if c.aa_samples is not None and not is_number(c.aa_samples, integer=True) or (c.aa_samples or 0) < 0:
        raise OptionError("aa_samples", "--aa-samples", f"must be an integer >= 0; got {c.aa_samples!r}")
    attacks = list(c.attacks)
    if not attacks:
        raise OptionError("attacks", "--attacks", "give at least one attack")
    for a in attacks:
        registry("attacks").get(a)
    known = [*attacks, *AUDIO_ATTACKS]
    for a, params in c.attack_params.items():
        if a not in known or not isinstance(params, dict):
            raise OptionError(
                "attack_params",
                "-p",
                f"expected {{attack: {{key: value}}}} with attack one of {', '.join(known)}; got {a!r}: {params!r}",
            )
    for a in c.analysis:
        if a not in ANALYSES:
            raise OptionError("analysis", "--analysis", f"{a!r} is not one of {', '.join(ANALYSES)}")
    if c.eps is not None and (not c.eps or any(e < 0 for e in c.eps)):
        raise OptionError("eps", "--eps", f"expected non-negative numbers; got {c.eps!r}")
    return attacks, {a: dict(p) for a, p in c.attack_params.items()}


def _eps_list(c: EvaluateConfig, first: SSMClassifier) -> list[float]:
    """The budgets to evaluate at: ``--eps``, else multiples of the eps the run recorded."""
    eps_list = c.eps
    if eps_list is None:
        run_eps = first.checkpoint_meta.get("extra", {}).get("eps")
        if run_eps is None:
            raise SSMDefenseError("this checkpoint does not record its eps; pass --eps")
        eps_list = [round(f * run_eps, 10) for f in DEFAULT_EVAL_EPS_FACTORS]
    if any(e <= 0 for e in eps_list[:1]):
        raise OptionError("eps", "--eps", "the first eps must be positive")
    for e in c.eps or []:
        check_eps(e, first.clip_values)
    return eps_list


def _evaluate_one(
    c: EvaluateConfig,
    clf: SSMClassifier,
    which: str,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    data: Dataset | LazyDataset,
    eps_list: list[float],
    *,
    attacks: list[str],
    attack_params: dict,
    audio: bool,
    aa_samples: int,
) -> dict:
    """One checkpoint's section of the report, on ``arrays`` = (x, y, natural x): the attacks at eps and
    over the eps list, and, as asked, the gradient-masking checks, the audio attacks, AutoAttack, the
    certified accuracy and the component analysis."""
    x, y, _ = arrays
    eps = eps_list[0]
    result = evaluate_robustness(
        clf,
        x,
        y,
        eps=eps,
        attacks=attacks,
        eps_list=sorted({0.0, *eps_list}),
        attack_params=attack_params,
        seed=c.seed,
    )
    if c.checks:
        curve = result["curve"] if "pgd" in attacks else None
        result["sanity"] = gradient_masking_checks(
            clf, x, y, eps=eps, curve=curve, pgd=attack_params.get("pgd"), seed=c.seed
        )
    if audio:
        result["audio"] = audio_robustness(clf, x, y, snrs=list(c.snr_db), seed=c.seed, attack_params=attack_params)
    if aa_samples:
        n = min(aa_samples, len(y))
        progress.say(f"{aa_attack(clf)} (standard) on {n} samples of {which}")
        result["autoattack"] = autoattack_check(clf, x[:n], y[:n], eps=eps, seed=c.seed, snr_db=c.aa_snr_db)
    if c.certify:  # on AutoAttack's samples, or the first CERTIFY_SAMPLES
        n = certified_samples(aa_samples, len(y))
        measured = {"eps": eps, "samples": n, "attacks": attacks, "attack_params": attack_params}
        result["certified"] = certified_section(c, clf, which, arrays, result, **measured)
    if "components" in c.analysis:
        result["components"] = _components(clf, data, x, y, eps, c.analysis_samples, c.seed)
    return result


def _components(
    clf: SSMClassifier, data: Dataset, x_test: np.ndarray, y_test: np.ndarray, eps: float, n: int, seed: int
) -> dict:
    """Component analysis under PGD-10 at ``eps`` on the first ``n`` train and test samples."""

    attack = get_attack("pgd", clf, eps=eps, max_iter=10)
    if isinstance(data, LazyDataset):
        x_train, y_train = materialise(data.train, None, n)
    else:
        x_train, y_train = data.x_train[:n], data.y_train[:n]
    with seeded(seed):
        return analyse_components(
            clf, {"train": (clf.prepare_inputs(x_train), y_train), "test": (x_test[:n], y_test[:n])}, attack
        )
