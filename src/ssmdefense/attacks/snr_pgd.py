"""SNR-PGD: L2 projected gradient descent (Madry et al., 2018, https://arxiv.org/abs/1706.06083)
on the waveform, in a per-example ball set by a signal-to-noise ratio, the budget audio attacks
report (e.g. Carlini & Wagner, 2018, "Audio Adversarial Examples", https://arxiv.org/abs/1801.01944,
measure distortion in dB relative to the signal).

Budget: each example's perturbation has ``||delta_i||_2 <= ||x_i||_2 * 10 ** (-snr_db / 20)``,
i.e. an SNR of at least ``snr_db`` dB (``ssmdefense.attacks._common.perturbation_snr_db`` measures
it): a loud clip may move more than a quiet one, a silent one (``||x_i|| = 0``) not at all.
20 dB allows a perturbation a tenth of the signal's norm, 40 dB a hundredth. The result also stays
inside ``clip_values``. ``eps`` is accepted only so that callers that pass a budget to every attack
(``ssmdefense evaluate``, ``evaluate_robustness``) can run it; its value is ignored: the budget is
``snr_db``.

Each restart starts at a uniformly random point of the ball (``num_random_init`` = 0: at x), then
takes ``max_iter`` steps ``x <- clip(x + P(x + step_i * g / ||g||_2))``, g the gradient of the
estimator's loss (ART's ``loss_gradient``, so its preprocessing and defences are honoured), P the
projection onto example i's ball (rescaling), ``step_i = rel_step * radius_i``. With several
restarts each example keeps the restart that fools the model, and among those (or if none does)
the one with the highest loss (lowest, targeted).

Why not ART's ``ProjectedGradientDescent`` (checked in ART 1.20.1): its projection and step accept
a per-example ``eps`` / ``eps_step`` array of shape (N, 1, 1) with ``norm=2``, but its random start
(``art.utils.random_sphere``) raises ``NotImplementedError`` for an array radius with norm 2, so
only ``num_random_init=0`` would work, and its restarts keep the last successful one rather than
the best. So the loop is written here, on the estimator's ART interface.

Cost: ``max(1, num_random_init) * max_iter`` loss gradients (a forward and a backward pass each)
per example, plus, with more than one restart, one prediction and one loss per restart.

Arguments:
    snr_db (float): smallest signal-to-noise ratio of the perturbation, in dB (finite; higher is a
        smaller budget). Default: 30.
    max_iter (int): steps per restart. Default: 10.
    rel_step (float | None): step size as a fraction of each example's radius; None means
        2.5 / max_iter (Madry et al.'s 2.5 * eps / steps). Default: None.
    num_random_init (int): random restarts (0: one run from x, no random start). Default: 1.
    targeted (bool): move towards the labels y instead of away from them (y required). Default: False.
    eps (float | None): ignored (see above). Default: None.
    batch_size (int): Default: 128.
    verbose (bool): a progress bar over batches and restarts (stderr). Default: False.

Shape: mono waveforms (N, 1, T), the estimator's natural audio shape; x_adv has the same shape and
dtype. ``y``: class indices or one-hot labels; None attacks the estimator's own predictions (as ART
does). The random starts come from NumPy's global generator (``np.random.seed`` reproduces them).

Examples::

    from ssmdefense.attacks._common import perturbation_snr_db

    attack = sd.get_attack("snr-pgd", clf, snr_db=30, max_iter=10)
    x_adv = attack.generate(x_test, y_test)
    perturbation_snr_db(x_test, x_adv).min() >= 30   # True
"""

from __future__ import annotations

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator, LossGradientsMixin
from tqdm.auto import tqdm

from ..validation import boolean, integer
from ._common import (
    check_count,
    check_ignored_eps,
    check_positive,
    check_snr,
    check_waveform_estimator,
    check_waveforms,
    class_indices,
    estimator_device,
    snr_radius,
)


class SNRPGDAttack(EvasionAttack):
    """L2 PGD inside each example's ball ``||delta|| <= ||x|| * 10 ** (-snr_db / 20)``."""

    attack_params = EvasionAttack.attack_params + [
        "snr_db",
        "max_iter",
        "rel_step",
        "num_random_init",
        "targeted",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (BaseEstimator, LossGradientsMixin, ClassifierMixin)

    def __init__(
        self,
        estimator,
        snr_db: float = 30.0,
        max_iter: int = 10,
        rel_step: float | None = None,
        num_random_init: int = 1,
        targeted: bool = False,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.snr_db = snr_db
        self.max_iter = max_iter
        self.rel_step = rel_step
        self.num_random_init = num_random_init
        self._targeted = targeted
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        import torch

        x_in = x
        x, dtype = check_waveforms("snr-pgd", x)  # float32
        if self.targeted and y is None:
            raise ValueError("targeted snr-pgd needs the target labels y")
        bs = int(self.batch_size)
        labels = class_indices(self.estimator, x, y, bs)  # (N)
        radius = snr_radius(x_in, self.snr_db)  # (N) float64
        rel_step = self.rel_step if self.rel_step is not None else 2.5 / self.max_iter
        device = estimator_device(self.estimator)
        restarts = max(1, int(self.num_random_init))
        # The random starts: a torch generator on the device, seeded from NumPy's global state.
        gen = torch.Generator(device=device)
        gen.manual_seed(int(np.random.randint(2**31 - 1)))
        x_adv = x.copy()
        starts = range(0, len(x), bs)
        with tqdm(total=len(starts) * restarts, desc="snr-pgd", disable=not self.verbose) as bar:
            for start in starts:
                xb = torch.from_numpy(x[start : start + bs]).to(device)  # (B 1 T)
                yb = labels[start : start + bs]  # (B)
                r = torch.from_numpy(radius[start : start + bs]).to(device, xb.dtype).view(-1, 1, 1)  # (B 1 1)
                best, best_score = None, None
                for _ in range(restarts):
                    xa = self._pgd(xb, yb, r, rel_step, gen)  # (B 1 T)
                    bar.update(1)
                    if restarts == 1:
                        best = xa
                        break
                    xa_np = xa.cpu().numpy()
                    score = self._score(xa_np, yb)  # (B 2): (success, loss)
                    if best is None:
                        best, best_score = xa_np, score
                        continue
                    better = (score[:, 0] > best_score[:, 0]) | (
                        (score[:, 0] == best_score[:, 0]) & (score[:, 1] > best_score[:, 1])
                    )  # (B)
                    best[better], best_score[better] = xa_np[better], score[better]
                best = best.cpu().numpy() if isinstance(best, torch.Tensor) else best
                x_adv[start : start + bs] = best
        return self._enforce_budget(np.asarray(x_in), x_adv.astype(dtype, copy=False), radius)

    def _pgd(self, xb, yb: np.ndarray, r, rel_step: float, gen):
        """One restart on a batch: (B 1 T) -> (B 1 T) inside the balls of radius r (B 1 1)."""
        import torch

        clip = self.estimator.clip_values
        lo, hi = (float(clip[0]), float(clip[1])) if clip is not None else (-np.inf, np.inf)
        B, d = xb.shape[0], xb[0].numel()
        onehot = torch.nn.functional.one_hot(torch.from_numpy(yb), self.estimator.nb_classes)
        onehot = onehot.to(xb.device, torch.float32)  # (B K): ART's label format
        if self.num_random_init > 0:
            direction = torch.randn(xb.shape, generator=gen, device=xb.device, dtype=xb.dtype)  # (B 1 T)
            direction = direction / _norm(direction).clamp_min(1e-12)
            u = torch.rand((B, 1, 1), generator=gen, device=xb.device, dtype=xb.dtype)  # (B 1 1)
            xa = (xb + direction * r * u ** (1.0 / d)).clamp(lo, hi)  # uniform in the ball, then clipped
        else:
            xa = xb.clone()
        sign = -1.0 if self.targeted else 1.0
        for _ in range(int(self.max_iter)):
            g = sign * self._gradient(xa, onehot)  # (B 1 T)
            xa = xa + rel_step * r * g / _norm(g).clamp_min(1e-30)
            delta = xa - xb  # (B 1 T)
            delta = delta * torch.clamp(r / _norm(delta).clamp_min(1e-30), max=1.0)  # onto the ball
            xa = (xb + delta).clamp(lo, hi)  # clipping moves values towards x: stays in the ball
        return xa.detach()

    def _gradient(self, xa, onehot):
        """The estimator's loss gradient at xa (a torch tensor on its device), through ART."""
        import torch
        from art.estimators.classification import PyTorchClassifier

        if isinstance(self.estimator, PyTorchClassifier) and self.estimator.all_framework_preprocessing:
            return self.estimator.loss_gradient(xa, onehot)  # stays on the device
        grad = self.estimator.loss_gradient(xa.cpu().numpy(), onehot.cpu().numpy())
        return torch.from_numpy(np.asarray(grad)).to(xa.device, xa.dtype)

    def _score(self, xa: np.ndarray, yb: np.ndarray) -> np.ndarray:
        """(B 2): per example, whether the attack succeeded (1.0 / 0.0) and its loss (negated when targeted)."""
        import torch

        bs = int(self.batch_size)
        pred = self.estimator.predict(xa, batch_size=bs).argmax(axis=1)  # (B)
        success = pred == yb if self.targeted else pred != yb
        with torch.no_grad():
            loss = np.asarray(self.estimator.compute_loss(xa, yb, reduction="none"), dtype=np.float64).reshape(-1)
        return np.stack([success.astype(np.float64), -loss if self.targeted else loss], axis=1)

    @staticmethod
    def _enforce_budget(x: np.ndarray, x_adv: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """Guard against float32 rounding: an example whose perturbation (measured in float64) is
        past its radius is pulled back towards x; after a few tries, x itself."""
        for _ in range(4):
            delta = (x_adv.astype(np.float64) - x).reshape(len(x), -1)  # (N T)
            norm = np.linalg.norm(delta, axis=1)  # (N)
            over = norm > radius
            if not over.any():
                return x_adv
            scale = (radius[over] / norm[over] * (1 - 1e-6)).reshape(-1, *([1] * (x.ndim - 1)))
            x_adv[over] = (x[over] + (x_adv[over] - x[over]) * scale).astype(x_adv.dtype)
        over = np.linalg.norm((x_adv.astype(np.float64) - x).reshape(len(x), -1), axis=1) > radius
        x_adv[over] = x[over]
        return x_adv

    def _check_params(self) -> None:
        super()._check_params()
        check_snr("snr_db", self.snr_db)
        check_count("max_iter", self.max_iter)
        check_positive(rel_step=self.rel_step, optional=("rel_step",))
        integer("num_random_init", self.num_random_init, 0, numpy=True)
        check_count("batch_size", self.batch_size)
        for name in ("targeted", "verbose"):
            boolean(name, getattr(self, name))


def _norm(t):
    """Per-example L2 norm of a (B ...) tensor, shaped (B 1 ... 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def snr_pgd(
    estimator,
    *,
    snr_db: float = 30.0,
    max_iter: int = 10,
    rel_step: float | None = None,
    num_random_init: int = 1,
    targeted: bool = False,
    eps: float | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> SNRPGDAttack:
    """The ``snr-pgd`` attack bound to ``estimator`` (see the module docstring)."""
    check_ignored_eps("snr-pgd", eps)
    check_waveform_estimator("snr-pgd", estimator)
    return SNRPGDAttack(
        estimator,
        snr_db=snr_db,
        max_iter=max_iter,
        rel_step=rel_step,
        num_random_init=num_random_init,
        targeted=targeted,
        batch_size=batch_size,
        verbose=verbose,
    )
