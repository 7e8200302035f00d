"""Square-1D: the L-inf Square Attack (Andriushchenko et al., ECCV 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search", https://arxiv.org/abs/1912.00049)
on waveforms, with the square windows of images replaced by 1-D segments of the waveform.

Score-based: it uses only the model's logits, no gradients, so it is the check against gradient
masking on audio that ``square`` (ART's ``SquareAttack``) gives on images: ART's attack needs 4-D
image input (N, C, H, W) and fails on waveforms (``x.ndim != 4``).

The reference L-inf algorithm (``square_attack_linf`` of the paper's code), per example:

- the loss is the margin ``m = z_y - max_{j != y} z_j`` of the logits z, minimised; the attack
  succeeds when the model misclassifies (m < 0);
- initialisation: every sample of the waveform set to ``x +- eps`` with an independent random sign
  (the 1-D counterpart of the reference's vertical stripes), clipped to ``clip_values``;
- then, for iterations i = 0 .. max_iter - 2 on the examples not fooled yet: the fraction
  ``p = p_selection(p_init, i, max_iter)`` (the reference schedule: i rescaled to a 10,000-iteration
  budget, p halves after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000), a segment of
  ``s = max(1, round(p T))`` samples (at most T - 1) at a random start, set as a whole to a random
  value in {-eps, +eps} (drawn again until the candidate differs from the current point somewhere,
  as the reference's while-loop does); the candidate ``clip(x + delta)`` replaces the current point
  when its margin is lower. It stops when every example is fooled.

Examples the model misclassifies as given are returned unchanged (0 queries). With
``nb_restarts > 1`` each further restart starts afresh on the examples not fooled yet and an
example keeps the restart with the lowest margin. The result stays in
``[x - eps, x + eps]`` and in ``clip_values``.

Cost: at most ``max_iter`` forward passes (no backward pass) per example and restart; after
``generate``, ``queries`` holds each example's number of forward passes, (N,) ints.

Arguments:
    eps (float): L-inf budget, > 0. Default: 0.001.
    max_iter (int): queries per restart (AutoAttack's Square: 5000). Default: 5000.
    p_init (float): initial fraction of the waveform a segment covers, in (0, 1]. Default: 0.8.
    nb_restarts (int): Default: 1.
    batch_size (int): Default: 128.
    verbose (bool): a progress bar over batches and restarts (stderr). Default: False.

Shape: mono waveforms (N, 1, T), the estimator's natural audio shape; x_adv has the same shape and
dtype. ``y``: class indices or one-hot labels; None attacks the estimator's own predictions. The
random draws come from NumPy's global generator (``np.random.seed`` reproduces them).

Examples::

    attack = sd.get_attack("square-1d", clf, eps=0.002, max_iter=1000)
    x_adv = attack.generate(x_test, y_test)
    np.abs(x_adv - x_test).max() <= 0.002   # True
    attack.queries.mean()                    # forward passes per example
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification import PyTorchClassifier
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from tqdm.auto import tqdm

from ..modes import eval_mode
from ..validation import boolean, is_number
from ._common import (
    check_count,
    check_positive,
    check_waveform_estimator,
    check_waveforms,
    class_indices,
    estimator_device,
)

# The reference's schedule: (iteration on a 10,000-iteration budget, divisor of p_init) past each bound.
_SCHEDULE = ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8), (50, 4), (10, 2))


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The fraction of the waveform a segment covers at iteration ``it`` of ``n_iters`` (the
    reference's piecewise-constant schedule, for any budget rescaled to 10,000 iterations)."""
    it = int(it / n_iters * 10000)
    for bound, divisor in _SCHEDULE:
        if bound < it <= 10000:
            return p_init / divisor
    return p_init


def _draw_signs(n: int, eps: float, device) -> torch.Tensor:
    """(n) values in {-eps, +eps}, drawn from NumPy's global generator."""
    return torch.from_numpy(np.random.choice([-eps, eps], size=n).astype(np.float32)).to(device)


def segment_candidate(x, x_cur, d_cur, first, s: int, eps: float, lo: float, hi: float):
    """The next candidate of the search: for each row, the segment [first, first + s) of delta set
    to one random value in {-eps, +eps}, drawn again for the rows where the candidate would equal
    the current point (at most 100 draws, like the reference's while-loop).

    x, x_cur = clip(x + d_cur), d_cur: (A 1 T); first: (A) segment starts. Returns the candidate
    clip(x + delta') and delta', (A 1 T) each. Only the segments are computed: outside them both are
    the current ones, and the candidate equals the current point there, so the test for "nothing
    changed" needs only the segment. ``segment_candidate_ref`` computes every sample (its reference,
    bit for bit the same, with the same random draws).
    """
    cols = (first[:, None] + torch.arange(s, device=x.device))[:, None, :]  # (A 1 s) segment positions
    x_seg, cur_seg = x.gather(2, cols), x_cur.gather(2, cols)  # (A 1 s) each
    seg_delta = d_cur.gather(2, cols)  # (A 1 s)
    cand_seg = cur_seg  # (A 1 s)
    redraw = torch.ones(len(x), dtype=torch.bool, device=x.device)  # (A)
    for _ in range(100):  # ends at once for eps > 0 unless clipping undoes the new value
        n = int(redraw.sum())
        if n == 0:
            break
        seg_delta = seg_delta.clone()
        seg_delta[redraw] = _draw_signs(n, eps, x.device)[:, None, None].expand(n, 1, s)
        cand_seg = (x_seg + seg_delta).clamp(lo, hi)  # (A 1 s)
        redraw = ((cand_seg - cur_seg).abs() < 1e-7).flatten(1).all(1)  # (A) nothing changed: draw again
    return x_cur.scatter(2, cols, cand_seg), d_cur.scatter(2, cols, seg_delta)  # (A 1 T) each


def segment_candidate_ref(x, x_cur, d_cur, first, s: int, eps: float, lo: float, hi: float):
    """Plain reference of ``segment_candidate``: masks, sums and compares every sample."""
    positions = torch.arange(x.shape[-1], device=x.device)  # (T)
    window = ((positions >= first[:, None]) & (positions < first[:, None] + s))[:, None, :]  # (A 1 T)
    cand_delta, cand = d_cur, x_cur  # (A 1 T)
    redraw = torch.ones(len(x), dtype=torch.bool, device=x.device)  # (A)
    for _ in range(100):
        n = int(redraw.sum())
        if n == 0:
            break
        value = _draw_signs(n, eps, x.device)  # (n)
        cand_delta = cand_delta.clone()
        cand_delta[redraw] = torch.where(window[redraw], value[:, None, None], d_cur[redraw])  # (n 1 T)
        cand = (x + cand_delta).clamp(lo, hi)  # (A 1 T)
        redraw = ((cand - x_cur).abs() < 1e-7).flatten(1).all(1)  # (A)
    return cand, cand_delta


class Square1DAttack(EvasionAttack):
    """L-inf Square Attack with 1-D segment updates on waveforms; see the module docstring."""

    attack_params = EvasionAttack.attack_params + [
        "eps",
        "max_iter",
        "p_init",
        "nb_restarts",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(
        self,
        estimator,
        eps: float = 0.001,
        max_iter: int = 5000,
        p_init: float = 0.8,
        nb_restarts: int = 1,
        batch_size: int = 128,
        verbose: bool = False,
    ):
        super().__init__(estimator=estimator)
        self.eps = eps
        self.max_iter = max_iter
        self.p_init = p_init
        self.nb_restarts = nb_restarts
        self.batch_size = batch_size
        self.verbose = verbose
        self.queries: np.ndarray | None = None
        self._check_params()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        x_in = np.asarray(x)
        x, dtype = check_waveforms("square-1d", x_in)  # float32
        bs = int(self.batch_size)
        labels = class_indices(self.estimator, x, y, bs)  # (N)
        device = estimator_device(self.estimator)
        x_adv = x.copy()
        self.queries = np.zeros(len(x), dtype=np.int64)
        restarts = int(self.nb_restarts)
        starts = range(0, len(x), bs)
        model = getattr(self.estimator, "model", None)
        with (
            eval_mode(model) if isinstance(model, torch.nn.Module) else nullcontext(),
            torch.no_grad(),
            tqdm(total=len(starts) * restarts, desc="square-1d", disable=not self.verbose) as bar,
        ):
            for start in starts:
                xb = torch.from_numpy(x[start : start + bs]).to(device)  # (B 1 T)
                yb = torch.from_numpy(labels[start : start + bs]).to(device)  # (B)
                todo = self._logits(xb).argmax(1) == yb  # (B): misclassified as given: left as it is
                best = xb.clone()  # (B 1 T)
                best_margin = torch.full((len(xb),), torch.inf, device=device)  # (B)
                for _ in range(restarts):
                    bar.update(1)
                    idx = todo.nonzero().squeeze(1)  # (A)
                    if idx.numel() == 0:
                        continue
                    xa, margin, queries = self._run(xb[idx], yb[idx])  # (A 1 T), (A), (A)
                    self.queries[start + idx.cpu().numpy()] += queries
                    keep = margin < best_margin[idx]  # (A)
                    best[idx[keep]], best_margin[idx[keep]] = xa[keep], margin[keep]
                    todo[idx[margin < 0]] = False
                x_adv[start : start + bs] = best.cpu().numpy()
        return self._enforce_budget(x_in, x_adv, float(self.eps)).astype(dtype, copy=False)

    # ---- the model's scores ----------------------------------------------------------------------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B C) scores of x (B 1 T): through the model in torch for a PyTorch estimator, else ``predict``."""
        if isinstance(self.estimator, PyTorchClassifier):
            x_pre, _ = self.estimator._apply_preprocessing(x, y=None, fit=False, no_grad=True)
            return self.estimator._model(x_pre)[-1]  # (B C)
        scores = self.estimator.predict(x.cpu().numpy(), batch_size=int(self.batch_size))  # (B C)
        return torch.from_numpy(np.asarray(scores, dtype=np.float32)).to(x.device)

    def _margin(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B) the margin z_y - max_{j != y} z_j at x (B 1 T); negative: misclassified."""
        z = self._logits(x)  # (B C)
        z_y = z.gather(1, y[:, None]).squeeze(1)  # (B)
        others = z.scatter(1, y[:, None], -torch.inf)  # (B C) z with z_y removed
        return z_y - others.amax(1)

    # ---- one run of the random search ------------------------------------------------------------
    def _run(self, xb: torch.Tensor, yb: torch.Tensor):
        """The search on xb (B 1 T), labels yb (B): (x_best (B 1 T), its margin (B), queries (B))."""
        clip = self.estimator.clip_values
        lo, hi = (float(clip[0]), float(clip[1])) if clip is not None else (-np.inf, np.inf)
        eps = float(self.eps)
        B, T = xb.shape[0], xb.shape[-1]
        device = xb.device
        sign = np.random.choice([-eps, eps], size=xb.shape).astype(np.float32)  # (B 1 T)
        delta = torch.from_numpy(sign).to(device)  # (B 1 T) the current point is clip(x + delta)
        x_best = (xb + delta).clamp(lo, hi)  # (B 1 T)
        margin = self._margin(x_best, yb)  # (B)
        queries = np.ones(B, dtype=np.int64)
        for i in range(int(self.max_iter) - 1):
            active = (margin >= 0).nonzero().squeeze(1)  # (A)
            if active.numel() == 0:
                break
            A = active.numel()
            p = p_selection(float(self.p_init), i, int(self.max_iter))
            s = max(1, min(int(round(p * T)), T - 1))  # segment length
            first = torch.from_numpy(np.random.randint(0, T - s + 1, size=A)).to(device)  # (A)
            x_cur, d_cur = x_best[active], delta[active]  # (A 1 T) each
            cand, cand_delta = segment_candidate(xb[active], x_cur, d_cur, first, s, eps, lo, hi)  # (A 1 T) each
            m = self._margin(cand, yb[active])  # (A)
            queries[active.cpu().numpy()] += 1
            better = m < margin[active]  # (A)
            idx = active[better]
            margin[idx], x_best[idx], delta[idx] = m[better], cand[better], cand_delta[better]
        return x_best, margin, queries

    @staticmethod
    def _enforce_budget(x: np.ndarray, x_adv: np.ndarray, eps: float) -> np.ndarray:
        """Guard against float32 rounding (``x + float32(eps)`` may round past ``x + eps``): x_adv
        clipped to the largest float32 box inside [x - eps, x + eps], measured in float64."""
        x64 = np.asarray(x, dtype=np.float64)
        lo, hi = x64 - eps, x64 + eps
        lo32, hi32 = lo.astype(x_adv.dtype), hi.astype(x_adv.dtype)
        lo32 = np.where(lo32 < lo, np.nextafter(lo32, np.inf, dtype=x_adv.dtype), lo32)  # rounded outwards: in
        hi32 = np.where(hi32 > hi, np.nextafter(hi32, -np.inf, dtype=x_adv.dtype), hi32)
        x_adv = np.clip(x_adv, lo32, hi32)  # moves only towards x: stays in clip_values
        over = np.abs(x_adv.astype(np.float64) - x64) > eps  # left only by float64 rounding, if ever
        x_adv[over] = np.asarray(x)[over]
        return x_adv

    def _check_params(self) -> None:
        super()._check_params()
        check_positive(eps=self.eps)
        check_count("max_iter", self.max_iter)
        if not (is_number(self.p_init, numpy=True) and 0 < self.p_init <= 1):
            raise ValueError(f"p_init must be a number in (0, 1] (the paper: 0.8 for L-inf); got {self.p_init!r}")
        check_count("nb_restarts", self.nb_restarts)
        check_count("batch_size", self.batch_size)
        boolean("verbose", self.verbose)
        check_waveform_estimator("square-1d", self.estimator)


def square_1d(
    estimator,
    *,
    eps: float = 0.001,
    max_iter: int = 5000,
    p_init: float = 0.8,
    nb_restarts: int = 1,
    batch_size: int = 128,
    verbose: bool = False,
) -> Square1DAttack:
    """The ``square-1d`` attack bound to ``estimator`` (see the module docstring)."""
    check_waveform_estimator("square-1d", estimator)
    return Square1DAttack(
        estimator,
        eps=eps,
        max_iter=max_iter,
        p_init=p_init,
        nb_restarts=nb_restarts,
        batch_size=batch_size,
        verbose=verbose,
    )
