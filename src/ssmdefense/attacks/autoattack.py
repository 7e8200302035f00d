"""AutoAttack: the parameter-free ensemble of Croce & Hein (ICML 2020,
https://arxiv.org/abs/2003.01690), through ART's ``AutoAttack``.

On image-shaped input (C, H, W) it is ART's default list: APGD-CE, APGD-DLR, DeepFool and
SquareAttack, with ART's budgets unless ``max_iter`` / ``nb_restarts`` are given. On other input
shapes (audio (1, T), sequences) Square's square-shaped updates do not apply, so only the gradient
components run (APGD-CE, APGD-DLR, DeepFool); ``components(attack)`` says which ran, and reports
must say so.

Arguments:
    eps (float): budget. Default: 0.1.
    eps_step (float | None): APGD's initial step; None means eps / 4. Default: None.
    norm (str): "inf" or "2". Default: "inf".
    max_iter (int | None): iterations of each APGD run, DeepFool and Square; None keeps ART's
        defaults (100, 100, 5000). Smaller is a cheaper, weaker check. Default: None.
    nb_restarts (int | None): random restarts of APGD; None keeps ART's default (5). Default: None.
    batch_size (int): Default: 128.
    verbose (bool): progress bars of every component. Default: False.

Examples::

    attack = sd.get_attack("autoattack", clf, eps=0.1)
    x_adv = attack.generate(x_test, y_test)
"""

from ._common import check_positive, parse_norm


def components(attack) -> list[str]:
    """Names of the attacks an ART AutoAttack runs (ART's default list when it was given none)."""
    return [type(a).__name__ for a in attack.attacks]


def autoattack(
    estimator,
    *,
    eps: float = 0.1,
    eps_step: float | None = None,
    norm: str = "inf",
    max_iter: int | None = None,
    nb_restarts: int | None = None,
    batch_size: int = 128,
    verbose: bool = False,
):
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, DeepFool, SquareAttack

    check_positive(
        eps=eps,
        eps_step=eps_step,
        max_iter=max_iter,
        nb_restarts=nb_restarts,
        batch_size=batch_size,
        optional=("eps_step", "max_iter", "nb_restarts"),
    )
    norm = parse_norm(norm)
    eps_step = eps / 4 if eps_step is None else eps_step
    # ART's default list written out with its budgets (APGD 100 iterations x 5 restarts, DeepFool
    # 100, Square 5000 queries x 5 restarts) unless max_iter / nb_restarts are given, so that
    # `verbose` reaches every component (ART's own list always shows progress bars) and Square can
    # be left out off images.
    it, restarts = int(max_iter or 100), int(nb_restarts or 5)
    apgd = dict(
        norm=norm,
        eps=eps,
        eps_step=eps_step,
        max_iter=it,
        targeted=False,
        nb_random_init=restarts,
        batch_size=int(batch_size),
        verbose=verbose,
    )
    attacks = [
        AutoProjectedGradientDescent(estimator, loss_type="cross_entropy", **apgd),
        AutoProjectedGradientDescent(estimator, loss_type="difference_logits_ratio", **apgd),
        DeepFool(estimator, max_iter=it, epsilon=1e-3, nb_grads=10, batch_size=int(batch_size), verbose=verbose),
    ]
    if len(estimator.input_shape) == 3:
        attacks.append(
            SquareAttack(
                estimator,
                norm=norm,
                eps=eps,
                max_iter=int(max_iter or 5000),
                p_init=0.8,
                nb_restarts=restarts,
                batch_size=int(batch_size),
                verbose=verbose,
            )
        )
    return AutoAttack(estimator, norm=norm, eps=eps, eps_step=eps_step, attacks=attacks, batch_size=int(batch_size))
