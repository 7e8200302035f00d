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
counts as robust only if it survives them all: the ensemble's accuracy is the per-point worst case
(``attacks/_ensemble.py``, shared with ``audio-autoattack``). Written here rather than through ART's
``AutoAttack`` because that one reports neither which component broke a point nor the accuracy
after each: after ``generate``, ``breakdown`` holds the accuracy on the clean input and after each
component (cumulative), with its seconds. Every result is projected back into the eps-ball and the
clip range, whatever a component returned.

On input that is not image-shaped (sequences; audio waveforms have their own ensemble,
``audio-autoattack``, with a 1-D Square) Square's square-shaped updates do not apply, so it is left
out, and with fewer than 3 classes the DLR loss (APGD-T, APGD-DLR) is not defined, so they are left
out; ``components`` says what ran, and reports show it.

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

import numpy as np
from art.attacks.evasion import DeepFool
from art.estimators.classification import PyTorchClassifier

from ._common import check_count, check_positive, check_targets, parse_norm
from ._ensemble import Ensemble
from .fab import FABTargeted
from .square import square_attack_class

VERSIONS = ("standard", "fast")


class AutoAttack(Ensemble):
    """Croce & Hein's ensemble, component by component on the points still robust; see the module docstring."""

    name = "autoattack"
    attack_params = Ensemble.attack_params + [
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
        self.components = [name for name, _, _ in self._components()]

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
    def _components(self):
        images = len(self.estimator.input_shape) == 3
        if self.version == "fast":
            runs = [
                ("apgd-ce", self._apgd("cross_entropy", self.nb_restarts)),
                ("apgd-dlr", self._apgd("difference_logits_ratio", self.nb_restarts)),
                ("deepfool", self._deepfool),
            ]
        else:
            runs = [
                ("apgd-ce", self._apgd("cross_entropy", self.nb_restarts)),
                ("apgd-t", self._each_target(self._apgd_t)),
                ("fab-t", self._fab_targeted),
            ]
        if self.estimator.nb_classes < 3:  # the DLR loss needs a third-largest logit
            runs = [c for c in runs if c[0] not in ("apgd-dlr", "apgd-t")]
        runs += [("square", self._square)] if images else []
        return [(name, run, self._in_ball) for name, run in runs]

    def _apgd_t(self, x: np.ndarray, targets: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self._apgd("difference_logits_ratio", 1, targeted=True)(x, targets)

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
        # ART's SquareAttack draws a square's corner in range(H - side) without capping the side at
        # H - 1 as the reference does, so on a wide non-square input (a log-mel spectrogram, 40 x 101)
        # p_init = 0.8 asks for a side wider than the image: p_init is capped so the first side fits.
        _, h, w = self.estimator.input_shape
        p_init = min(0.8, 0.99 * (min(h, w) - 1) ** 2 / (h * w))
        return square_attack_class()(  # ART's, each iteration's repeated predictions remembered
            self.estimator,
            norm=self.norm,
            eps=self.eps,
            max_iter=self.n_queries,
            p_init=p_init,
            nb_restarts=1,
            batch_size=int(self.batch_size),
            verbose=self.verbose,
        ).generate(x, self._one_hot(y))
