"""What AutoAttack-style ensembles share (``autoattack`` for images, ``audio-autoattack`` for waveforms):
components run in turn, each only on the points every earlier one left correctly classified, so a
point counts as robust only if it survives them all (the per-point worst case), and ``breakdown``
records the accuracy after each component with its seconds.

A subclass lists its components in ``_components()`` as ``(name, run, in_budget)``: ``run(x, labels)``
returns candidates for the points it is given, ``in_budget(x, candidates)`` puts them back into that
component's threat model (whatever the component returned), and only candidates that are then
misclassified replace the input. After ``generate``, ``robust_after[name]`` is the (N,) mask of the
points still robust after component ``name`` (and every earlier one).
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable

import numpy as np
from art.attacks.attack import EvasionAttack

from .. import progress
from ..modes import weights_frozen
from ._apgd import OneForwardAPGD
from ._common import class_indices

Component = tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]


class Ensemble(EvasionAttack):
    """Base of the ensembles: ``generate`` and the helpers their components use. A subclass sets
    ``eps``, ``norm`` (np.inf or 2), ``eps_step``, ``max_iter``, ``n_target_classes``, ``batch_size``,
    ``verbose`` and ``version``, and defines ``_components()``."""

    name = "ensemble"

    @abc.abstractmethod
    def _components(self) -> list[Component]:
        """(name, run, in_budget) of each component, in the order they attack."""

    # ---- components built on ART's APGD -------------------------------------------------------------
    def _apgd(self, loss: str, restarts: int, targeted: bool = False) -> Callable:
        """ART's ``AutoProjectedGradientDescent`` in the ensemble's ``norm`` ball of ``eps``, one forward
        pass per iteration (``_apgd.py``)."""

        def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            attack = OneForwardAPGD(
                self.estimator,
                norm=self.norm,
                eps=self.eps,
                eps_step=self.eps_step,
                max_iter=self.max_iter,
                targeted=targeted,
                nb_random_init=restarts,
                batch_size=int(self.batch_size),
                loss_type=loss,
                verbose=self.verbose,
            )
            return attack.generate(x, self._one_hot(y))

        return run

    def _each_target(self, run: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Callable:
        """A targeted attack ``run(x, targets, labels)`` against each of the ``n_target_classes``
        highest-ranked wrong classes in turn, each time on the points not fooled yet (APGD-T)."""

        def targeted(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            ranked = self._ranked_targets(x, y)  # (n n_target_classes)
            x_adv, left = x.copy(), np.arange(len(x))
            for k in range(self.n_target_classes):
                if left.size == 0:
                    break
                progress.status(f"target {k + 1}/{self.n_target_classes}, {left.size} samples")
                candidate = run(x[left], ranked[left, k], y[left])  # (m ...)
                fooled = self._fooled(candidate, y[left])  # (m)
                x_adv[left[fooled]] = candidate[fooled]
                left = left[~fooled]
            return x_adv

        return targeted

    # ---- helpers -------------------------------------------------------------------------------------
    def _one_hot(self, y: np.ndarray) -> np.ndarray:
        return np.eye(self.estimator.nb_classes, dtype=np.float32)[y]  # (n C)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.predict(x.astype(np.float32), batch_size=int(self.batch_size))  # (n C)

    def _fooled(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._predict(x).argmax(1) != y  # (n)

    def _ranked_targets(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n, n_target_classes): the classes other than y by decreasing logit at x (AutoAttack's targets)."""
        logits = self._predict(x)  # (n C)
        logits[np.arange(len(y)), y] = -np.inf
        return np.argsort(-logits, axis=1)[:, : self.n_target_classes]

    def _in_ball(self, x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
        """x_adv projected into the ``norm`` ball of ``eps`` around x and the clip range."""
        delta = (x_adv - x).reshape(len(x), -1)  # (n D)
        if self.norm == np.inf:
            delta = np.clip(delta, -self.eps, self.eps)
        else:
            norms = np.linalg.norm(delta, axis=1, keepdims=True)  # (n 1)
            delta = delta * np.minimum(1.0, self.eps / np.maximum(norms, 1e-12))
        lo, hi = self.estimator.clip_values
        return np.clip(x + delta.reshape(x.shape), lo, hi).astype(x.dtype)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        x = np.asarray(x)
        x = x.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)
        labels = class_indices(self.estimator, x, y, int(self.batch_size))  # (N)
        x_adv = x.copy()
        robust = ~self._fooled(x, labels)  # (N)
        self.breakdown = [{"component": "clean", "robust_accuracy": float(robust.mean()), "seconds": 0.0}]
        self.robust_after = {"clean": robust.copy()}
        # ART's convention: verbose=False is silent, unless a command's phase runs this ensemble
        quiet = contextlib.nullcontext() if self.verbose or progress.active() else progress.using("off")
        # The weights frozen for the whole ensemble: ART's APGD wraps the model in a classifier of its
        # own (for its DLR loss) whose loss_gradient would compute every weight's gradient too
        with quiet, weights_frozen(self.estimator.model):
            self._run_components(x, labels, x_adv, robust)
        return x_adv

    def _run_components(self, x: np.ndarray, labels: np.ndarray, x_adv: np.ndarray, robust: np.ndarray) -> None:
        """Each component on the samples still robust, in order: ``x_adv`` and ``robust`` updated in place."""
        for name, run, in_budget in self._components():
            start = time.perf_counter()
            idx = np.flatnonzero(robust)
            with progress.phase(f"{self.label} {name}", unit="samples") as shown:
                shown.status(f"{idx.size} samples")
                if idx.size:
                    candidate = in_budget(x[idx], run(x[idx], labels[idx]))  # (n ...)
                    fooled = self._fooled(candidate, labels[idx])  # (n)
                    x_adv[idx[fooled]] = candidate[fooled]
                    robust[idx[fooled]] = False
                shown.done(f"{idx.size} samples, {int(robust[idx].sum())} robust")
            self.robust_after[name] = robust.copy()
            step = {"component": name, "robust_accuracy": float(robust.mean())}
            self.breakdown.append({**step, "seconds": time.perf_counter() - start})

    @property
    def label(self) -> str:
        """How progress lines name the ensemble: "AutoAttack", "audio AutoAttack"."""
        return self.name.replace("autoattack", "AutoAttack").replace("-", " ")
