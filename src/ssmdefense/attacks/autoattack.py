"""AutoAttack: the parameter-free ensemble of Croce & Hein (ICML 2020, https://arxiv.org/abs/2003.01690).

``version="standard"`` (the default) is the AutoAttack papers report, with Croce & Hein's budgets:

1. APGD-CE: ART's ``AutoProjectedGradientDescent`` on cross-entropy, 100 iterations, no restart;
2. APGD-T: ART's APGD on the targeted DLR loss, 100 iterations against each of the 9 classes with
   the highest logits after the true one;
3. FAB-T: ``ssmdefense.attacks.fab`` (not in ART), 100 iterations against the same 9 targets;
4. Square: ART's ``SquareAttack``, 5,000 queries (images only, see below).

``version="fast"`` is the cheap check earlier reports used: ART's default list (APGD-CE, APGD-DLR,
DeepFool, Square) with 20 iterations, 1 restart and 20 Square queries.

Each component attacks only the points every earlier one left correctly classified, and a point
counts as robust only if it survives them all: the ensemble's accuracy is the per-point worst case.
Written here rather than through ART's ``AutoAttack`` because that one reports neither which
component broke a point nor the accuracy after each: after ``generate``, ``breakdown`` holds the
accuracy on the clean input and after each component (cumulative), with its seconds. Every result
is projected back into the eps-ball and the clip range, whatever a component returned.

On input that is not image-shaped (audio (1, T), sequences) Square's square-shaped updates do not
apply, so it is left out, and with fewer than 3 classes the DLR loss (APGD-T, APGD-DLR) is not
defined, so they are left out; ``components`` says what ran, and reports show it.

Arguments:
    eps (float): budget. Default: 0.1.
    eps_step (float | None): APGD's initial step; None means 2 * eps (Croce & Hein's). Default: None.
    norm (str): "inf" or "2". Default: "inf".
    version (str): "standard" or "fast". Default: "standard".
    max_iter (int | None): iterations of each APGD / FAB / DeepFool run; None: 100 (standard), 20
        (fast). Default: None.
    nb_restarts (int | None): random restarts of APGD-CE (and APGD-DLR in fast); None: 1. Default: None.
    n_queries (int | None): Square's queries; None: 5000 (standard), 20 (fast). Default: None.
    n_target_classes (int | None): targets of APGD-T and FAB-T, at most nb_classes - 1; None: 9 (or
        nb_classes - 1 if fewer). Default: None.
    batch_size (int): Default: 128.
    verbose (bool): a line per component with its accuracy, and the components' progress bars. Default: False.

Examples::

    attack = sd.get_attack("autoattack", clf, eps=0.1)                   # standard
    x_adv = attack.generate(x_test, y_test)
    attack.breakdown   # [{"component": "clean", "robust_accuracy": 0.97, ...}, {"component": "apgd-ce", ...}, ...]
    sd.get_attack("autoattack", clf, eps=0.1, version="fast")            # the cheap check
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from art.attacks.attack import EvasionAttack
from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack
from art.estimators.classification import PyTorchClassifier
from tqdm.auto import tqdm

from ._common import check_count, check_positive, check_targets, class_indices, parse_norm
from .fab import FABTargeted

VERSIONS = ("standard", "fast")


class AutoAttack(EvasionAttack):
    """Croce & Hein's ensemble, component by component on the points still robust; see the module docstring."""

    attack_params = EvasionAttack.attack_params + [
        "eps",
        "eps_step",
        "norm",
        "version",
        "max_iter",
        "nb_restarts",
        "n_queries",
        "n_target_classes",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (PyTorchClassifier,)

    def __init__(
        self,
        estimator,
        *,
        eps: float = 0.1,
        eps_step: float | None = None,
        norm="inf",
        version: str = "standard",
        max_iter: int | None = None,
        nb_restarts: int | None = None,
        n_queries: int | None = None,
        n_target_classes: int | None = None,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.eps, self.eps_step, self.norm, self.version = eps, eps_step, parse_norm(norm), version
        self.max_iter, self.nb_restarts, self.n_queries = max_iter, nb_restarts, n_queries
        self.n_target_classes = min(9, estimator.nb_classes - 1) if n_target_classes is None else n_target_classes
        self.batch_size, self.verbose = batch_size, verbose
        self._check_params()
        fast = version == "fast"
        self.max_iter = int(max_iter or (20 if fast else 100))
        self.nb_restarts = int(nb_restarts or 1)
        self.n_queries = int(n_queries or (20 if fast else 5000))
        self.eps_step = 2 * eps if eps_step is None else eps_step
        self.breakdown: list[dict] = []
        self.components = [name for name, _ in self._components()]

    def _check_params(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(VERSIONS)}; got {self.version!r}")
        check_positive(
            eps=self.eps,
            eps_step=self.eps_step,
            max_iter=self.max_iter,
            nb_restarts=self.nb_restarts,
            n_queries=self.n_queries,
            optional=("eps_step", "max_iter", "nb_restarts", "n_queries"),
        )
        check_count("batch_size", self.batch_size)
        check_targets(self.n_target_classes, self.estimator.nb_classes)

    # ---- the components: each maps (x (n ...), labels (n)) to candidates x_adv (n ...) --------------
    def _components(self) -> list[tuple[str, Callable]]:
        images = len(self.estimator.input_shape) == 3
        if self.version == "fast":
            components = [
                ("apgd-ce", self._apgd("cross_entropy", self.nb_restarts)),
                ("apgd-dlr", self._apgd("difference_logits_ratio", self.nb_restarts)),
                ("deepfool", self._deepfool),
            ]
        else:
            components = [
                ("apgd-ce", self._apgd("cross_entropy", self.nb_restarts)),
                ("apgd-t", self._apgd_targeted),
                ("fab-t", self._fab_targeted),
            ]
        if self.estimator.nb_classes < 3:  # the DLR loss needs a third-largest logit
            components = [c for c in components if c[0] not in ("apgd-dlr", "apgd-t")]
        return components + ([("square", self._square)] if images else [])

    def _apgd(self, loss: str, restarts: int, targeted: bool = False) -> Callable:
        def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            attack = AutoProjectedGradientDescent(
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

    def _apgd_targeted(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """APGD on the targeted DLR loss against each target in turn, on the points not yet fooled."""
        run = self._apgd("difference_logits_ratio", 1, targeted=True)
        ranked = self._ranked_targets(x, y)  # (n n_target_classes)
        x_adv, left = x.copy(), np.arange(len(x))
        for k in range(self.n_target_classes):
            if left.size == 0:
                break
            candidate = run(x[left], ranked[left, k])  # (m ...)
            fooled = self._fooled(candidate, y[left])  # (m)
            x_adv[left[fooled]] = candidate[fooled]
            left = left[~fooled]
        return x_adv

    def _fab_targeted(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return FABTargeted(
            self.estimator,
            eps=self.eps,
            norm="inf" if self.norm == np.inf else "2",
            max_iter=self.max_iter,
            n_target_classes=self.n_target_classes,
            nb_restarts=1,
            batch_size=int(self.batch_size),
            verbose=self.verbose,
        ).generate(x, y)

    def _deepfool(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return DeepFool(
            self.estimator,
            max_iter=self.max_iter,
            epsilon=1e-3,
            nb_grads=10,
            batch_size=int(self.batch_size),
            verbose=self.verbose,
        ).generate(x, self._one_hot(y))

    def _square(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return SquareAttack(
            self.estimator,
            norm=self.norm,
            eps=self.eps,
            max_iter=self.n_queries,
            p_init=0.8,
            nb_restarts=1,
            batch_size=int(self.batch_size),
            verbose=self.verbose,
        ).generate(x, self._one_hot(y))

    # ---- helpers -----------------------------------------------------------------------------------
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

    def _in_budget(self, x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
        """x_adv projected into the eps-ball around x and the clip range."""
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
        for name, run in self._components():
            start = time.perf_counter()
            idx = np.flatnonzero(robust)
            if idx.size:
                candidate = self._in_budget(x[idx], run(x[idx], labels[idx]))  # (n ...)
                fooled = self._fooled(candidate, labels[idx])  # (n)
                x_adv[idx[fooled]] = candidate[fooled]
                robust[idx[fooled]] = False
            step = {"component": name, "robust_accuracy": float(robust.mean())}
            self.breakdown.append({**step, "seconds": time.perf_counter() - start})
            if self.verbose:
                tqdm.write(f"autoattack {self.version}: after {name} {step['robust_accuracy']:.3f}")
        return x_adv
