"""``minmax``: min-max robust training over per-class targeted attacks (the master thesis "Min-max
optimization methods in adversarial learning", after Nouiehed et al., NeurIPS 2019, "Solving a
Class of Non-Convex Min-Max Games Using Iterative First Order Methods",
https://arxiv.org/abs/1902.08297).

For every sample (x, y) and every candidate class j != y, a *targeted* K-step L-inf PGD attack
(random start, model in eval mode) maximises the logit margin::

    x_j = argmax_{|x' - x|_inf <= eps, x' in clip}  Z_j(x') - Z_y(x')

All candidates of a batch run as one (B * J) batch. Each candidate costs its cross-entropy,
``l_j = CE(f(x_j), y)``, and the robust loss is the max over the probability simplex
``Delta = {t >= 0, sum_j t_j = 1}`` of the weighted losses, made strongly concave in ``t`` by
``lam``::

    phi(theta) = max_{t in Delta}  sum_j t_j l_j - (lam / 2) |t|^2
    t*         = Proj_Delta(l / lam)               (lam > 0: closed form, ``project_simplex``)
    t*         = one-hot at argmax_j l_j           (lam = 0: the plain finite max, max_j l_j)

The model (train mode) minimises ``mean over the batch of sum_j t*_j l_j - (lam/2) |t*|^2`` with
``t*`` held fixed (detached): by Danskin's theorem its gradient is the gradient of ``phi``, because
``t*`` is the unique maximiser (lam > 0) or any maximiser (lam = 0, a subgradient).

``include_clean=True`` adds the clean sample as one more candidate, ``l_clean = CE(f(x), y)``
(the thesis' Algorithm 2), so the weights can fall back on the clean loss. ``classes="topk:K"``
attacks only the K wrong classes with the highest clean logits instead of all C - 1: the cost per
batch is about (K [+ 1]) * (max_iter + 1) forward-backward passes of the batch instead of
(C - 1 [+ 1]) * (max_iter + 1).

The training accuracy the loop reports is that of the worst candidate (highest l_j) per sample.

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget, for training and the PGD-10 evaluation. Default: 0.1.
    lam (float): the concavity weight lambda >= 0. 0 gives the plain max over the candidates (the
        finite max the thesis starts from, and the strongest inner maximisation); larger values
        spread the weights over the candidates (t* -> uniform, the mean loss, as lam -> inf). With
        cross-entropies of order 1, lam around 1 already mixes the top candidates. Default: 0.0.
    max_iter (int): K, steps of each targeted attack. Default: 10.
    eps_step (float | None): step size; None means 2.5 * eps / max_iter. Default: None.
    include_clean (bool): add the clean sample as a candidate (Algorithm 2). Default: False.
    classes (str): "all" (the C - 1 wrong classes) or "topk:K" (the K most likely wrong classes
        by the clean logits, 1 <= K < C). Default: "all".

Examples::

    trainer = sd.get_defense("minmax", clf, eps=0.1, classes="topk:3", lam=0.5, include_clean=True)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=5)

    ssmdefense defend --defense minmax -p classes=topk:3 -p lam=0.5 -p include_clean=true
"""

import re

import torch
import torch.nn.functional as F

from ..modes import eval_mode
from ..validation import boolean, integer, non_negative, positive
from .loop import TrainingLoop
from .perturb import pgd_linf


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (..., n) onto the probability simplex
    ``{t : t >= 0, sum(t) = 1}``: ``argmin_t |t - v|^2`` (Held, Wolfe & Crowder 1974; Duchi et
    al. 2008, "Efficient projections onto the l1-ball", Fig. 1).

    With ``u`` the entries of a row sorted in decreasing order, ``rho = max{j : u_j - (sum_{i<=j}
    u_i - 1) / j > 0}`` and ``theta = (sum_{i<=rho} u_i - 1) / rho``, the projection is
    ``max(v - theta, 0)`` (the KKT conditions: t_i = v_i - theta where t_i > 0). O(n log n) per
    row, vectorised over the leading dimensions; returns a tensor of ``v``'s shape and dtype.
    """
    if v.shape[-1] == 0:
        raise ValueError("project_simplex needs at least one entry per row")
    u = torch.sort(v, dim=-1, descending=True).values  # (... n)
    css = u.cumsum(dim=-1) - 1  # (... n)
    j = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)  # (n)
    support = u - css / j > 0  # (... n); true on a prefix, always at j = 1
    rho = (support * j).amax(dim=-1, keepdim=True)  # (... 1) the largest such j
    theta = css.gather(-1, rho.long() - 1) / rho  # (... 1)
    return (v - theta).clamp_min(0)


def simplex_weights(losses: torch.Tensor, lam: float) -> torch.Tensor:
    """The maximiser ``t*`` (..., n) of ``sum_j t_j l_j - (lam/2) |t|^2`` over the simplex, for
    losses (..., n): ``project_simplex(losses / lam)``, or the one-hot vector at the largest loss
    when ``lam == 0`` (the limit as lam -> 0)."""
    if lam == 0:
        return F.one_hot(losses.argmax(dim=-1), losses.shape[-1]).to(losses.dtype)
    return project_simplex(losses / lam)


def parse_classes(classes, nb_classes: int) -> int | None:
    """The K of ``"topk:K"`` (None for ``"all"``), checked against the number of classes."""
    if classes == "all":
        return None
    match = re.fullmatch(r"topk:(\d+)", classes) if isinstance(classes, str) else None
    if match is None:
        raise ValueError(f'classes must be "all" or "topk:K" with K an integer; got {classes!r}')
    k = int(match.group(1))
    if not 1 <= k < nb_classes:
        raise ValueError(f"classes={classes!r}: K must be between 1 and {nb_classes - 1} (the number of wrong classes)")
    return k


class MinMaxTrainer(TrainingLoop):
    name = "minmax"
    defense_params = TrainingLoop.defense_params + ("lam", "max_iter", "eps_step", "include_clean", "classes")

    def __init__(
        self,
        classifier,
        *,
        eps: float = 0.1,
        lam: float = 0.0,
        max_iter: int = 10,
        eps_step: float | None = None,
        include_clean: bool = False,
        classes: str = "all",
        **loop_params,
    ):
        self.lam, self.max_iter, self.eps_step = lam, max_iter, eps_step
        self.include_clean, self.classes = include_clean, classes
        super().__init__(classifier, eps=eps, **loop_params)  # stores the loop's parameters, checks them all
        self.lam = float(self.lam)
        if self.eps_step is None:
            self.eps_step = 2.5 * self.eps / self.max_iter
        self.nb_classes = classifier.nb_classes
        self.topk = parse_classes(classes, self.nb_classes)

    def _check_params(self) -> None:
        super()._check_params()
        non_negative("lam", self.lam)
        integer("max_iter", self.max_iter, 1)
        positive("eps_step", self.eps_step, optional=True)
        boolean("include_clean", self.include_clean)
        nb_classes = self._classifier.nb_classes
        if nb_classes < 2:
            raise ValueError(f"minmax needs at least 2 classes; the classifier has {nb_classes}")
        parse_classes(self.classes, nb_classes)

    @property
    def nb_candidates(self) -> int:
        """Candidates per sample: the attacked classes, plus the clean sample if included."""
        return (self.topk or self.nb_classes - 1) + self.include_clean

    def target_classes(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The classes attacked for each sample, (B, J): all wrong classes in increasing order, or the
        K wrong classes with the highest clean logits (eval mode, no gradient), most likely first."""
        if self.topk is None:
            others = torch.arange(self.nb_classes - 1, device=y.device)  # (C-1)
            return others + (others >= y[:, None]).long()  # (B C-1): skips y
        with eval_mode(model), torch.no_grad():
            logits = model(x)  # (B C)
        logits = logits.scatter(1, y[:, None], float("-inf"))  # never pick the true class
        return logits.topk(self.topk, dim=1).indices  # (B K)

    def targeted_attacks(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        """The per-class targeted PGD examples: (x_adv (B, J, ...), targets (B, J)), all B * J
        attacks run as one batch; each maximises ``Z_target - Z_y``."""
        targets = self.target_classes(model, x, y)  # (B J)
        b, j = targets.shape
        x_rep = x.unsqueeze(1).expand(b, j, *x.shape[1:]).reshape(b * j, *x.shape[1:])  # (B*J ...)
        y_rep = y.repeat_interleave(j)  # (B*J)
        t_rep = targets.reshape(-1, 1)  # (B*J 1)

        def margin(logits, labels):  # sum over the batch: each example's gradient is its own
            return (logits.gather(1, t_rep) - logits.gather(1, labels[:, None])).sum()

        x_adv = pgd_linf(
            model,
            x_rep,
            y_rep,
            eps=self.eps,
            eps_step=self.eps_step,
            steps=self.max_iter,
            clip=self.clip,
            random_start=True,
            loss_fn=margin,
        )  # (B*J ...)
        return x_adv.reshape(b, j, *x.shape[1:]), targets

    def candidate_losses(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Per-candidate cross-entropies (B, J') and logits (B, J', C), one forward pass in the
        model's current mode; columns follow ``target_classes``, then the clean sample (last) when
        ``include_clean``."""
        x_adv, _ = self.targeted_attacks(model, x, y)  # (B J ...)
        b, j = x_adv.shape[:2]
        inputs = x_adv.reshape(b * j, *x.shape[1:])
        if self.include_clean:
            inputs = torch.cat([inputs, x])  # (B*J + B ...)
        logits = model(inputs)  # (B*J [+ B], C)
        adv = logits[: b * j].reshape(b, j, -1)  # (B J C)
        if self.include_clean:
            adv = torch.cat([adv, logits[b * j :, None]], dim=1)  # (B J+1 C)
        labels = y[:, None].expand(adv.shape[:2])  # (B J')
        losses = F.cross_entropy(adv.reshape(-1, adv.shape[-1]), labels.reshape(-1), reduction="none")
        return losses.reshape(adv.shape[:2]), adv

    def robust_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """``mean_b max_{t in simplex} sum_j t_j l_bj - (lam/2) |t|^2`` from losses (B, J'), with the
        maximiser detached (Danskin)."""
        t = simplex_weights(losses.detach(), self.lam)  # (B J')
        return ((t * losses).sum(dim=1) - 0.5 * self.lam * (t * t).sum(dim=1)).mean()

    def training_step(self, model, x, y):
        losses, logits = self.candidate_losses(model, x, y)  # (B J'), (B J' C)
        worst = logits[torch.arange(len(y), device=y.device), losses.argmax(dim=1)]  # (B C)
        return self.robust_loss(losses), worst
