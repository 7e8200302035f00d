"""Carlini-Wagner attacks (Carlini & Wagner, IEEE S&P 2017, https://arxiv.org/abs/1608.04644),
through ART's ``CarliniL2Method`` and ``CarliniLInfMethod``.

C&W searches for the *smallest* perturbation that changes the prediction; it has no budget. To
report accuracy at ``eps`` the result is scored within the budget: an example farther than ``eps``
from its input counts as not adversarial (it is replaced by the input). Its margin loss on logits
makes it a standard check against defenses that only flatten softmax outputs (distillation).

Arguments:
    eps (float): budget the result is scored at. Default: 0.1 (L-inf) — use e.g. 1.5 with norm "2".
    norm (str): "2" (CarliniL2Method) or "inf" (CarliniLInfMethod). Default: "inf".
    confidence (float): margin kappa. Default: 0.0.
    learning_rate (float): Default: 0.01.
    max_iter (int): Default: 10.
    binary_search_steps (int): L2 only. Default: 5.
    initial_const (float): L2 only: the first trade-off constant c of the binary search. Default: 0.01.
    batch_size (int): Default: 128.
    verbose (bool): ART's progress bar. Default: False.

Examples::

    x_adv = sd.get_attack("cw", clf, norm="2", eps=1.5).generate(x_test, y_test)
"""

from ..validation import number
from ._common import check_positive, parse_norm, within_budget


def cw(
    estimator,
    *,
    eps: float = 0.1,
    norm: str = "inf",
    confidence: float = 0.0,
    learning_rate: float = 0.01,
    max_iter: int = 10,
    binary_search_steps: int = 5,
    initial_const: float = 0.01,
    batch_size: int = 128,
    verbose: bool = False,
):
    from art.attacks.evasion import CarliniL2Method, CarliniLInfMethod

    check_positive(
        eps=eps,
        learning_rate=learning_rate,
        max_iter=max_iter,
        initial_const=initial_const,
        binary_search_steps=binary_search_steps,
        batch_size=batch_size,
    )
    number("confidence", confidence, 0.0)
    norm = parse_norm(norm)
    if norm == 2:
        attack = CarliniL2Method(
            estimator,
            confidence=confidence,
            learning_rate=learning_rate,
            binary_search_steps=int(binary_search_steps),
            max_iter=int(max_iter),
            initial_const=initial_const,
            batch_size=int(batch_size),
            verbose=verbose,
        )
    else:
        attack = CarliniLInfMethod(
            estimator,
            confidence=confidence,
            learning_rate=learning_rate,
            max_iter=int(max_iter),
            batch_size=int(batch_size),
            verbose=verbose,
        )
    return within_budget(attack, eps, norm)
