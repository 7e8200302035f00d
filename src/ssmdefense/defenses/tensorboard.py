"""TensorBoard logging of a run (``ssmdefense defend --log tensorboard``): a callback of the shared
training loop's epoch end (``epochs.EpochEnd``) that writes each epoch's figures as scalars while the
run trains, then the run's final figures as hyper-parameters (TensorBoard's HParams dashboard) and a
few adversarial examples of the best checkpoint: images, or, for waveform input, audio clips.

It writes through ``torch.utils.tensorboard``, which needs the optional ``tensorboard`` package
(``pip install 'ssmdefense[tensorboard]'``); ``require_tensorboard`` says so in one line. Open the
logs with ``tensorboard --logdir RUN/tensorboard``.

Scalar tags, at step = epoch: ``train/loss``, ``train/accuracy``, ``train/lr``,
``eval/clean_accuracy``, ``eval/robust_accuracy/pgd-10`` (the per-epoch evaluation, on the split
that chooses the best checkpoint), ``time/epoch_seconds``, ``time/eval_seconds``,
``memory/peak_mb``; any other figure of a defense's row as ``epoch/<key>``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from ..errors import OptionError

LOGGERS = ("tensorboard",)  # what --log takes
INSTALL = "pip install 'ssmdefense[tensorboard]'"
TAGS = {
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "lr": "train/lr",
    "epoch_seconds": "time/epoch_seconds",
    "eval_seconds": "time/eval_seconds",
    "peak_memory_mb": "memory/peak_mb",
}
EXAMPLES = 8  # adversarial examples logged: images (audio: the first 3 clips)
AUDIO_EXAMPLES = 3


def check_logger(log: str | None) -> None:
    """``OptionError`` (``--log``) for an unknown logger, or for TensorBoard when its package is missing."""
    if log is None:
        return
    if log not in LOGGERS:
        raise OptionError("log", "--log", f"must be one of {', '.join(LOGGERS)}; got {log!r}")
    require_tensorboard()


def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``; ``OptionError`` naming the install command when the
    ``tensorboard`` package is missing."""
    try:
        return importlib.import_module("torch.utils.tensorboard").SummaryWriter
    except ImportError:
        raise OptionError(
            "log", "--log", f"tensorboard needs the tensorboard package, which is not installed: {INSTALL}"
        ) from None


def scalars(row: dict) -> dict[str, float]:
    """The numbers of an epoch's row (``metrics.jsonl``'s line) by TensorBoard tag (module docstring)."""
    tags = {}
    for key, value in _flat(row).items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in TAGS:
            tags[TAGS[key]] = float(value)
        else:
            tags[("eval/" if "accuracy" in key else "epoch/") + key] = float(value)
    return tags


def _flat(d: dict, prefix: str = "") -> dict:
    """{"robust_accuracy": {"pgd-10": a}} -> {"robust_accuracy/pgd-10": a}."""
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat


class TensorBoardLogger:
    """Writes a run's TensorBoard event files in ``log_dir``. ``first_epoch``: the epoch a resumed run
    starts at; events the interrupted run wrote from that epoch on are dropped (``purge_step``), so
    each epoch shows once. Use as a context manager, or call ``close()``."""

    def __init__(self, log_dir: str | Path, *, first_epoch: int = 1):
        writer_class = require_tensorboard()
        self.log_dir = Path(log_dir)
        self.writer = writer_class(str(self.log_dir), purge_step=first_epoch if first_epoch > 1 else None)

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def on_epoch_end(self, row: dict) -> None:
        """The epoch's figures (its ``metrics.jsonl`` row) as scalars at step = epoch; flushed, so a
        running TensorBoard shows them now."""
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, row["epoch"])
        self.writer.flush()

    def log_final(self, run_config: dict, report: dict, step: int) -> None:
        """The run's settings (``config.json``) and final figures (``report.json``) as TensorBoard
        hyper-parameters, at ``step`` (the last epoch)."""
        self.writer.add_hparams(hparams(run_config), final_metrics(report), run_name=".", global_step=step)
        self.writer.flush()

    def log_examples(self, clf, x: np.ndarray, y: np.ndarray, *, eps: float, seed: int, step: int) -> None:
        """PGD-10 adversarial examples of ``clf`` on the first samples of (x, y) (model inputs): images,
        and their perturbations, or clean and adversarial audio clips for waveform input."""
        from ..api import get_attack
        from ..seeding import seeded

        x, y = np.asarray(x[:EXAMPLES], dtype=np.float32), np.asarray(y[:EXAMPLES])
        with seeded(seed):
            x_adv = get_attack("pgd", clf, eps=eps, max_iter=10).generate(x, y).astype(np.float32)
        if getattr(clf, "is_audio", False) and x.ndim == 3 and x.shape[1] == 1:  # waveforms (N 1 T)
            for i in range(min(AUDIO_EXAMPLES, len(x))):
                for kind, clip in (("clean", x[i, 0]), ("adversarial", x_adv[i, 0])):
                    self.writer.add_audio(f"examples/{i}/{kind}", clip, step, sample_rate=clf.sample_rate)
        elif x.ndim == 4:  # images (N C H W), any other 3-D input (a spectrogram) shown as one
            lo, hi = (float(v) for v in clf.clip_values)
            self.writer.add_images("examples/clean", _gray_or_rgb((x - lo) / (hi - lo)), step)
            self.writer.add_images("examples/adversarial", _gray_or_rgb((x_adv - lo) / (hi - lo)), step)
            self.writer.add_images("examples/perturbation", _gray_or_rgb((x_adv - x) / (2 * eps) + 0.5), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _gray_or_rgb(x: np.ndarray) -> np.ndarray:
    """(N C H W) in [0, 1] with 1 or 3 channels, as ``add_images`` shows them (other counts: the mean)."""
    x = np.clip(x, 0.0, 1.0)
    return x if x.shape[1] in (1, 3) else x.mean(axis=1, keepdims=True)


def hparams(run_config: dict) -> dict:
    """The run's settings (``config.json``) as flat hyper-parameters: the run's, the defense's as it
    resolved them and the model's (numbers, strings and booleans; lists and dicts as their text)."""
    config = run_config
    keys = ("model", "dataset", "defense", "eps", "seed", "epochs", "batch_size", "sequence", "select_on")
    flat = {k: config.get(k) for k in keys}
    for key, value in (config.get("trainer") or {}).items():
        flat[f"defense.{key}"] = value
    for key, value in (config.get("model_params") or {}).items():
        flat[f"model.{key}"] = value
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items() if v is not None}


def final_metrics(report: dict) -> dict[str, float]:
    """The final figures: clean and robust accuracy of best and last on test, AutoAttack's worst case."""
    metrics = {}
    for which in ("best", "last"):
        r = report[which]
        metrics[f"final/{which}/epoch"] = float(r["epoch"])
        metrics[f"final/{which}/clean_accuracy"] = float(r["clean_accuracy"])
        for key, value in r["robust_accuracy"].items():
            metrics[f"final/{which}/robust_accuracy/{key}"] = float(value)
        if r.get("autoattack"):
            metrics[f"final/{which}/autoattack_worst_case"] = float(r["autoattack"]["worst_case"])
    return metrics
