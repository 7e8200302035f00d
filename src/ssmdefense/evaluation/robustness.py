"""Clean and robust accuracy of a classifier under registered attacks, at one eps or a list."""

from __future__ import annotations

import numpy as np

from .. import progress
from ..api import get_attack
from ..attacks.audio_autoattack import LINF
from ..seeding import seeded
from ..workflows.config import DEFAULT_AA_SNR_DB  # the SNR ball of the audio AutoAttack

DEFAULT_ATTACK_PARAMS = {"pgd": {"max_iter": 10}}


def attack_key(name: str, params: dict | None = None) -> str:
    """Report key of an attack: "pgd-10" for PGD with 10 steps ("pgd-10-margin" on the margin loss),
    else its registry name."""
    params = {**DEFAULT_ATTACK_PARAMS.get(name, {}), **(params or {})}
    if name != "pgd":
        return name
    return f"pgd-{params['max_iter']}" + ("-margin" if params.get("loss", "ce") == "margin" else "")


def _predictions_under(clf, name, x, y, eps, params, seed):
    """(predicted classes under attack ``name`` at ``eps``, the attack object or None at eps 0)."""

    if eps == 0:
        return clf.predict(x).argmax(1), None
    attack = get_attack(name, clf, eps=eps, **{**DEFAULT_ATTACK_PARAMS.get(name, {}), **params})
    with seeded(seed):
        x_adv = attack.generate(x, y).astype(np.float32)
    return clf.predict(x_adv).argmax(1), attack


def _accuracy_under(clf, name, x, y, eps, params, seed):
    return float((_predictions_under(clf, name, x, y, eps, params, seed)[0] == y).mean())


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, nb_classes: int) -> list[float | None]:
    """Accuracy on the samples of each class (None for a class with no sample)."""
    return [float((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(nb_classes)]


def describe_attack(attack) -> dict:
    """What ran: the ART class; for AutoAttack its version, components (on non-image input Square is
    left out; the report must say so) and the accuracy after each (``breakdown``); and whether it
    has an eps budget at all (spatial attacks do not: they are left out of eps curves)."""
    info = {"class": type(attack).__name__, "uses_eps": "eps" in getattr(attack, "attack_params", [])}
    if hasattr(attack, "components") and hasattr(attack, "breakdown"):  # ssmdefense's AutoAttack
        info["version"] = attack.version
        info["components"] = list(attack.components)
        info["breakdown"] = [dict(step) for step in attack.breakdown]
    elif hasattr(attack, "attacks"):  # ART's AutoAttack (a plugin may register it)
        info["components"] = [type(a).__name__ for a in attack.attacks]
    return info


def evaluate_robustness(
    clf,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    attacks=("fgsm", "pgd"),
    eps_list=(),
    attack_params: dict | None = None,
    seed: int = 0,
) -> dict:
    """Accuracy of ``clf`` on (x, y): clean, under each attack at ``eps``, and along ``eps_list``.

    Returns ``{"clean_accuracy": a, "robust_accuracy": {"fgsm": a, "pgd-10": a},
    "curve": [{"eps": e, "fgsm": a, "pgd-10": a}, ...], "per_class": {"clean": [a_0, ...],
    "pgd-10": [...], ...}, "attacks": {"pgd-10": {"class": "ProjectedGradientDescent"}, ...}}``
    with accuracies in [0, 1]; ``per_class`` is at ``eps``. With two attacks or more, ``worst_case``
    is ``{"attacks": [...], "robust_accuracy": a}``: the samples no attack fooled at ``eps``. Attacks
    without an eps budget (``spatial``, ``art-spatial``) are measured once, at ``eps``, and are not in
    the curve.
    """
    attack_params = attack_params or {}
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    pred = clf.predict(x).argmax(1)
    clean = float((pred == y).mean())
    per_class = {"clean": per_class_accuracy(pred, y, clf.nb_classes)}
    robust, curve, info = {}, [], {}
    survives = pred == y  # (N) correct under every attack so far
    with progress.phase(f"attacks at eps {eps:g}", len(attacks), "attacks") as shown:
        for name in attacks:
            key = attack_key(name, attack_params.get(name))
            shown.status(key)
            pred, attack = _predictions_under(clf, name, x, y, eps, attack_params.get(name, {}), seed)
            robust[key] = float((pred == y).mean())
            per_class[key] = per_class_accuracy(pred, y, clf.nb_classes)
            survives &= pred == y
            if attack is not None:
                info[key] = describe_attack(attack)
            shown.update()
        shown.done(_accuracies(len(y), robust))
    for e in eps_list:
        curve.append(_curve_point(clf, x, y, float(e), eps, attacks, attack_params, robust, info, seed, clean))
    result = {"clean_accuracy": clean, "robust_accuracy": robust, "curve": curve, "per_class": per_class}
    if len(robust) > 1:  # a sample is robust only if no attack fools it: at most each attack's accuracy
        result["worst_case"] = {"attacks": list(robust), "robust_accuracy": float(survives.mean())}
    return {**result, "attacks": info}


def _curve_point(
    clf, x, y, e: float, eps: float, attacks, attack_params: dict, robust: dict, info: dict, seed: int, clean: float
):
    """``{"eps": e, <attack key>: accuracy, ...}``: each attack with a budget at ``e`` (at ``eps`` the
    accuracy measured there; at 0, where no attack may change x, the clean accuracy)."""
    point = {"eps": e}
    with progress.phase(f"curve at eps {e:g}", len(attacks), "attacks") as shown:
        for name in attacks:
            key = attack_key(name, attack_params.get(name))
            if info.get(key, {}).get("uses_eps", True):  # else no budget: the same at every eps, left out
                shown.status(key)
                same = np.isclose(e, eps)
                if e == 0:
                    point[key] = clean
                elif same:
                    point[key] = robust[key]
                else:
                    point[key] = _accuracy_under(clf, name, x, y, e, attack_params.get(name, {}), seed)
            shown.update()
        shown.done(_accuracies(len(y), {k: v for k, v in point.items() if k != "eps"}))
    return point


def _accuracies(samples: int, accuracies: dict) -> str:
    """ "1000 samples, fgsm 0.812, pgd-10 0.645": a phase's closing line."""
    return ", ".join([f"{samples} samples", *(f"{k} {v:.3f}" for k, v in accuracies.items())])


def aa_attack(clf) -> str:
    """The AutoAttack a final evaluation runs on ``clf``: ``audio-autoattack`` for waveform input
    (the L-inf and the SNR ball, a 1-D Square), else the standard ``autoattack``."""
    waveform = getattr(clf, "is_audio", False) and tuple(clf.input_shape) == tuple(getattr(clf, "natural_shape", ()))
    return "audio-autoattack" if waveform else "autoattack"


def autoattack_check(
    clf,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    seed: int = 0,
    params: dict | None = None,
    snr_db: float = DEFAULT_AA_SNR_DB,
) -> dict:
    """AutoAttack on (x, y) beside FGSM and PGD-10 on the same samples, as reports state it:
    ``{"attack", "samples", "version", "components", "clean_accuracy", "robust_accuracy": {"fgsm",
    "pgd-10", <attack>}, "breakdown": [{"component", "robust_accuracy", "seconds"}, ...], "worst_case",
    "seconds"}``. ``attack`` is ``aa_attack(clf)``; ``worst_case`` counts a sample as robust only if
    none of the attacks fools it, so it is at most each of them (the AA figure to quote); ``seconds``
    is what the AutoAttack took. For waveforms (the audio ensemble, whose SNR components attack in
    each clip's ``snr_db`` ball) also ``"snr_db"`` and ``"linf_worst_case"``: the worst case over
    FGSM, PGD-10 and the ensemble's L-inf components alone."""
    name = aa_attack(clf)
    audio = name == "audio-autoattack"
    params = {**({"snr_db": snr_db} if audio else {}), **(params or {})}
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    x = np.asarray(x, dtype=np.float32)
    clean = clf.predict(x).argmax(1) == y  # (N)
    masks, robust, attack = {}, {}, None
    for a in ("fgsm", "pgd", name):
        with progress.phase(f"{attack_key(a)} at eps {eps:g}" if a != name else name, line=a != name) as shown:
            pred, attack = _predictions_under(clf, a, x, y, eps, params if a == name else {}, seed)
            masks[a] = pred == y  # (N)
            robust[attack_key(a)] = float(masks[a].mean())
            shown.done(_accuracies(len(y), {attack_key(a): robust[attack_key(a)]}))
    survives = clean & masks["fgsm"] & masks["pgd"] & masks[name]  # (N)
    info = describe_attack(attack)  # the AutoAttack, run last
    result = {
        "attack": name,
        "samples": len(x),
        "version": info["version"],
        "components": info["components"],
        "clean_accuracy": float(clean.mean()),
        "robust_accuracy": robust,
        "breakdown": info["breakdown"],
        "worst_case": float(survives.mean()),
        "seconds": sum(b["seconds"] for b in info["breakdown"]),
    }
    if audio:
        last_linf = [c for c in info["components"] if c in LINF][-1]
        linf = clean & masks["fgsm"] & masks["pgd"] & attack.robust_after[last_linf]  # (N)
        result.update(snr_db=float(params["snr_db"]), linf_worst_case=float(linf.mean()))
    return result


def best_last_gap(best: dict, last: dict) -> dict:
    """Best minus last checkpoint, clean and per attack: how robust overfitting shows."""
    return {
        "clean_accuracy": best["clean_accuracy"] - last["clean_accuracy"],
        **{k: best["robust_accuracy"][k] - last["robust_accuracy"][k] for k in best["robust_accuracy"]},
    }
