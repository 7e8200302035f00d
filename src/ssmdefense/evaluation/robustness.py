"""Clean and robust accuracy of a classifier under registered attacks, at one eps or a list."""

from __future__ import annotations

import numpy as np

DEFAULT_ATTACK_PARAMS = {"pgd": {"max_iter": 10}}


def attack_key(name: str, params: dict | None = None) -> str:
    """Report key of an attack: "pgd-10" for PGD with 10 steps, else its registry name."""
    params = {**DEFAULT_ATTACK_PARAMS.get(name, {}), **(params or {})}
    return f"pgd-{params['max_iter']}" if name == "pgd" else name


def _accuracy_under(clf, name, x, y, eps, params, seed):
    from ..api import get_attack
    from ..defenses.loop import seeded

    if eps == 0:
        return clf.accuracy(x, y)
    attack = get_attack(name, clf, eps=eps, **{**DEFAULT_ATTACK_PARAMS.get(name, {}), **params})
    with seeded(seed):
        return clf.accuracy(attack.generate(x, y), y)


def evaluate_robustness(clf, x: np.ndarray, y: np.ndarray, *, eps: float, attacks=("fgsm", "pgd"),
                        eps_list=(), attack_params: dict | None = None, seed: int = 0) -> dict:
    """Accuracy of ``clf`` on (x, y): clean, under each attack at ``eps``, and along ``eps_list``.

    Returns ``{"clean_accuracy": a, "robust_accuracy": {"fgsm": a, "pgd-10": a},
    "curve": [{"eps": e, "fgsm": a, "pgd-10": a}, ...]}`` with accuracies in [0, 1].
    """
    attack_params = attack_params or {}
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    clean = clf.accuracy(x, y)
    robust, curve = {}, []
    for name in attacks:
        robust[attack_key(name, attack_params.get(name))] = _accuracy_under(
            clf, name, x, y, eps, attack_params.get(name, {}), seed)
    for e in eps_list:
        point = {"eps": float(e)}
        for name in attacks:
            key = attack_key(name, attack_params.get(name))
            point[key] = robust[key] if np.isclose(e, eps) else _accuracy_under(
                clf, name, x, y, float(e), attack_params.get(name, {}), seed)
        curve.append(point)
    return {"clean_accuracy": clean, "robust_accuracy": robust, "curve": curve}


def best_last_gap(best: dict, last: dict) -> dict:
    """Best minus last checkpoint, clean and per attack: how robust overfitting shows."""
    return {"clean_accuracy": best["clean_accuracy"] - last["clean_accuracy"],
            **{k: best["robust_accuracy"][k] - last["robust_accuracy"][k] for k in best["robust_accuracy"]}}
