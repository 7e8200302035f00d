"""``attack_checkpoint``: one attack on a checkpoint's test data, what ``ssmdefense attack`` does."""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..api import get_attack
from ..checkpoint import load
from ..errors import OptionError
from ..evaluation.audio import snr_db, snr_summary
from ..plugins import registry
from ..seeding import seeded
from .checkpoints import CheckpointWork, config_of, find_checkpoints, load_test_data
from .common import check_eps, resolve_device, use_threads


@dataclass
class AttackConfig(CheckpointWork):
    """Every setting of ``ssmdefense attack``: one attack on one checkpoint's test data.

    checkpoint: a checkpoint (``run/last``) or a run directory (its best checkpoint).
    eps: the budget (default: the run's eps when the attack takes one, else the attack's default);
        params: the attack's other parameters (``-p``), eps not among them when ``eps`` is given.
    save_examples: a ``.npz`` file for x, x_adv, y, pred_clean and pred_adv.
    """

    checkpoint: Path
    attack: str
    eps: float | None = None
    params: dict = field(default_factory=dict)
    samples: int | None = None
    save_examples: Path | None = None
    PATHS: ClassVar[tuple[str, ...]] = ("checkpoint", "data_dir", "save_examples")


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
    accuracy, the perturbation's size (and, for audio, its SNR); ``save_examples`` writes the arrays."""

    c = config_of(AttackConfig, config, settings)
    c.check()
    params = dict(c.params)
    registry("attacks").get(c.attack)
    if c.save_examples is not None and c.save_examples.suffix != ".npz":
        raise OptionError("save_examples", "--save-examples", "must end in .npz")
    if c.save_examples is not None and not c.save_examples.parent.exists():
        raise OptionError("save_examples", "--save-examples", f"directory {c.save_examples.parent} does not exist")
    if c.eps is not None and c.eps <= 0:
        raise OptionError("eps", "--eps", "must be positive")
    stem = next(iter(find_checkpoints(c.checkpoint).values()))
    clf = load(stem, device_type=resolve_device(c.device, c.threads))
    use_threads(c.threads, clf.is_audio)
    name, x, y, _ = load_test_data(clf, c.dataset, c.samples, c.data_dir, c.dataset_params)
    x = clf.prepare_inputs(x)
    if c.eps is not None:
        check_eps(c.eps, clf.clip_values)
    eps = c.eps
    if eps is None and "eps" not in params and "snr_db" not in params and _takes_eps(c.attack):
        eps = clf.checkpoint_meta.get("extra", {}).get("eps")
    if eps is not None:
        if "eps" in params:
            raise OptionError("eps", "--eps", "give eps once: --eps or -p eps=...")
        params["eps"] = eps
    adv = get_attack(c.attack, clf, **params)
    with seeded(c.seed):
        x_adv = adv.generate(x, y).astype(np.float32)
    pred_clean = clf.predict(x).argmax(1)
    pred_adv = clf.predict(x_adv).argmax(1)
    delta = (x_adv - x).reshape(len(x), -1)
    result = AttackResult(
        checkpoint=str(stem),
        dataset=name,
        attack=c.attack,
        params=params,
        samples=len(y),
        clean_accuracy=float((pred_clean == y).mean()),
        adversarial_accuracy=float((pred_adv == y).mean()),
        max_linf=float(np.abs(delta).max()) if delta.size else 0.0,
        mean_l2=float(np.linalg.norm(delta, axis=1).mean()) if delta.size else 0.0,
        arrays={"x": x, "x_adv": x_adv, "y": y, "pred_clean": pred_clean, "pred_adv": pred_adv},
    )
    if clf.is_audio and tuple(clf.input_shape) == clf.natural_shape:  # waveforms: the perturbation's SNR
        result.snr = snr_summary(snr_db(x, x_adv))
    if c.save_examples is not None:
        tmp = c.save_examples.with_name(f".{c.save_examples.name}.partial-{os.getpid()}.npz")
        try:
            np.savez_compressed(tmp, **result.arrays)
            os.replace(tmp, c.save_examples)
        finally:
            tmp.unlink(missing_ok=True)
        result.examples = str(c.save_examples)
    return result


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
