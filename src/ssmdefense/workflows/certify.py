"""``certify_checkpoint``: certified robustness of a saved checkpoint on its test data, what
``ssmdefense certify`` does; the result is written as JSON beside the run (``<run>/certification/``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import progress
from ..api import get_attack
from ..certification import METHODS, certify
from ..certification.smoothing import DEFAULT_ALPHA, DEFAULT_N, DEFAULT_N0, radius_as_snr
from ..certification.smoothing_attack import attack_check
from ..checkpoint import load
from ..errors import OptionError
from ..seeding import seeded
from .checkpoints import CheckpointWork, config_of, find_checkpoints, load_test_data
from .common import resolve_device, use_threads

if TYPE_CHECKING:
    from ..estimators import SSMClassifier


@dataclass
class CertifyConfig(CheckpointWork):
    """Every setting of ``ssmdefense certify``.

    checkpoint: a run directory (its best checkpoint) or one checkpoint (``run/last``).
    method: ``smoothing`` (randomized smoothing; ``sigma``, ``n0``, ``n``, ``alpha``: Cohen's CERTIFY) or
        ``ibp`` (interval bounds in the L-inf ball of ``eps``, default the run's; S4, S4D, DSS, S5, MLP on images);
        every other method of ``certification.METHODS`` is a bound in the L-inf ball, run as ``ibp`` is.
    samples: the first N test samples (default 100). batch_size: noisy copies per forward pass.
    attack_check: the empirical side: SmoothAdv on the smoothed classifier at radii sigma/2 and sigma
        (``certification.smoothing_attack``), PGD-20 at eps for ibp; any certified sample it breaks
        is a violation.
    out: the JSON file (default: ``<run>/certification/<method>.json``).
    """

    checkpoint: Path
    method: str = "smoothing"
    eps: float | None = None
    sigma: float = 0.25
    n0: int = DEFAULT_N0
    n: int = DEFAULT_N
    alpha: float = DEFAULT_ALPHA
    samples: int | None = 100
    batch_size: int = 1000
    attack_check: bool = True
    out: Path | None = None
    PATHS: ClassVar[tuple[str, ...]] = ("checkpoint", "data_dir", "out")


def certify_checkpoint(config: CertifyConfig | None = None, **settings) -> dict:
    """Certify a checkpoint on its first ``samples`` test samples; the result (also written to ``out``)."""
    c = config_of(CertifyConfig, config, settings)
    c.check()
    if c.method not in METHODS:
        raise OptionError("method", "--method", f"{c.method!r} is not one of {', '.join(METHODS)}")
    if c.out is not None and c.out.suffix != ".json":
        raise OptionError("out", "--out", "must end in .json")
    if c.eps is not None and not c.eps > 0:
        raise OptionError("eps", "--eps", f"must be positive; got {c.eps!r}")
    which, stem = next(iter(find_checkpoints(c.checkpoint).items()))
    clf = load(stem, device_type=resolve_device(c.device, c.threads))
    use_threads(c.threads, clf.is_audio)
    name, natural_x, y, _ = load_test_data(clf, c.dataset, c.samples, c.data_dir, c.dataset_params)
    x = clf.prepare_inputs(natural_x)
    result = certify_samples(c, clf, x, y, natural_x)
    if c.method != "smoothing":
        result.update(_against_autoattack(c.checkpoint, which, result))
    epoch = clf.checkpoint_meta.get("extra", {}).get("epoch")
    result = {"checkpoint": str(stem), "which": which, "dataset": name, "epoch": epoch, **result}
    out = (
        c.out or (c.checkpoint if c.checkpoint.is_dir() else c.checkpoint.parent) / "certification" / f"{c.method}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)  # whole or not at all
    result["out"] = str(out)
    return result


def certify_samples(c: CertifyConfig, clf: SSMClassifier, x: np.ndarray, y: np.ndarray, natural_x: np.ndarray) -> dict:
    """``c.method`` on (x, y) with ``c``'s settings (``natural_x``: x before ``prepare_inputs``): the
    method's result, with its ``curve`` and, with ``c.attack_check``, ``attack_check`` and ``violations``."""
    if c.method == "smoothing":
        return _smoothing(c, clf, x, y, natural_x)
    return _bounds(c, clf, x, y)


def _smoothing(c: CertifyConfig, clf: SSMClassifier, x: np.ndarray, y: np.ndarray, natural_x: np.ndarray) -> dict:
    """Randomized smoothing, checked by SmoothAdv at sigma/2 and sigma; audio radii also as SNR."""
    params = {"sigma": c.sigma, "n0": c.n0, "n": c.n, "alpha": c.alpha, "batch_size": c.batch_size, "seed": c.seed}
    result = certify(clf, x, y, method="smoothing", **params)
    if c.attack_check:  # the empirical side: an attack on the smoothed classifier at sigma/2 and sigma
        radii = (c.sigma / 2, c.sigma)
        checked = [attack_check(clf, x, y, result, r, batch_size=c.batch_size, seed=c.seed) for r in radii]
        result["attack_check"] = checked
        result["violations"] = sorted({i for r in checked for i in r["violations"]})
    if clf.is_audio and tuple(clf.input_shape) == clf.natural_shape:  # noise on the waveform: radii as SNR
        result["snr_db"] = radius_as_snr(natural_x, result["radii"])
        right = [snr for snr, p, t in zip(result["snr_db"], result["predictions"], y, strict=True) if snr and p == t]
        result["median_snr_db"] = float(np.median(right)) if right else None  # over the clips certified right
    return result


def _bounds(c: CertifyConfig, clf: SSMClassifier, x: np.ndarray, y: np.ndarray) -> dict:
    """Bounds by ``c.method`` (ibp, crown: every method but smoothing) at eps (default: the run's) and a
    quarter and half of it, checked by PGD-20 at eps: the result at eps, with the three in ``curve``."""
    eps = c.eps if c.eps is not None else clf.checkpoint_meta.get("extra", {}).get("eps")
    if eps is None:
        raise OptionError("eps", "--eps", "this checkpoint does not record its eps; pass --eps")
    start = time.perf_counter()
    result, curve = _curve(c.method, clf, x, y, (eps / 4, eps / 2, eps))
    result["curve"], result["seconds"] = curve, time.perf_counter() - start  # the bounds alone
    if c.attack_check:  # no attack may get inside a certified box
        pgd = get_attack("pgd", clf, eps=eps, eps_step=eps / 4, max_iter=20, num_random_init=1)
        with seeded(c.seed), progress.phase(f"attack check: PGD-20 at eps {eps:g}") as shown:
            broken = clf.predict(pgd.generate(x, y)).argmax(1) != y  # (N,)
            shown.done(f"{len(y)} samples, {int((~broken).sum())} not broken")
        result["attack_check"] = [{"eps": eps, "attack": "pgd-20", "attacked_accuracy": float(1 - broken.mean())}]
        result["violations"] = np.flatnonzero(np.array(result["certified"]) & broken).tolist()
    return result


def _curve(method: str, clf: SSMClassifier, x: np.ndarray, y: np.ndarray, points: tuple) -> tuple[dict, list]:
    """``method`` at each eps of ``points`` (ascending), bounding at each only the samples certified at
    the one before (at the first: those classified right). Nothing outside can be certified (a box
    inside a larger certified box is certified), so this only saves time, CROWN's above all: (the
    result at the last eps, the curve)."""
    candidates = clf.predict(x).argmax(1) == y  # (N,)
    curve = []
    for eps in points:
        found = certify(clf, x[candidates], y[candidates], method=method, eps=eps)
        certified = np.zeros(len(y), dtype=bool)
        certified[candidates] = found["certified"]
        result = {**found, "samples": len(y), "certified": certified.tolist()}
        result["certified_accuracy"] = float(certified.mean()) if len(y) else 0.0
        result["bounded"] = int(candidates.sum())  # the samples bounded at this eps
        curve.append({"eps": eps, "certified_accuracy": result["certified_accuracy"], "bounded": result["bounded"]})
        candidates = certified
    return result, curve


def _against_autoattack(checkpoint: Path, which: str, result: dict) -> dict:
    """The run's AutoAttack accuracy beside a bound's certified accuracy, when the run's report has one on
    the same first samples at the same eps: {"autoattack_accuracy", "exceeds_autoattack"} (a certified
    accuracy above it would be a wrong certificate), else {}."""
    report = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "report.json"
    if not report.is_file():
        return {}
    run = json.loads(report.read_text())
    aa = (run.get(which if which != "checkpoint" else checkpoint.name) or {}).get("autoattack")
    run_eps = run.get("config", {}).get("eps")
    if not aa or aa.get("samples") != result["samples"] or run_eps is None or abs(run_eps - result["eps"]) > 1e-12:
        return {}
    return {
        "autoattack_accuracy": aa["worst_case"],
        "exceeds_autoattack": result["certified_accuracy"] > aa["worst_case"],
    }
