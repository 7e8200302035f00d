"""``ads``: Adaptive Scaling + adversarial training (Qi et al., NeurIPS 2024, "Exploring
Adversarial Robustness of Deep State Space Models").

Inserts an AdS module ``act(W y) * y`` (W: bias-free Linear(H, H)) after the mixer of every block
of the classifier's model, in place (the checkpoint records ``ads=act``), then trains with the
base defense (PGD-AT by default). A model built with ``ads=act`` already is used as it is.

Arguments:
    act (str): "relu", "sigmoid" or "tanh". Default: "relu".
    base (str): the adversarial training: "pgd-at", "trades", "free-at", "yopo", "minmax" (any
        defense on the shared loop). Default: "pgd-at".
    every parameter of the base (e.g. max_iter, eps_step for pgd-at; beta for trades) and of the loop.

Examples::

    trainer = sd.get_defense("ads", clf, act="relu", base="trades", beta=1.0)
"""

from ..errors import SSMDefenseError
from .loop import TrainingLoop
from .with_base import WithBase, with_base


class AdSTrainer(WithBase):
    name = "ads"

    def __init__(self, classifier, *, base: TrainingLoop, act: str = "relu", **loop_params):
        self.act = act
        super().__init__(classifier, base=base, **loop_params)  # stores the loop's parameters, checks them all
        body = classifier.body
        body.enable_ads(act)  # checks act too (and that the model has no AdS of another kind)
        config = getattr(body, "ssmdefense_config", None)
        if config is not None:
            config["params"]["ads"] = act

    def _check_params(self) -> None:
        super()._check_params()
        if not hasattr(getattr(self._classifier, "body", None), "enable_ads"):
            raise SSMDefenseError(
                "the ads defense needs a model built on ssmdefense's SequenceClassifier (one with enable_ads)"
            )


def ads(classifier, *, base: str = "pgd-at", **params) -> AdSTrainer:
    """The registered ``ads``: AdS over the registered defense ``base`` (``act``, the loop's and the
    base's parameters in ``params``)."""
    return with_base(AdSTrainer, classifier, base, params)
