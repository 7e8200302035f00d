"""What an audio report adds: budgets as signal-to-noise ratios, listenable examples, accuracy vs SNR.

- ``snr_db(x, x_adv)``: the SNR of each perturbation, ``20 log10(||x||_2 / ||x_adv - x||_2)`` dB
  (infinite for an unchanged example), and ``snr_summary`` of those values.
- ``audio_budget(clf, x, eps)``: an L-inf waveform budget restated as SNR: the loudest perturbation
  it allows (every sample moved by eps, ``||delta||_2 = eps sqrt(T)``) gives each clip the SNR
  ``20 log10(||x||_2 / (eps sqrt(T)))``; min, median and mean over the clips. In the ``features``
  attack space the budget is in dB on the log-mel spectrogram and has no waveform SNR.
- ``write_audio_examples``: a few clean and adversarial WAV files (float32, to listen to) and one
  PNG per example with waveform and log-mel, clean against adversarial, under PGD-10 at eps;
  ``save_audio_examples`` writes the same files for an attack already run (``ssmdefense attack --out``).
- ``audio_robustness``: accuracy under ``snr-pgd`` at several SNRs and under the ``time-shift`` and
  ``speed`` search attacks, with ``plot_snr_curve`` drawing accuracy against SNR.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..api import get_attack
from ..attacks._common import perturbation_snr_db as snr_db
from ..seeding import seeded

DEFAULT_SNRS = (40.0, 30.0, 20.0)


def snr_summary(values: np.ndarray) -> dict:
    """min/mean/median SNR (dB) over the perturbed clips with sound (None when there is none), the
    number perturbed, and how many silent clips were perturbed (their SNR is -inf)."""
    finite = values[np.isfinite(values)]
    summary = {
        "min_snr_db": None,
        "mean_snr_db": None,
        "median_snr_db": None,
        "perturbed": int(finite.size),
        "silent_perturbed": int((values == -np.inf).sum()),
    }
    if finite.size:
        summary.update(
            {
                "min_snr_db": float(finite.min()),
                "mean_snr_db": float(finite.mean()),
                "median_snr_db": float(np.median(finite)),
            }
        )
    return summary


def audio_budget(clf, x: np.ndarray, eps: float) -> dict:
    """The run's budget in both units: L-inf eps and, in the waveform space, the SNR it allows."""
    space = clf.sequence_params.get("attack_space", "waveform")
    budget = {"eps": float(eps), "norm": "inf", "attack_space": space}
    if space == "features":
        budget["units"] = "dB on the log-mel spectrogram"
        return budget
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)  # (N T)
    rms = np.sqrt((x**2).mean(axis=1))  # (N)
    snr = 20 * np.log10(np.maximum(rms, 1e-30) / eps)  # ||x|| / (eps sqrt(T)) = rms / eps
    budget.update(
        {
            "units": "waveform amplitude (full scale 1)",
            "worst_case_snr_db_min": float(snr.min()),
            "worst_case_snr_db_median": float(np.median(snr)),
            "worst_case_snr_db_mean": float(snr.mean()),
            "eps_dbfs": 20 * math.log10(eps),
        }
    )
    return budget


def _log_mel(clf, wave: np.ndarray) -> np.ndarray | None:
    """The classifier's own log-mel (n_mels, frames) of one waveform (1, T), or None without one."""
    import torch

    front_end = getattr(clf.serialiser, "front_end", None)
    if front_end is None:
        return None
    with torch.no_grad():
        return front_end(torch.from_numpy(wave[None]).to(clf.device))[0, 0].cpu().numpy()


def write_audio_examples(
    directory,
    clf,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    seed: int = 0,
    n: int = 3,
    candidates: int = 32,
    classes: list[str] | None = None,
) -> list[dict]:
    """PGD-10 at ``eps`` on up to ``candidates`` correctly classified clips of ``x`` (natural
    waveforms); ``save_audio_examples`` keeps ``n`` of them in ``directory``. Returns one dict per
    example (files relative to the run directory, label, predictions, SNR)."""
    inputs = clf.prepare_inputs(x)
    pred = clf.predict(inputs).argmax(1)
    correct = np.flatnonzero(pred == y)[:candidates]
    if not len(correct):
        Path(directory).mkdir(parents=True, exist_ok=True)
        return []
    with seeded(seed):
        x_adv = get_attack("pgd", clf, eps=eps, max_iter=10).generate(inputs[correct], y[correct]).astype(np.float32)
    pred_adv = clf.predict(x_adv).argmax(1)
    chosen = (x[correct], x_adv, y[correct], pred[correct], pred_adv)
    return save_audio_examples(directory, clf, *chosen, n=n, classes=classes, index=correct)


def save_audio_examples(
    directory,
    clf,
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    pred_adv: np.ndarray,
    *,
    n: int = 3,
    classes: list[str] | None = None,
    index: np.ndarray | None = None,
) -> list[dict]:
    """Keep ``n`` clips of an attack already run: ``x`` natural waveforms (N, 1, T), ``x_adv`` the
    attack's output (the classifier's inputs), ``pred``/``pred_adv`` the predictions. Of the correctly
    classified clips, the first ``n`` the attack fooled (then, if fewer, the first it did not) become
    ``clean_<i>.wav``, ``adversarial_<i>.wav`` and ``example_<i>.png`` in ``directory``.

    In the ``features`` attack space the adversarial example is a spectrogram: only the PNG (clean
    vs adversarial log-mel) is written. Returns one dict per example (files relative to the report
    directory, ``directory``'s parent; ``index``: the k-th clip's position in the test data, else k).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    order = examples_to_show(y, pred, pred_adv, n)
    rate = int(clf.sample_rate or 16000)
    return [
        _save_example(directory, clf, i, (x[k], x_adv[k]), rate, _example_row(k, y, pred, pred_adv, classes, index))
        for i, k in enumerate(order)
    ]


def examples_to_show(y: np.ndarray, pred: np.ndarray, pred_adv: np.ndarray, n: int) -> list[int]:
    """Of the correctly classified samples, the first ``n`` the attack fooled, then (if fewer) the
    first it did not: the examples a report shows."""
    correct = np.flatnonzero(pred == y)  # (K)
    fooled = pred_adv[correct] != y[correct]  # (K)
    return [int(k) for k in [*correct[fooled], *correct[~fooled]][:n]]


def _example_row(k: int, y, pred, pred_adv, classes, index) -> dict:
    """Example ``k``'s position in the test data, label and predictions (class names where known)."""
    name = (lambda c: classes[c]) if classes else str
    return {
        "index": int(k if index is None else index[k]),
        "label": name(int(y[k])),
        "clean_prediction": name(int(pred[k])),
        "adversarial_prediction": name(int(pred_adv[k])),
    }


def _save_example(directory: Path, clf, i: int, pair: tuple, rate: int, row: dict) -> dict:
    """Example ``i`` (``pair`` = natural clip (1, T), adversarial input): its WAVs and picture, as ``row``."""
    import soundfile as sf

    wave, adv = pair
    if clf.sequence_params.get("attack_space", "waveform") == "features":
        clean_mel, adv_mel, wave_adv = clf.prepare_inputs(wave[None])[0][0], adv[0], None
    else:
        wave_adv = adv[0]
        sf.write(directory / f"clean_{i}.wav", wave[0], rate, subtype="FLOAT")
        sf.write(directory / f"adversarial_{i}.wav", wave_adv, rate, subtype="FLOAT")
        row.update(
            {
                "clean_wav": f"examples/clean_{i}.wav",
                "adversarial_wav": f"examples/adversarial_{i}.wav",
                "snr_db": float(snr_db(wave[None], adv[None])[0]),
            }
        )
        clean_mel, adv_mel = _log_mel(clf, wave), _log_mel(clf, adv)
    _plot_example(directory / f"example_{i}.png", wave[0], wave_adv, clean_mel, adv_mel, rate, row)
    row["png"] = f"examples/example_{i}.png"
    return row


def _plot_example(path: Path, wave, wave_adv, mel, mel_adv, rate: int, row: dict) -> None:
    """Clean waveform and the perturbation (on its own scale) above clean and adversarial log-mel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 5.5))
    t = np.arange(len(wave)) / rate
    axes[0, 0].plot(t, wave, lw=0.5)
    axes[0, 0].set_title(f"clean waveform: {row['label']}, predicted {row['clean_prediction']}", fontsize=9)
    if wave_adv is not None:
        axes[0, 1].plot(t, wave_adv - wave, lw=0.5, color="tab:red")
        snr = row.get("snr_db")
        axes[0, 1].set_title(
            "perturbation (own scale)"
            + (f", SNR {snr:.1f} dB" if snr is not None else "")
            + f": predicted {row['adversarial_prediction']}",
            fontsize=9,
        )
    else:
        axes[0, 1].axis("off")
        axes[0, 1].text(
            0.5,
            0.5,
            f"features attack space:\nthe spectrogram was perturbed\npredicted {row['adversarial_prediction']}",
            ha="center",
            va="center",
        )
    for ax in axes[0]:
        ax.set_xlabel("seconds", fontsize=8)
    for ax, m, title in ((axes[1, 0], mel, "clean log-mel (dB)"), (axes[1, 1], mel_adv, "adversarial log-mel (dB)")):
        if m is None:
            ax.axis("off")
            continue
        image = ax.imshow(m, origin="lower", aspect="auto", cmap="magma", vmin=float(mel.min()), vmax=float(mel.max()))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame", fontsize=8)
        ax.set_ylabel("mel band", fontsize=8)
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def audio_robustness(
    clf,
    x: np.ndarray,
    y: np.ndarray,
    *,
    snrs=DEFAULT_SNRS,
    seed: int = 0,
    search_attacks=("time-shift", "speed"),
    attack_params: dict | None = None,
) -> dict:
    """Accuracy under ``snr-pgd`` at each SNR in ``snrs`` (dB) and under the search attacks.

    ``x`` is the classifier's input (waveforms). Returns ``{"snr_curve": [{"snr_db", "accuracy",
    "min_snr_db"}...], "search": {name: {"accuracy", "params"}}}``.
    """

    attack_params = attack_params or {}
    y = np.asarray(y)
    curve = []
    for snr in sorted(snrs, reverse=True):
        params = {**attack_params.get("snr-pgd", {}), "snr_db": float(snr)}
        with seeded(seed):
            x_adv = get_attack("snr-pgd", clf, **params).generate(x, y).astype(np.float32)
        curve.append(
            {
                "snr_db": float(snr),
                "accuracy": float((clf.predict(x_adv).argmax(1) == y).mean()),
                **{k: v for k, v in snr_summary(snr_db(x, x_adv)).items() if k == "min_snr_db"},
            }
        )
    search = {}
    for name in search_attacks:
        params = dict(attack_params.get(name, {}))
        with seeded(seed):
            x_adv = get_attack(name, clf, **params).generate(x, y).astype(np.float32)
        search[name] = {"accuracy": float((clf.predict(x_adv).argmax(1) == y).mean()), "params": params}
    return {"snr_curve": curve, "search": search}


def plot_snr_curve(report: dict, path: Path) -> bool:
    """Accuracy against SNR (dB) for each checkpoint with an ``audio`` section."""
    ckpts = [k for k in ("best", "last", "checkpoint") if k in report and report[k].get("audio")]
    if not ckpts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k in ckpts:
        if k == "last" and report[k] is report.get("best"):
            continue
        curve = report[k]["audio"]["snr_curve"]
        ax.plot([p["snr_db"] for p in curve], [p["accuracy"] for p in curve], marker="o", label=f"{k} snr-pgd")
    ax.invert_xaxis()  # louder perturbations (lower SNR) to the right
    ax.set_xlabel("SNR of the perturbation (dB)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy vs SNR (snr-pgd)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
