"""Square Attack: score-based black-box attack by random square-shaped updates (Andriushchenko et
al., ECCV 2020, https://arxiv.org/abs/1912.00049), through ART's ``SquareAttack``.

It uses only the model's outputs, no gradients, so it is the reference check against gradient
masking: its accuracy should not be below a white-box attack's.

Arguments:
    eps (float): budget. Default: 0.1.
    norm (str): "inf" or "2". Default: "inf".
    max_iter (int): queries per restart. Default: 1000.
    p_init (float): initial fraction of the image the squares cover. Default: 0.8.
    nb_restarts (int): Default: 1.
    batch_size (int): Default: 128.
    verbose (bool): ART's progress bar. Default: False.

Shape: images (N, C, H, W) in the estimator's natural shape (square updates need two spatial axes).

Examples::

    x_adv = sd.get_attack("square", clf, eps=0.1, max_iter=500).generate(x_test, y_test)
"""

import functools

from ._common import check_positive, parse_norm, predictions_remembered


def square(
    estimator,
    *,
    eps: float = 0.1,
    norm: str = "inf",
    max_iter: int = 1000,
    p_init: float = 0.8,
    nb_restarts: int = 1,
    batch_size: int = 128,
    verbose: bool = False,
):
    SquareAttack = square_attack_class()
    check_positive(eps=eps, max_iter=max_iter, p_init=p_init, nb_restarts=nb_restarts, batch_size=batch_size)
    if len(estimator.input_shape) != 3:
        raise ValueError(f"square needs image-shaped input (C, H, W); the estimator takes {estimator.input_shape}")
    return SquareAttack(
        estimator,
        norm=parse_norm(norm),
        eps=eps,
        max_iter=int(max_iter),
        p_init=p_init,
        nb_restarts=int(nb_restarts),
        batch_size=int(batch_size),
        verbose=verbose,
    )


@functools.cache
def square_attack_class():
    """ART's ``SquareAttack`` (same name, so reports name it as before), whose ``generate`` runs with
    ``predictions_remembered``: one forward pass per iteration instead of ART's three, the same
    random draws and the same adversarial examples."""
    from art.attacks.evasion import SquareAttack

    class Square(SquareAttack):
        def generate(self, x, y=None, **kwargs):
            with predictions_remembered(self.estimator):
                return super().generate(x, y, **kwargs)

    Square.__name__ = Square.__qualname__ = "SquareAttack"
    return Square
