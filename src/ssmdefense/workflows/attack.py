"""``attack_checkpoint``: one attack on a checkpoint's test data, what ``ssmdefense attack`` does."""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..api import get_attack
from ..checkpoint import load
from ..errors import OptionError
from ..evaluation.attack_report import attack_report, write_attack_report
from ..evaluation.audio import snr_db, snr_summary
from ..plugins import registry
from ..seeding import seeded
from .checkpoints import CheckpointWork, config_of, find_checkpoints, load_test_data
from .common import check_eps, check_report_out, resolve_device, staged_directory, use_threads

if TYPE_CHECKING:
    from ..estimators import SSMClassifier


@dataclass
class AttackConfig(CheckpointWork):
    """Every setting of ``ssmdefense attack``: one attack on one checkpoint's test data.

    checkpoint: a checkpoint (``run/last``) or a run directory (its best checkpoint).
    eps: the budget (default: the run's eps when the attack takes one, else the attack's default);
        params: the attack's other parameters (``-p``), eps not among them when ``eps`` is given.
    save_examples: a ``.npz`` file for x, x_adv, y, pred_clean and pred_adv.
    out: a report directory (``evaluation.attack_report``: report.json, report.md, report.html, plots/,
        and for audio examples/); its parent must exist; an existing report there is replaced.
    """

    checkpoint: Path
    attack: str
    eps: float | None = None
    params: dict = field(default_factory=dict)
    samples: int | None = None
    save_examples: Path | None = None
    out: Path | None = None
    PATHS: ClassVar[tuple[str, ...]] = ("checkpoint", "data_dir", "save_examples", "out")


@dataclass
class AttackResult:
    """What ``ssmdefense attack --json`` prints: accuracies before and after, the perturbation's size.

    snr: audio (waveform) checkpoints: the perturbations' SNR (``evaluation.audio.snr_summary``: min,
    mean and median dB, perturbed, silent_perturbed), flat in the JSON. examples: the ``.npz`` written.
    arrays: x, x_adv, y, pred_clean, pred_adv (numpy; not in the JSON).
    """

    checkpoint: str
    dataset: str
    attack: str
    params: dict
    samples: int
    clean_accuracy: float
    adversarial_accuracy: float
    max_linf: float
    mean_l2: float
    snr: dict | None = None
    examples: str | None = None
    arrays: dict | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "checkpoint",
                "dataset",
                "attack",
                "params",
                "samples",
                "clean_accuracy",
                "adversarial_accuracy",
                "max_linf",
                "mean_l2",
            )
        }
        d.update(self.snr or {})
        if self.examples is not None:
            d["examples"] = self.examples
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AttackResult:
        named = {f.name for f in dataclasses.fields(cls)} - {"snr", "arrays"}
        snr = {k: v for k, v in d.items() if k not in named}
        return cls(**{k: v for k, v in d.items() if k in named}, snr=snr or None)


def attack_checkpoint(config: AttackConfig | None = None, **settings) -> AttackResult:
    """Run one attack on a checkpoint's test data (``ssmdefense attack``): clean and adversarial
    accuracy, the perturbation's size (and, for audio, its SNR); ``save_examples`` writes the arrays,
    ``out`` a report directory (report.json, report.md, report.html, examples). Every setting is
    checked before any work; on any error nothing half-written remains."""

    c = config_of(AttackConfig, config, settings)
    _check_attack(c)
    stem = next(iter(find_checkpoints(c.checkpoint).values()))
    clf = load(stem, device_type=resolve_device(c.device, c.threads))
    use_threads(c.threads, clf.is_audio)
    name, natural_x, y, data = load_test_data(clf, c.dataset, c.samples, c.data_dir, c.dataset_params)
    x = clf.prepare_inputs(natural_x)
    params = _attack_params(c, clf)
    adv = get_attack(c.attack, clf, **params)
    with seeded(c.seed):
        x_adv = adv.generate(x, y).astype(np.float32)
    result = _measure(clf, x, x_adv, y)
    result.checkpoint, result.dataset, result.attack, result.params = str(stem), name, c.attack, params
    if c.save_examples is not None:
        _save_npz(c.save_examples, result.arrays)
        result.examples = str(c.save_examples)
    if c.out is not None:
        _write_out(c, clf, result, natural_x, getattr(data, "classes", None))
    return result


def _check_attack(c: AttackConfig) -> None:
    """The settings that need no checkpoint: bad values, unknown names and unusable paths fail here."""
    c.check()
    registry("attacks").get(c.attack)
    if c.save_examples is not None and c.save_examples.suffix != ".npz":
        raise OptionError("save_examples", "--save-examples", "must end in .npz")
    if c.save_examples is not None and not c.save_examples.parent.exists():
        raise OptionError("save_examples", "--save-examples", f"directory {c.save_examples.parent} does not exist")
    if c.eps is not None and c.eps <= 0:
        raise OptionError("eps", "--eps", "must be positive")
    if c.out is not None:
        _check_out(c.out)


def _check_out(out: Path) -> None:
    """``out`` can become a report directory: its parent exists, it is no file and no run directory (an
    existing report directory is replaced, as ``evaluate --out`` replaces one)."""
    if not out.parent.is_dir():
        raise OptionError("out", "--out", f"directory {out.parent} does not exist")
    check_report_out(out)


def _attack_params(c: AttackConfig, clf: SSMClassifier) -> dict:
    """The attack's parameters: ``params`` with eps (``eps``, else the run's when the attack takes one)."""
    params = dict(c.params)
    if c.eps is not None:
        check_eps(c.eps, clf.clip_values)
    eps = c.eps
    if eps is None and "eps" not in params and "snr_db" not in params and _takes_eps(c.attack):
        eps = clf.checkpoint_meta.get("extra", {}).get("eps")
    if eps is not None:
        if "eps" in params:
            raise OptionError("eps", "--eps", "give eps once: --eps or -p eps=...")
        params["eps"] = eps
    return params


def _measure(clf: SSMClassifier, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray) -> AttackResult:
    """Accuracy before and after, the perturbation's size (and SNR for waveforms), the arrays; the
    result's names (checkpoint, dataset, attack, params) are left for the caller."""
    pred_clean = clf.predict(x).argmax(1)
    pred_adv = clf.predict(x_adv).argmax(1)
    delta = (x_adv - x).reshape(len(x), -1)  # (N D)
    result = AttackResult(
        checkpoint="",
        dataset="",
        attack="",
        params={},
        samples=len(y),
        clean_accuracy=float((pred_clean == y).mean()),
        adversarial_accuracy=float((pred_adv == y).mean()),
        max_linf=float(np.abs(delta).max()) if delta.size else 0.0,
        mean_l2=float(np.linalg.norm(delta, axis=1).mean()) if delta.size else 0.0,
        arrays={"x": x, "x_adv": x_adv, "y": y, "pred_clean": pred_clean, "pred_adv": pred_adv},
    )
    if clf.is_audio and tuple(clf.input_shape) == clf.natural_shape:  # waveforms: the perturbation's SNR
        result.snr = snr_summary(snr_db(x, x_adv))
    return result


def _save_npz(path: Path, arrays: dict) -> None:
    """``arrays`` as a compressed .npz at ``path``, written under a temporary name and then renamed."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_out(
    c: AttackConfig, clf: SSMClassifier, result: AttackResult, natural_x: np.ndarray, classes: list | None
) -> None:
    """The report directory ``c.out``, built under a temporary name and moved into place when complete."""
    config = {
        "checkpoint": result.checkpoint,
        "dataset": result.dataset,
        "attack": c.attack,
        "eps": result.params.get("eps"),
        "params": result.params,
        "samples": result.samples,
        "seed": c.seed,
        "sequence": clf.sequence,
        "sequence_params": clf.sequence_params,
    }
    epoch = clf.checkpoint_meta.get("extra", {}).get("epoch")
    report = attack_report(result.to_dict(), config, result.arrays, clf.nb_classes, epoch, classes)
    with staged_directory(c.out, overwrite=True) as tmp:
        write_attack_report(tmp, clf, report, result.arrays, natural_x)


def _takes_eps(attack_name: str) -> bool:
    """Whether the run's eps is a sensible default for this attack: its factory takes ``eps`` with a
    default budget (attacks with another budget, such as snr-pgd or time-shift, accept eps=None and
    ignore it)."""
    if "eps" not in (registry("attacks").accepted_params(attack_name) or ["eps"]):
        return False
    factory = registry("attacks").get(attack_name).factory
    try:
        param = inspect.signature(factory).parameters.get("eps")
    except (TypeError, ValueError):
        return True
    return param is None or param.default is not None
