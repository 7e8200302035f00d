"""``certify_checkpoint``: certified robustness of a saved checkpoint on its test data, what
``ssmdefense certify`` does; the result is written as JSON beside the run (``<run>/certification/``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..certification import METHODS, certify
from ..certification.smoothing import DEFAULT_ALPHA, DEFAULT_N, DEFAULT_N0, radius_as_snr
from ..certification.smoothing_attack import attack_check
from ..checkpoint import load
from ..errors import OptionError
from .checkpoints import CheckpointWork, config_of, find_checkpoints, load_test_data
from .common import resolve_device, use_threads


@dataclass
class CertifyConfig(CheckpointWork):
    """Every setting of ``ssmdefense certify``.

    checkpoint: a run directory (its best checkpoint) or one checkpoint (``run/last``).
    method: ``smoothing`` (randomized smoothing; ``sigma``, ``n0``, ``n``, ``alpha``: Cohen's CERTIFY).
    samples: the first N test samples (default 100). batch_size: noisy copies per forward pass.
    attack_check: attack the smoothed classifier (SmoothAdv, ``certification.smoothing_attack``) at radii
        sigma/2 and sigma: its accuracy beside the certified one, and any certified sample it flips.
    out: the JSON file (default: ``<run>/certification/<method>.json``).
    """

    checkpoint: Path
    method: str = "smoothing"
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
    which, stem = next(iter(find_checkpoints(c.checkpoint).items()))
    clf = load(stem, device_type=resolve_device(c.device, c.threads))
    use_threads(c.threads, clf.is_audio)
    name, natural_x, y, _ = load_test_data(clf, c.dataset, c.samples, c.data_dir, c.dataset_params)
    params = {"sigma": c.sigma, "n0": c.n0, "n": c.n, "alpha": c.alpha, "batch_size": c.batch_size, "seed": c.seed}
    x = clf.prepare_inputs(natural_x)
    result = certify(clf, x, y, method=c.method, **params)
    if c.attack_check:  # the empirical side: an attack on the smoothed classifier at sigma/2 and sigma
        checked = [
            attack_check(clf, x, y, result, r, batch_size=c.batch_size, seed=c.seed) for r in (c.sigma / 2, c.sigma)
        ]
        result["attack_check"] = checked
        result["violations"] = sorted({i for r in checked for i in r["violations"]})
    waveform = clf.is_audio and tuple(clf.input_shape) == clf.natural_shape
    if waveform:  # the noise is on the waveform: each certified radius as an SNR
        result["snr_db"] = radius_as_snr(natural_x, result["radii"])
        right = [snr for snr, p, t in zip(result["snr_db"], result["predictions"], y, strict=True) if snr and p == t]
        result["median_snr_db"] = float(np.median(right)) if right else None  # over the clips certified right
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
