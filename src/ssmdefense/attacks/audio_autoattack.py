"""Audio AutoAttack: a standard-strength ensemble for waveform classifiers, after Croce & Hein's
AutoAttack (ICML 2020, https://arxiv.org/abs/2003.01690), over the two budgets audio reports state:
the L-inf ball of ``eps`` on the waveform and each clip's SNR ball (L2, radius
``||x||_2 * 10 ** (-snr_db / 20)``, ``snr-pgd``'s budget).

``version="standard"`` (the default), in this order, each component attacking only the clips every
earlier one left correctly classified:

1. ``apgd-ce``: ART's ``AutoProjectedGradientDescent`` on cross-entropy, L-inf ``eps``, 100 iterations;
2. ``apgd-t``: ART's APGD on the targeted DLR loss, L-inf, 100 iterations against each of the
   ``n_target_classes`` classes (n_classes - 1, at most 9) with the highest logits after the true one;
3. ``square-1d``: the Square Attack with 1-D segment updates (``attacks/square_1d.py``), L-inf ``eps``,
   ``n_queries`` (5,000) queries: score-based, no gradient, so masked or obfuscated gradients cannot
   hide a weakness from it;
4. ``snr-apgd-ce``: ``snr-apgd`` (APGD in each clip's SNR ball, ``attacks/snr_apgd.py``), 100 iterations;
5. ``snr-apgd-t``: ``snr-apgd`` on the targeted DLR loss, the same targets, in the SNR ball.

A clip counts as robust only if it survives all five, so the ensemble's accuracy is the per-clip
worst case over both threat models: a perturbation inside either ball that fools the model is a
success. The L-inf components come first, so the accuracy after ``square-1d`` is the L-inf
ensemble's alone (``LINF``: comparable with image AutoAttack, with PGD-10 and with other
libraries' L-inf AutoAttack); the last two add the SNR ball. ``breakdown`` holds the accuracy after
each component with its seconds, ``robust_after`` the clips left after each, ``components`` what
ran. Every candidate is put back into its own ball and the clip range before it counts.

What is left out of image AutoAttack, and why: FAB-T (a minimum-norm attack; on every measured
image model it broke nothing APGD-T had not, and at audio length its per-step projections cost
more than APGD-T) and the square-window Square (replaced by segments: a waveform has one axis).
``version="fast"`` is a cheap check (20 iterations, 3 targets, 500 queries), not a headline figure.
With fewer than 3 classes the DLR components are left out.

Arguments:
    eps (float): the L-inf budget on the waveform (the run's eps). Default: 0.001.
    snr_db (float): the SNR ball's budget in dB (higher is smaller). Default: 30.
    version (str): "standard" or "fast". Default: "standard".
    max_iter (int | None): APGD iterations per run; None: 100 (standard), 20 (fast). Default: None.
    n_queries (int | None): Square's queries; None: 5000 (standard), 500 (fast). Default: None.
    n_target_classes (int | None): targets of the targeted components, at most nb_classes - 1; None: 9
        (standard, or nb_classes - 1 if fewer), 3 (fast). Default: None.
    batch_size (int): Default: 128.
    verbose (bool): a line per component with its accuracy, and the components' progress bars. Default: False.

Shape: mono waveforms (N, 1, T) (the estimator's natural audio shape); x_adv has the same shape.

Examples::

    attack = sd.get_attack("audio-autoattack", clf, eps=0.001, snr_db=30)
    x_adv = attack.generate(x_test, y_test)
    attack.breakdown   # [{"component": "clean", ...}, {"component": "apgd-ce", ...}, ..., "square-1d"]
"""

from __future__ import annotations

import numpy as np
from art.estimators.classification import PyTorchClassifier

from ._common import (
    check_count,
    check_positive,
    check_snr,
    check_targets,
    check_waveform_estimator,
    snr_radius,
)
from ._ensemble import Ensemble
from .snr_apgd import SNRAPGDAttack
from .snr_pgd import SNRPGDAttack
from .square_1d import Square1DAttack

VERSIONS = ("standard", "fast")
LINF = ("apgd-ce", "apgd-t", "square-1d")  # the components in the L-inf ball, run first


class AudioAutoAttack(Ensemble):
    """The audio ensemble over the L-inf and SNR balls; see the module docstring."""

    name = "audio-autoattack"
    attack_params = Ensemble.attack_params + [
        "eps",
        "snr_db",
        "version",
        "max_iter",
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
        eps: float = 0.001,
        snr_db: float = 30.0,
        version: str = "standard",
        max_iter: int | None = None,
        n_queries: int | None = None,
        n_target_classes: int | None = None,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        fast = version == "fast"
        self.eps, self.snr_db, self.version = eps, snr_db, version
        self.max_iter, self.n_queries = max_iter, n_queries
        default_targets = min(3 if fast else 9, estimator.nb_classes - 1)
        self.n_target_classes = default_targets if n_target_classes is None else n_target_classes
        self.batch_size, self.verbose = batch_size, verbose
        self.norm = np.inf  # the L-inf components (the SNR ones have their own ball)
        self._check_params()
        self.max_iter = int(max_iter or (20 if fast else 100))
        self.n_queries = int(n_queries or (500 if fast else 5000))
        self.eps_step = 2 * eps  # APGD's initial step (Croce & Hein's)
        self.breakdown: list[dict] = []
        self.components = [name for name, _, _ in self._components()]

    def _check_params(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(VERSIONS)}; got {self.version!r}")
        optional = ("max_iter", "n_queries")
        check_positive(eps=self.eps, max_iter=self.max_iter, n_queries=self.n_queries, optional=optional)
        check_snr("snr_db", self.snr_db)
        check_count("batch_size", self.batch_size)
        check_targets(self.n_target_classes, self.estimator.nb_classes)
        check_waveform_estimator("audio-autoattack", self.estimator)

    # ---- the components ------------------------------------------------------------------------------
    def _components(self):
        dlr = self.estimator.nb_classes >= 3  # the DLR loss needs a third-largest logit
        linf = [
            ("apgd-ce", self._apgd("cross_entropy", 1), self._in_ball),
            ("apgd-t", self._each_target(self._apgd_t), self._in_ball),
            ("square-1d", self._square, self._in_ball),
        ]
        snr = [
            ("snr-apgd-ce", self._snr_apgd_ce, self._in_snr_ball),
            ("snr-apgd-t", self._each_target(self._snr_apgd_t), self._in_snr_ball),
        ]
        return [c for c in linf + snr if dlr or not c[0].endswith("-t")]

    def _apgd_t(self, x: np.ndarray, targets: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self._apgd("difference_logits_ratio", 1, targeted=True)(x, targets)

    def _snr_apgd(self, loss: str, targeted: bool) -> SNRAPGDAttack:
        return SNRAPGDAttack(
            self.estimator,
            snr_db=self.snr_db,
            max_iter=self.max_iter,
            loss=loss,
            targeted=targeted,
            batch_size=int(self.batch_size),
            verbose=self.verbose,
        )

    def _snr_apgd_ce(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._snr_apgd("ce", targeted=False).generate(x, y)

    def _snr_apgd_t(self, x: np.ndarray, targets: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self._snr_apgd("dlr", targeted=True).generate(x, targets, y_true=labels)

    def _square(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return Square1DAttack(
            self.estimator,
            eps=self.eps,
            max_iter=self.n_queries,
            p_init=0.8,
            nb_restarts=1,
            batch_size=int(self.batch_size),
            verbose=self.verbose,
        ).generate(x, y)

    def _in_snr_ball(self, x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
        """x_adv projected into each clip's SNR ball (rescaled, in float64) and the clip range."""
        radius = snr_radius(x, self.snr_db)  # (n)
        delta = (x_adv.astype(np.float64) - x).reshape(len(x), -1)  # (n T)
        norms = np.linalg.norm(delta, axis=1, keepdims=True)  # (n 1)
        delta *= np.minimum(1.0, radius[:, None] / np.maximum(norms, 1e-30))
        lo, hi = self.estimator.clip_values
        x_adv = np.clip(x + delta.reshape(x.shape), lo, hi).astype(x.dtype)
        return SNRPGDAttack._enforce_budget(x, x_adv, radius)  # float32 rounding past the radius
