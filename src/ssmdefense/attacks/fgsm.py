"""FGSM: Fast Gradient Sign Method (Goodfellow et al., 2015, https://arxiv.org/abs/1412.6572),
through ART's ``FastGradientMethod``.

Arguments:
    eps (float): perturbation budget in the chosen norm. Default: 0.1.
    norm (str): "inf" or "2". Default: "inf".
    targeted (bool): move towards the given labels instead of away. Default: False.
    random_start (bool): start from a uniform random point in the eps-ball. Default: False.
    batch_size (int): Default: 128.

One gradient step per batch, so there is no progress bar (ART's FastGradientMethod has none).

Shape: x in the estimator's natural shape, e.g. (N, 1, 28, 28); x_adv has the same shape.

Examples::

    attack = sd.get_attack("fgsm", clf, eps=0.1)
    x_adv = attack.generate(x_test, y_test)
"""

from ._common import check_positive, parse_norm


def fgsm(
    estimator,
    *,
    eps: float = 0.1,
    norm: str = "inf",
    targeted: bool = False,
    random_start: bool = False,
    batch_size: int = 128,
):
    from art.attacks.evasion import FastGradientMethod

    check_positive(eps=eps, batch_size=batch_size)
    return FastGradientMethod(
        estimator,
        norm=parse_norm(norm),
        eps=eps,
        eps_step=eps,
        targeted=targeted,
        num_random_init=int(bool(random_start)),
        batch_size=int(batch_size),
    )
