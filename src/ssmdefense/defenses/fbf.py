"""``fbf``: "Fast is better than free" adversarial training (Wong, Rice & Kolter, ICLR 2020,
https://arxiv.org/abs/2001.03994), run by ART's own ``AdversarialTrainerFBFPyTorch`` on the shared
loop.

Each batch is one FGSM step from a random start, then one training step on the result. The
per-batch step is ART's code, ``AdversarialTrainerFBFPyTorch._batch_process(x, y, l_r)``::

    delta  ~ U(-eps, eps)                                    (ART's random_sphere, L-inf)
    delta  = clip(delta + 1.25 * eps * sign(grad_x CE(f(x + delta), y)), -eps, eps)
    x_adv  = clip(x + delta, lo, hi)
    lr    <- l_r;  CE(f(x_adv), y).backward();  clip_grad_norm(0.5);  optimizer.step()

(the 1.25 * eps step and the gradient-norm clipping at 0.5 are ART's, fixed there).

Why a private ART method: ART's ``fit()`` owns the whole run, with its own epoch loop, its own
cyclic learning rate (0 -> 0.21 -> 0, an SGD scale) and no per-epoch robust evaluation or best
checkpoint. ``_batch_process`` is its per-batch step, so calling it from the shared loop keeps
ART's algorithm while the loop provides the AdamW optimizer, the cosine schedule (``l_r`` is the
loop's scheduled learning rate for that step; the loop's scheduler then steps), the PGD-10
evaluation, best/last checkpoints, metrics, resume and seeds. It is tied to ART 1.20's signature;
a change there fails loudly (``TypeError``/``AttributeError``), not silently.

For the duration of each call the ART classifier is lent the loop's optimizer (``_optimizer``) and
the model being trained (when the loop trains a copy, as the overhead timing does), and both are
restored afterwards. Three adaptations, all outside ART's code:

- labels go in one-hot: ``_batch_process`` takes ``argmax(y, axis=1)`` itself for a
  cross-entropy classifier, which fails on class indices;
- ART's ``loss_gradient`` leaves the model in eval mode, so ART would take the weight step with
  dropout off; the attack's gradient is still taken in eval mode (as ``pgd-at`` does) and the
  model is put back in train mode before the training forward pass;
- the loss the loop reports is ART's (mean cross-entropy of the adversarial batch), and the
  training accuracy is that of ART's training forward pass on the adversarial batch (captured by a
  forward hook; no extra pass).

Arguments (plus the loop's: batch_size, lr, weight_decay, ssm_weight_decay, eval_max_iter, eval_samples, seed, verbose):
    eps (float): L-inf budget, for training and the PGD-10 evaluation. Default: 0.1.

Examples::

    trainer = sd.get_defense("fbf", clf, eps=0.1)
    trainer.fit(x_train, y_train, validation_data=(x_test, y_test), nb_epochs=5)

    ssmdefense defend --defense fbf --eps 0.1
"""

from contextlib import contextmanager

import numpy as np
import torch
from art.defences.trainer import AdversarialTrainerFBFPyTorch

from .loop import TrainingLoop


class FBFTrainer(TrainingLoop):
    name = "fbf"

    def __init__(self, classifier, *, eps: float = 0.1, **loop_params):
        super().__init__(classifier, eps=eps, **loop_params)
        self.art_trainer = AdversarialTrainerFBFPyTorch(classifier, eps=self.eps, use_amp=False)

    @contextmanager
    def _lent_to_art(self, model, optimizer, outputs: list):
        """ART's classifier trains ``model`` with ``optimizer`` for a block; restored afterwards."""
        clf = self._classifier
        wrapper = clf._model  # ART's ModelWrapper; ART calls wrapper(x) and the classifier's loss_gradient
        saved_model, saved_optimizer = wrapper._model, clf._optimizer
        loss_gradient = clf.loss_gradient

        def loss_gradient_then_train(*args, **kwargs):
            grad = loss_gradient(*args, **kwargs)  # leaves the model in eval mode
            model.train()
            return grad

        handle = model.register_forward_hook(lambda module, inputs, logits: outputs.append(logits.detach()))
        wrapper._model, clf._optimizer = model, optimizer
        clf.loss_gradient = loss_gradient_then_train  # instance attribute over the method
        try:
            yield
        finally:
            del clf.loss_gradient
            wrapper._model, clf._optimizer = saved_model, saved_optimizer
            handle.remove()

    def train_batch(self, model, optimizer, scheduler, x, y):
        x_np = x.detach().cpu().numpy()
        y_np = np.eye(self._classifier.nb_classes, dtype=np.float32)[y.cpu().numpy()]  # one-hot
        l_r = optimizer.param_groups[0]["lr"]  # the loop's scheduled lr for this step
        outputs: list[torch.Tensor] = []
        with self._lent_to_art(model, optimizer, outputs):
            loss_sum, _, n = self.art_trainer._batch_process(x_np, y_np, l_r)
        scheduler.step()
        loss = torch.tensor(loss_sum / n)
        return loss, outputs[-1]  # the logits of ART's training forward pass on x_adv

    def describe(self) -> dict:
        return {
            **super().describe(),
            "eps_step": 1.25 * self.eps,
            "grad_norm_clip": 0.5,
            "implementation": "art.defences.trainer.AdversarialTrainerFBFPyTorch._batch_process",
        }
