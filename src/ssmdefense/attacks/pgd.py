"""PGD: projected gradient descent with random start (Madry et al., 2018,
https://arxiv.org/abs/1706.06083), through ART's ``ProjectedGradientDescent``.

Arguments:
    eps (float): perturbation budget. Default: 0.1.
    eps_step (float): step size; None means 2.5 * eps / max_iter (Madry et al.). Default: None.
    max_iter (int): number of steps; "pgd-10" in reports is max_iter=10. Default: 10.
    norm (str): "inf" or "2". Default: "inf".
    num_random_init (int): random restarts (0: start at x, no random start). Default: 1.
    targeted (bool): Default: False.
    loss (str): what the steps climb: "ce" (the estimator's cross-entropy) or "margin" (the
        Carlini-Wagner margin max_{j != y} z_j - z_y on the logits, which does not saturate; see
        ``attacks/losses.py``). Default: "ce".
    batch_size (int): Default: 128.
    verbose (bool): show ART's progress bar. Default: False.

Shape: x in the estimator's natural shape; x_adv has the same shape and stays within eps of x (in
``norm``) and inside the estimator's ``clip_values``.

Examples::

    attack = sd.get_attack("pgd", clf, eps=0.1, max_iter=10)
    x_adv = attack.generate(x_test, y_test)
    margin = sd.get_attack("pgd", clf, eps=0.1, max_iter=50, num_random_init=5, loss="margin")
"""

import functools
import logging
import sys

from ..validation import integer
from ._common import check_positive, parse_norm
from .losses import with_loss


def pgd(
    estimator,
    *,
    eps: float = 0.1,
    eps_step: float | None = None,
    max_iter: int = 10,
    norm: str = "inf",
    num_random_init: int = 1,
    targeted: bool = False,
    loss: str = "ce",
    batch_size: int = 128,
    verbose: bool = False,
):
    ProjectedGradientDescent = _pgd_class()
    check_positive(eps=eps, eps_step=eps_step, max_iter=max_iter, batch_size=batch_size, optional=("eps_step",))
    integer("num_random_init", num_random_init, 0)
    if eps_step is None:
        eps_step = 2.5 * eps / max_iter
    estimator = with_loss(estimator, loss)
    return ProjectedGradientDescent(
        estimator,
        norm=parse_norm(norm),
        eps=eps,
        eps_step=eps_step,
        max_iter=int(max_iter),
        targeted=targeted,
        num_random_init=num_random_init,
        batch_size=int(batch_size),
        verbose=verbose,
    )


@functools.cache
def _pgd_class():
    """ART's ``ProjectedGradientDescent`` (same name, so reports name it as before), whose ``generate``
    skips the success rate ART computes for an INFO log line when that line would not be shown:
    ART evaluates it eagerly, two extra forward passes over all of ``x`` (predictions on x and on
    x_adv), 10% of PGD-10's time on the default model (docs/performance.md). Restarts
    (``num_random_init`` > 1) still compare their successes (``compute_success_array``)."""
    import art.utils
    from art.attacks.evasion import ProjectedGradientDescent

    real = art.utils.compute_success

    def not_computed(*args, **kwargs):
        return float("nan")

    class PGD(ProjectedGradientDescent):
        def generate(self, x, y=None, **kwargs):
            module = sys.modules[type(self._attack).__module__]  # ART's framework-specific PGD
            if getattr(module, "compute_success", None) is not real or logging.getLogger(module.__name__).isEnabledFor(
                logging.INFO
            ):
                return super().generate(x, y, **kwargs)
            module.compute_success = not_computed
            try:
                return super().generate(x, y, **kwargs)
            finally:
                module.compute_success = real  # ART's own function, whatever another thread left

    PGD.__name__ = PGD.__qualname__ = "ProjectedGradientDescent"
    return PGD
