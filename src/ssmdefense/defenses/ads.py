"""``ads``: Adaptive Scaling + PGD adversarial training (Qi et al., NeurIPS 2024, "Exploring
Adversarial Robustness of Deep State Space Models").

Inserts an AdS module ``act(W y) * y`` (W: bias-free Linear(H, H)) after the mixer of every block
of the classifier's model, in place (the checkpoint records ``ads=act``), then trains with PGD-AT.
A model built with ``ads=act`` already is used as it is.

Arguments:
    act (str): "relu", "sigmoid" or "tanh". Default: "relu".
    everything of ``pgd-at`` (eps, eps_step, max_iter, random_start) and of the loop.
"""

from ..errors import SSMDefenseError
from ..hookspecs import hookimpl
from .pgd_at import PGDATTrainer


class AdSTrainer(PGDATTrainer):
    name = "ads"

    def __init__(self, classifier, *, act: str = "relu", **pgd_at_params):
        body = classifier.body if hasattr(classifier, "body") else None
        if body is None or not hasattr(body, "enable_ads"):
            raise SSMDefenseError("the ads defense needs a model built on ssmdefense's SequenceClassifier "
                                  "(one with enable_ads)")
        super().__init__(classifier, **pgd_at_params)  # validate the PGD-AT parameters first
        body.enable_ads(act)
        config = getattr(body, "ssmdefense_config", None)
        if config is not None:
            config["params"]["ads"] = act
        self.act = act

    def describe(self) -> dict:
        return {**super().describe(), "act": self.act}


@hookimpl
def register_defenses(register):
    register("ads", AdSTrainer, "Adaptive Scaling modules + PGD adversarial training (Qi et al. 2024)")
