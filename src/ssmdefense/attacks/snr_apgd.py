"""SNR-APGD: Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks", https://arxiv.org/abs/2003.01690, Algorithm 1) with
the L2 norm on the waveform, in a per-example ball set by a signal-to-noise ratio, the budget audio
attacks report (as ``snr-pgd``).

Budget: each example's perturbation has ``||delta_i||_2 <= r_i = ||x_i||_2 * 10 ** (-snr_db / 20)``,
an SNR of at least ``snr_db`` dB (``ssmdefense.attacks._common.perturbation_snr_db`` measures it);
a silent clip (``||x_i|| = 0``) does not move. The result also stays inside ``clip_values``. ``eps``
is accepted only so that callers that pass a budget to every attack can run it; its value is
ignored: the budget is ``snr_db``.

APGD is PGD without a step size to tune. As in Croce & Hein's reference code (autoattack's
``autopgd_base.py``, L2), per example and restart:

- start at ``x_0 = clip(x + r_i u / ||u||)``, u Gaussian (a random point of the sphere), step
  ``eta_i = 2 r_i``;
- step ``z = P(x_k + eta_i g / ||g||)`` (g the loss gradient), then with momentum
  ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a) (x_k - x_{k-1}))``, a = 0.75 (1 at the first step),
  P the projection onto the example's ball followed by clipping to ``clip_values`` (clipping after
  rescaling only moves values towards x, so the point stays in the ball);
- checkpoints after ``max(int(0.22 N), 1)`` iterations, then at intervals shrinking by
  ``max(int(0.03 N), 1)`` down to ``max(int(0.06 N), 1)`` (N = ``max_iter``). At a checkpoint an
  example halves its step and restarts from its best point (and that point's gradient) if (a) its
  loss increased in at most ``rho * k`` of the last k steps, or (b) its step was not halved at the
  previous checkpoint and its best loss has not improved since then.

Losses (computed on the model's logits z, y the true class, t the target):

- ``"ce"``: cross-entropy of y, maximised; targeted: ``-CE(z, t)``, maximised (towards t);
- ``"dlr"``: the Difference of Logits Ratio, ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)``,
  pi sorting the logits decreasingly; targeted (APGD-T's loss):
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, with 3 classes ``z_pi3`` alone in place
  of the mean. DLR needs at least 3 classes.

Success is misclassification, ``pred != y`` (also targeted, as AutoAttack's APGD-T counts it). Per
example the result is the first iterate that is misclassified, else the point of highest loss;
examples misclassified as given are returned unchanged, and each further restart attacks only the
examples not fooled yet (keeping the best-loss point of all restarts for those never fooled). A
final check in float64 pulls back any example that float32 rounding put past its radius.

Why not ART's ``AutoProjectedGradientDescent`` (checked in ART 1.20.1): its ``eps`` and
``eps_step`` must be single floats (one radius for every example), while here each example has its
own radius ``r_i``. So the loop is written here, in torch on the estimator's device, through the
estimator's preprocessing and model (its logits, as ``fab`` obtains them).

Cost: ``max_iter`` forward and backward passes per example and restart (plus one forward pass per
example for the check of the clean input).

Arguments:
    snr_db (float): smallest signal-to-noise ratio of the perturbation, in dB (finite; higher is a
        smaller budget). Default: 30.
    max_iter (int): iterations per restart (AutoAttack: 100). Default: 100.
    loss (str): "ce" or "dlr" (see above). Default: "ce".
    targeted (bool): move towards the target classes y; the true labels then go in ``y_true=``
        (required). Default: False.
    nb_restarts (int): restarts, each from a new random start, on the examples not fooled yet.
        Default: 1.
    rho (float): the oscillation threshold of the checkpoints, in (0, 1). Default: 0.75.
    eps (float | None): ignored (see above). Default: None.
    batch_size (int): Default: 128.
    verbose (bool): a progress bar over batches and restarts (stderr). Default: False.

Shape: mono waveforms (N, 1, T), the estimator's natural audio shape; x_adv has the same shape and
dtype. ``y``: class indices or one-hot labels, the true classes (None: the estimator's predictions)
or, with ``targeted=True``, the target classes (required; then ``generate(x, y, y_true=...)``).
The random starts come from a torch generator seeded from NumPy's global generator, so
``np.random.seed`` reproduces them.

Examples::

    from ssmdefense.attacks._common import perturbation_snr_db

    attack = sd.get_attack("snr-apgd", clf, snr_db=30, max_iter=100)
    x_adv = attack.generate(x_test, y_test)
    perturbation_snr_db(x_test, x_adv).min() >= 30   # True

    # APGD-T against the second most likely class
    targets = clf.predict(x_test).argsort(axis=1)[:, -2]
    apgd_t = sd.get_attack("snr-apgd", clf, snr_db=30, loss="dlr", targeted=True)
    x_adv = apgd_t.generate(x_test, targets, y_true=y_test)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.attack import EvasionAttack
from art.estimators.classification import PyTorchClassifier
from tqdm.auto import tqdm

from ..modes import eval_mode
from ..validation import boolean, is_number
from ._common import (
    check_count,
    check_ignored_eps,
    check_snr,
    check_waveform_estimator,
    check_waveforms,
    class_indices,
    estimator_device,
    snr_radius,
)
from .snr_pgd import SNRPGDAttack

LOSSES = ("ce", "dlr")


class SNRAPGDAttack(EvasionAttack):
    """L2 Auto-PGD inside each example's ball ``||delta|| <= ||x|| * 10 ** (-snr_db / 20)``."""

    attack_params = EvasionAttack.attack_params + [
        "snr_db",
        "max_iter",
        "loss",
        "nb_restarts",
        "rho",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (PyTorchClassifier,)

    def __init__(
        self,
        estimator,
        snr_db: float = 30.0,
        max_iter: int = 100,
        loss: str = "ce",
        targeted: bool = False,
        nb_restarts: int = 1,
        rho: float = 0.75,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.snr_db = snr_db
        self.max_iter = max_iter
        self.loss = loss
        self._targeted = targeted
        self.nb_restarts = nb_restarts
        self.rho = rho
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """x_adv for waveforms x (N, 1, T); ``y_true=`` (the true labels) only with ``targeted``."""
        x_in = np.asarray(x)
        x, dtype = check_waveforms("snr-apgd", x_in)  # float32
        bs = int(self.batch_size)
        y_true = kwargs.get("y_true")
        if self.targeted:
            if y is None:
                raise ValueError("targeted snr-apgd needs the target labels y")
            if y_true is None:
                raise ValueError("targeted snr-apgd needs the true labels too: generate(x, y=targets, y_true=labels)")
            targets = class_indices(self.estimator, x, y, bs)  # (N)
            labels = class_indices(self.estimator, x, y_true, bs)  # (N)
        else:
            if y_true is not None:
                raise ValueError("y_true is only for targeted=True; untargeted snr-apgd takes the true labels as y")
            labels = class_indices(self.estimator, x, y, bs)  # (N)
            targets = labels
        radius = snr_radius(x_in, self.snr_db)  # (N) float64
        device = estimator_device(self.estimator)
        clip = self.estimator.clip_values
        bounds = (float(clip[0]), float(clip[1])) if clip is not None else (-np.inf, np.inf)
        # The random starts: a torch generator on the device, seeded from NumPy's global state.
        gen = torch.Generator(device=device)
        gen.manual_seed(int(np.random.randint(2**31 - 1)))
        x_adv = x.copy()
        restarts = int(self.nb_restarts)
        starts = range(0, len(x), bs)
        with (
            eval_mode(self.estimator.model),
            tqdm(total=len(starts) * restarts, desc="snr-apgd", disable=not self.verbose) as bar,
        ):
            for start in starts:
                xb = torch.from_numpy(x[start : start + bs]).to(device)  # (B 1 T)
                yb = torch.from_numpy(labels[start : start + bs]).to(device)  # (B)
                tb = torch.from_numpy(targets[start : start + bs]).to(device)  # (B)
                r = torch.from_numpy(radius[start : start + bs]).to(device, xb.dtype).view(-1, 1, 1)  # (B 1 1)
                with torch.no_grad():
                    todo = self._logits(xb).argmax(1) == yb  # (B): misclassified as given: left as it is
                best = xb.clone()  # (B 1 T)
                best_loss = torch.full((len(xb),), -torch.inf, device=device)  # (B)
                for _ in range(restarts):
                    bar.update(1)
                    idx = todo.nonzero().squeeze(1)  # (A)
                    if idx.numel() == 0:
                        continue
                    xa, fooled, loss = self._run(xb[idx], yb[idx], tb[idx], r[idx], bounds, gen)  # (A 1 T), (A), (A)
                    keep = fooled | (loss > best_loss[idx])  # (A): a success, or a higher loss
                    best[idx[keep]] = xa[keep]
                    best_loss[idx[keep]] = loss[keep]
                    todo[idx[fooled]] = False
                x_adv[start : start + bs] = best.cpu().numpy()
        return SNRPGDAttack._enforce_budget(x_in, x_adv.astype(dtype, copy=False), radius)

    # ---- the model, through torch --------------------------------------------------------------------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B C) logits of x (B 1 T) through the estimator's preprocessing and model."""
        x_pre, _ = self.estimator._apply_preprocessing(x, y=None, fit=False, no_grad=False)
        return self.estimator._model(x_pre)[-1]  # (B C)

    def _loss(self, z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B) the loss to maximise from logits z (B C), true classes y (B) and targets t (B)."""
        if self.loss == "ce":
            if self.targeted:
                return -F.cross_entropy(z, t, reduction="none")  # towards t
            return F.cross_entropy(z, y, reduction="none")
        zs = z.sort(dim=1, descending=True).values  # (B C) z_pi1 >= z_pi2 >= ...
        z_y = z.gather(1, y[:, None]).squeeze(1)  # (B)
        if self.targeted:
            z_t = z.gather(1, t[:, None]).squeeze(1)  # (B)
            low = (zs[:, 2] + zs[:, 3]) / 2 if z.shape[1] >= 4 else zs[:, 2]  # (B)
            return -(z_y - z_t) / (zs[:, 0] - low + 1e-12)
        other = torch.where(z.argmax(1) == y, zs[:, 1], zs[:, 0])  # (B) max_{j != y} z_j
        return -(z_y - other) / (zs[:, 0] - zs[:, 2] + 1e-12)

    def _loss_grad(self, xa: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
        """(loss (B), its gradient (B 1 T), whether misclassified (B)) at xa (B 1 T)."""
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            z = self._logits(xa)  # (B C)
            loss = self._loss(z, y, t)  # (B)
            (grad,) = torch.autograd.grad(loss.sum(), xa)
        return loss.detach(), grad.detach(), z.detach().argmax(1) != y

    # ---- one APGD run --------------------------------------------------------------------------------
    def _run(self, xb, yb, tb, r, bounds, gen):
        """One restart on a batch xb (B 1 T) with radii r (B 1 1): (x_adv (B 1 T), fooled (B), loss (B)),
        x_adv the first misclassified iterate, else the point of highest loss (whose loss is returned)."""
        lo, hi = bounds
        n = int(self.max_iter)
        k = max(int(0.22 * n), 1)  # iterations to the first checkpoint
        size_decr, k_min = max(int(0.03 * n), 1), max(int(0.06 * n), 1)

        def project(xp):  # onto each example's ball, then into the clip range
            delta = xp - xb  # (B 1 T)
            delta = delta * torch.clamp(r / _norm(delta).clamp_min(1e-30), max=1.0)
            return (xb + delta).clamp(lo, hi)

        u = torch.randn(xb.shape, generator=gen, device=xb.device, dtype=xb.dtype)  # (B 1 T)
        xa = (xb + r * u / (_norm(u) + 1e-12)).clamp(lo, hi)  # (B 1 T) a random point of the sphere
        loss, grad, fooled = self._loss_grad(xa, yb, tb)  # (B), (B 1 T), (B)
        adv = xa.clone()  # (B 1 T) the first misclassified iterate (the start, if it is)
        found = fooled.clone()  # (B)
        x_best, grad_best, loss_best = xa.clone(), grad.clone(), loss.clone()  # best-loss point
        history = [loss]  # losses at x_0, x_1, ...: the oscillation check counts increases
        step = 2.0 * r  # (B 1 1)
        x_old = xa.clone()  # (B 1 T)
        loss_best_last_check = loss_best.clone()  # (B)
        reduced_last_check = torch.ones_like(found)  # (B)
        since_check = 0
        for i in range(n):
            with torch.no_grad():
                momentum = xa - x_old  # (B 1 T)
                x_old = xa
                a = 0.75 if i > 0 else 1.0
                z = project(xa + step * grad / (_norm(grad) + 1e-12))  # (B 1 T)
                xa = project(xa + a * (z - xa) + (1 - a) * momentum)  # (B 1 T)
            loss, grad, fooled = self._loss_grad(xa, yb, tb)
            first = fooled & ~found  # (B)
            adv[first] = xa[first]
            found |= fooled
            history.append(loss)
            better = loss > loss_best  # (B)
            x_best[better], grad_best[better], loss_best[better] = xa[better], grad[better], loss[better]
            since_check += 1
            if since_check == k:  # a checkpoint
                increases = (torch.stack(history[-k:]) > torch.stack(history[-k - 1 : -1])).sum(0)  # (B)
                oscillating = increases <= self.rho * k  # (B) (a)
                stalled = ~reduced_last_check & (loss_best_last_check >= loss_best)  # (B) (b)
                reduce = oscillating | stalled  # (B)
                reduced_last_check, loss_best_last_check = reduce, loss_best.clone()
                step[reduce] /= 2.0
                xa = torch.where(reduce.view(-1, 1, 1), x_best, xa)  # restart from the best point
                grad = torch.where(reduce.view(-1, 1, 1), grad_best, grad)
                since_check = 0
                k = max(k - size_decr, k_min)
        out = torch.where(found.view(-1, 1, 1), adv, x_best)  # (B 1 T)
        return out, found, loss_best

    def _check_params(self) -> None:
        super()._check_params()
        check_snr("snr_db", self.snr_db)
        check_count("max_iter", self.max_iter)
        check_count("nb_restarts", self.nb_restarts)
        check_count("batch_size", self.batch_size)
        if not (is_number(self.rho, numpy=True) and 0 < self.rho < 1):
            raise ValueError(f"rho must be a number in (0, 1) (the paper: 0.75); got {self.rho!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        for name in ("targeted", "verbose"):
            boolean(name, getattr(self, name))
        if self.loss == "dlr" and self.estimator.nb_classes < 3:
            raise ValueError(
                f"loss='dlr' needs at least 3 classes (it divides by z_pi1 - z_pi3); the estimator has "
                f"{self.estimator.nb_classes}: use loss='ce'"
            )


def _norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of a (B ...) tensor, shaped (B 1 ... 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def snr_apgd(
    estimator,
    *,
    snr_db: float = 30.0,
    max_iter: int = 100,
    loss: str = "ce",
    targeted: bool = False,
    nb_restarts: int = 1,
    rho: float = 0.75,
    eps: float | None = None,
    batch_size: int = 128,
    verbose: bool = False,
) -> SNRAPGDAttack:
    """The ``snr-apgd`` attack bound to ``estimator`` (see the module docstring)."""
    check_ignored_eps("snr-apgd", eps)
    check_waveform_estimator("snr-apgd", estimator)
    return SNRAPGDAttack(
        estimator,
        snr_db=snr_db,
        max_iter=max_iter,
        loss=loss,
        targeted=targeted,
        nb_restarts=nb_restarts,
        rho=rho,
        batch_size=batch_size,
        verbose=verbose,
    )
