"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack", https://arxiv.org/abs/1907.02044), the
third component of the standard AutoAttack.

FAB looks for the smallest perturbation that changes the class. Against target class t, each step
linearises the decision boundary between the true class y and t at the current point x_i (the
hyperplane ``g(x_i) + grad g(x_i) . (z - x_i) = 0`` of ``g = z_t - z_y``), projects both x_i and the
original input x_0 onto it (the smallest step in the attack's norm that reaches it, inside the box
``clip_values``), and moves to a mix of the two projections biased towards x_0:

    x_{i+1} = clip((1 - a) (x_i + eta d_i) + a (x_0 + eta d_0)),  a = min(|d_i| / (|d_i| + |d_0|), alpha_max)

When x_{i+1} is misclassified (any class but y: FAB-T's success is untargeted) it is kept if it is
the closest so far, and FAB steps back towards x_0: ``x <- x_0 + beta (x - x_0)``. On a linear
classifier the linearisation is exact, so FAB reaches the minimal perturbation (the property the
paper's method rests on; ``tests/test_attacks_autoattack.py`` checks it). The result is reported
*at* ``eps``: an example whose closest adversarial point is farther than ``eps`` comes back
unchanged. Targets are the ``n_target_classes`` classes with the highest logits at x_0 after the
top one, as in AutoAttack; the first restart starts at x_0, later ones at a random point of the
eps-ball.

Written here because no maintained library we can install has it: ART has no FAB, Foolbox 3 has
none, and torchattacks (which has one) pins ``requests~=2.25.1``. The projection onto a hyperplane
inside a box is solved exactly for L-inf and L2 by bisection on the step's single scale parameter
(``project``), in place of the paper's sorting algorithm: simpler to read, same answer to float
precision.

Arguments:
    eps (float): budget the result is scored at. Default: 0.1.
    norm (str): "inf" or "2". Default: "inf".
    max_iter (int): steps per target and restart (AutoAttack: 100). Default: 100.
    n_target_classes (int | None): targets per example, at most nb_classes - 1; None: 9 (AutoAttack's;
        nb_classes - 1 if fewer). Default: None.
    nb_restarts (int): restarts per target. Default: 1.
    eta (float): overshoot of the projection step, >= 1 (the paper: 1.05). Default: 1.05.
    beta (float): backward step after a success, in (0, 1) (the paper: 0.9). Default: 0.9.
    alpha_max (float): largest bias towards x_0, in [0, 1] (the paper: 0.1). Default: 0.1.
    batch_size (int): Default: 128.
    verbose (bool): a progress bar over targets. Default: False.

After ``generate``, ``min_norms`` holds each example's smallest adversarial perturbation found
(inf: none found; 0: misclassified as given).

Examples::

    attack = sd.get_attack("fab", clf, eps=0.1)
    x_adv = attack.generate(x_test, y_test)
"""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification import PyTorchClassifier
from tqdm.auto import tqdm

from .. import progress
from ..modes import eval_mode
from ._common import (
    check_count,
    check_number,
    check_positive,
    check_targets,
    class_indices,
    estimator_device,
    parse_norm,
)


def project(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lo, hi, norm) -> torch.Tensor:
    """The smallest step d (in ``norm``) with ``w . d = c`` and ``lo <= x + d <= hi``, per row.

    x, w (B D); c (B). Moving each coordinate in the direction that helps, sign(c) sign(w_j), the
    step is ``d_j = s_j min(m a_j, u_j)`` for one scale m >= 0: ``a_j = 1`` for L-inf (every
    coordinate moves by the same amount until it meets the box), ``a_j = |w_j|`` for L2 (the step is
    parallel to w until a coordinate meets the box), u_j the room to the box. ``w . d`` grows with m,
    so m is found by bisection; where even the whole box cannot reach the hyperplane, the step goes
    as far as the box allows.
    """
    s = torch.sign(c)[:, None] * torch.sign(w)  # (B D) direction of each coordinate
    room = torch.where(s > 0, hi - x, x - lo).clamp(min=0)  # (B D) u_j
    aw = w.abs()  # (B D)
    a = torch.ones_like(w) if norm == np.inf else aw  # (B D)
    target = c.abs()  # (B)

    def reached(m):  # m (B) -> (B): |w . d(m)|
        return (aw * torch.minimum(m[:, None] * a, room)).sum(1)

    with torch.no_grad():
        m_max = torch.where(a > 0, room / a.clamp(min=1e-30), torch.zeros_like(a)).amax(1)  # (B)
        lo_m, hi_m = torch.zeros_like(target), m_max  # (B), (B)
        for _ in range(60):  # halves the bracket up to 60 times: float64-exact
            mid = (lo_m + hi_m) / 2  # (B)
            short = reached(mid) < target  # (B)
            new_lo, new_hi = torch.where(short, mid, lo_m), torch.where(short, hi_m, mid)
            if torch.equal(new_lo, lo_m) and torch.equal(new_hi, hi_m):
                break  # a fixed point (mid rounds to an end of every bracket): more halvings change nothing
            lo_m, hi_m = new_lo, new_hi
        return s * torch.minimum(hi_m[:, None] * a, room)  # (B D)


class FABTargeted(EvasionAttack):
    """Targeted FAB (FAB-T), reported at ``eps``; see the module docstring."""

    attack_params = EvasionAttack.attack_params + [
        "eps",
        "norm",
        "max_iter",
        "n_target_classes",
        "nb_restarts",
        "eta",
        "beta",
        "alpha_max",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (PyTorchClassifier,)

    def __init__(
        self,
        estimator,
        *,
        eps: float = 0.1,
        norm="inf",
        max_iter: int = 100,
        n_target_classes: int | None = None,
        nb_restarts: int = 1,
        eta: float = 1.05,
        beta: float = 0.9,
        alpha_max: float = 0.1,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.eps, self.norm, self.max_iter = eps, parse_norm(norm), max_iter
        self.n_target_classes = min(9, estimator.nb_classes - 1) if n_target_classes is None else n_target_classes
        self.nb_restarts = nb_restarts
        self.eta, self.beta, self.alpha_max = eta, beta, alpha_max
        self.batch_size, self.verbose = batch_size, verbose
        self.min_norms: np.ndarray | None = None
        self._check_params()

    def _check_params(self) -> None:
        check_positive(eps=self.eps)
        for key in ("max_iter", "nb_restarts", "batch_size"):
            check_count(key, getattr(self, key))
        check_targets(self.n_target_classes, self.estimator.nb_classes)
        check_number("eta", self.eta, 1.0)
        check_number("alpha_max", self.alpha_max, 0.0, 1.0)
        if not (isinstance(self.beta, (int, float)) and 0 < self.beta < 1):  # open interval: 1 never steps back
            raise ValueError(f"beta must be in (0, 1); got {self.beta!r}")
        if self.estimator.clip_values is None:
            raise ValueError("fab needs an estimator with clip_values (the box its projections stay in)")

    # ---- the model, through torch: one backward pass gives grad (z_t - z_y) for every row ----------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x_pre, _ = self.estimator._apply_preprocessing(x, y=None, fit=False, no_grad=False)
        return self.estimator._model(x_pre)[-1]  # (B C)

    def _difference(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
        """(g = z_t - z_y (B), grad g (B D)) at x (B D)."""
        x = x.detach().requires_grad_(True)
        z = self._logits(x.view(len(x), *self.estimator.input_shape))  # (B C)
        g = z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)  # (B)
        (grad,) = torch.autograd.grad(g.sum(), x)
        return g.detach(), grad.detach()

    def _fooled(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._logits(x.view(len(x), *self.estimator.input_shape)).argmax(1) != y  # (B)

    def _norm(self, d: torch.Tensor) -> torch.Tensor:
        return d.abs().amax(1) if self.norm == np.inf else d.norm(dim=1)  # (B)

    def _random_start(self, x0: torch.Tensor, lo, hi) -> torch.Tensor:
        if self.norm == np.inf:
            d = (torch.rand_like(x0) * 2 - 1) * self.eps  # (B D)
        else:
            d = torch.randn_like(x0)  # (B D)
            d = d / d.norm(dim=1, keepdim=True) * self.eps * torch.rand(len(x0), 1, dtype=x0.dtype)
        return (x0 + d).clamp(lo, hi)

    def _attack_target(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, best, adv):
        """One FAB-T run per restart against targets t; improves ``best`` (B) norms and ``adv`` (B D)."""
        lo, hi = (float(v) for v in self.estimator.clip_values)
        for restart in range(self.nb_restarts):
            x = x0.clone() if restart == 0 else self._random_start(x0, lo, hi)  # (B D)
            for _ in range(self.max_iter):
                g, w = self._difference(x, y, t)  # (B), (B D)
                d_x = project(x, w, -g, lo, hi, self.norm)  # (B D) to the linearised boundary from x
                c0 = -(g + (w * (x0 - x)).sum(1))  # (B): the same hyperplane, seen from x0
                d_0 = project(x0, w, c0, lo, hi, self.norm)  # (B D)
                n_x, n_0 = self._norm(d_x), self._norm(d_0)  # (B), (B)
                a = (n_x / (n_x + n_0).clamp(min=1e-12)).clamp(max=self.alpha_max)[:, None]  # (B 1)
                x = ((1 - a) * (x + self.eta * d_x) + a * (x0 + self.eta * d_0)).clamp(lo, hi)  # (B D)
                fooled = self._fooled(x, y)  # (B)
                dist = self._norm(x - x0)  # (B)
                better = fooled & (dist < best)  # (B)
                best[better], adv[better] = dist[better], x[better]
                x = torch.where(fooled[:, None], x0 + self.beta * (x - x0), x)  # step back after a success

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
        bs = int(self.batch_size)
        labels = class_indices(self.estimator, x, y, bs)  # (N)
        logits = self.estimator.predict(x.astype(np.float32), batch_size=bs)  # (N C)
        device = estimator_device(self.estimator)
        x_adv = x.astype(dtype, copy=True)
        self.min_norms = np.full(len(x), np.inf)
        self.min_norms[logits.argmax(1) != labels] = 0.0
        ranked = np.argsort(-logits, axis=1)  # (N C) classes by logit, highest first
        flat = x.reshape(len(x), -1).astype(np.float32)  # (N D)
        todo = np.flatnonzero(self.min_norms > 0)
        with (
            eval_mode(self.estimator.model),
            tqdm(total=self.n_target_classes, desc="fab-t", disable=not self.verbose) as bar,
        ):
            for k in range(1, self.n_target_classes + 1):
                bar.update(1)
                progress.status(f"target {k}/{self.n_target_classes}, {len(todo)} samples")
                for start in range(0, len(todo), bs):
                    idx = todo[start : start + bs]  # (B)
                    x0 = torch.from_numpy(flat[idx]).to(device)  # (B D)
                    yb = torch.from_numpy(labels[idx]).to(device)  # (B)
                    # the k-th class by logit (the top one if it is not y: then y is 2nd)
                    t = np.where(ranked[idx, 0] == labels[idx], ranked[idx, k], ranked[idx, k - 1])  # (B)
                    best = torch.from_numpy(self.min_norms[idx]).to(device, torch.float32)  # (B)
                    adv = x0.clone()  # (B D)
                    self._attack_target(x0, yb, torch.from_numpy(t).to(device), best, adv)
                    found = (best < torch.from_numpy(self.min_norms[idx]).to(device, torch.float32)).cpu().numpy()
                    self.min_norms[idx[found]] = best.cpu().numpy()[found]
                    x_adv[idx[found]] = adv.cpu().numpy()[found].reshape(-1, *x.shape[1:])
                todo = np.flatnonzero(self.min_norms > self.eps * (1 + 1e-6))  # done once within eps
        too_far = self.min_norms > self.eps * (1 + 1e-6)  # scored at eps: farther is no success
        x_adv[too_far] = x[too_far]
        return x_adv
