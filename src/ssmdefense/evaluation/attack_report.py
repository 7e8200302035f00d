"""What ``ssmdefense attack --out DIR`` writes: one attack's figures as a report (report.json,
report.md and report.html through ``write_report``, the same kind of page as a run's or an
evaluation's), with a few examples to look at or listen to.

report.json holds ``config`` (the settings), ``result`` (``AttackResult.to_dict()``: what
``attack --json`` prints), ``checkpoint`` (the attacked checkpoint in the report schema: epoch,
clean and adversarial accuracy under the attack's name, per-class accuracy), ``classes`` when the
dataset names them, ``budget`` for audio (eps as SNR), ``examples`` for audio and ``plots``.
Image checkpoints get ``plots/adversarial_examples.png`` (clean, adversarial and perturbation of a few
samples); audio checkpoints get ``examples/`` (clean and adversarial WAVs and a waveform + log-mel
picture each, ``save_audio_examples``), which the page turns into players.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio import audio_budget, examples_to_show, save_audio_examples
from .report import write_report
from .robustness import per_class_accuracy


def attack_report(result: dict, config: dict, arrays: dict, nb_classes: int, epoch=None, classes=None) -> dict:
    """The report dict of one attack: ``result`` its figures, ``config`` its settings, ``arrays``
    its y, pred_clean and pred_adv."""
    name, y = result["attack"], arrays["y"]
    section = {
        "epoch": epoch,
        "clean_accuracy": result["clean_accuracy"],
        "robust_accuracy": {name: result["adversarial_accuracy"]},
        "per_class": {
            "clean": per_class_accuracy(arrays["pred_clean"], y, nb_classes),
            name: per_class_accuracy(arrays["pred_adv"], y, nb_classes),
        },
    }
    report = {"config": config, "result": result, "checkpoint": section}
    if classes:
        report["classes"] = [str(c) for c in classes]
    return report


def write_attack_report(directory, clf, report: dict, arrays: dict, natural_x: np.ndarray) -> list[str]:
    """Write the report of one attack into ``directory`` (which must exist): its examples (audio:
    ``examples/``; images: ``plots/adversarial_examples.png``), then report.json, report.md, report.html and
    plots/ (``write_report``). ``arrays``: x_adv, y, pred_clean, pred_adv; ``natural_x`` the attacked
    test samples in their natural shape. Returns the plots."""
    directory = Path(directory)
    (directory / "plots").mkdir(exist_ok=True)
    y, pred, pred_adv = arrays["y"], arrays["pred_clean"], arrays["pred_adv"]
    drawn = []
    if clf.is_audio:
        eps = report["config"].get("eps")
        if eps is not None:  # the budget as SNR (waveforms) or in dB on the spectrogram (features)
            report["budget"] = audio_budget(clf, natural_x, eps)
        examples = (natural_x, arrays["x_adv"], y, pred, pred_adv)
        report["examples"] = save_audio_examples(directory / "examples", clf, *examples, classes=report.get("classes"))
    elif natural_x.ndim == 4 and natural_x.shape[1] in (1, 3):  # images (N, C, H, W)
        shown = (natural_x, arrays["x_adv"], y, pred, pred_adv, report.get("classes"))
        if plot_image_examples(directory / "plots" / "adversarial_examples.png", *shown):
            drawn.append("plots/adversarial_examples.png")
    r = report["result"]
    return write_report(directory, report, f"ssmdefense attack: {r['attack']} on {r['checkpoint']}", plots=drawn)


def plot_image_examples(path: Path, x, x_adv, y, pred, pred_adv, classes=None, n: int = 4) -> bool:
    """A few images (``examples_to_show``) in columns: clean, adversarial, and the perturbation on its
    own scale (red up, blue down; channels averaged). False when no sample was classified correctly."""
    order = examples_to_show(y, pred, pred_adv, n)
    if not order:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = (lambda c: classes[c]) if classes else str
    fig, axes = plt.subplots(3, len(order), figsize=(2.2 * len(order), 6.6), squeeze=False)
    for col, k in enumerate(order):
        delta = (x_adv[k] - x[k]).mean(axis=0)  # (H W)
        scale = float(np.abs(delta).max()) or 1.0
        axes[0, col].imshow(_picture(x[k]), cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(f"clean: {name(int(y[k]))}", fontsize=9)
        axes[1, col].imshow(_picture(x_adv[k]), cmap="gray", vmin=0, vmax=1)
        axes[1, col].set_title(f"adversarial: {name(int(pred_adv[k]))}", fontsize=9)
        axes[2, col].imshow(delta, cmap="seismic", vmin=-scale, vmax=scale)
        axes[2, col].set_title(f"perturbation (±{scale:.3g})", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _picture(image: np.ndarray) -> np.ndarray:
    """One image (C, H, W) as imshow takes it: (H, W) grey or (H, W, 3) colour, clipped to [0, 1]."""
    picture = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    return np.clip(picture, 0, 1)
