"""ART's ``AutoProjectedGradientDescent`` with one forward pass per iteration instead of two.

Each APGD iteration (ART 1.20.1) calls ``loss_gradient(x_k)`` (a forward and a backward pass) and then
``compute_loss(x_k+1)`` (another forward pass) to decide whether the step improved the loss; the next
iteration's ``loss_gradient`` is then at that same point, so its forward pass repeats the one just
done. ``OneForwardAPGD`` keeps ART's algorithm, its random start and every one of its decisions, and
gives it an estimator (``LossGraphClassifier``) whose ``compute_loss`` keeps the autograd graph of
its forward pass, and whose next ``loss_gradient``, if asked for the same points and labels, runs
only the backward through that graph. It is written here because ART has no hook for it: APGD
builds its own ``PyTorchClassifier`` around the model for its loss (cross-entropy or DLR), and that
classifier recomputes the forward pass. The gradients are the same numbers (the same forward pass on
the same inputs, the same loss, the same backward): ``tests/test_attacks_apgd_one_forward.py`` checks
that x_adv is ART's bit for bit. Where the forward pass could differ between the two calls (an RNN,
which ART differentiates in training mode; preprocessing not written in torch; tensor inputs), it
falls back to ART's.
"""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import AutoProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from art.utils import check_and_transform_label_format


class LossGraphClassifier(PyTorchClassifier):
    """A ``PyTorchClassifier`` whose ``compute_loss`` on NumPy inputs keeps its forward pass for the
    next ``loss_gradient`` at the same ``x`` and ``y`` (see the module docstring)."""

    @classmethod
    def like(cls, estimator: PyTorchClassifier) -> LossGraphClassifier:
        """This class around ``estimator``'s model, loss and settings (the classifier ART's APGD built)."""
        clf = cls(
            model=estimator.model,
            loss=estimator._loss,
            input_shape=estimator.input_shape,
            nb_classes=estimator.nb_classes,
            optimizer=None,
            channels_first=estimator.channels_first,
            clip_values=estimator.clip_values,
            preprocessing_defences=estimator.preprocessing_defences,
            postprocessing_defences=estimator.postprocessing_defences,
            preprocessing=estimator.preprocessing,
            device_type="cpu" if estimator.device.type == "cpu" else "gpu",
        )
        # how ART's APGD set up its classifier's labels (index labels for cross-entropy, one-hot for DLR)
        clf._reduce_labels = estimator._reduce_labels
        clf._int_labels = estimator._int_labels
        clf._probability_labels = estimator._probability_labels
        return clf

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._kept = None  # (x, y, x_leaf, logits, labels) of the last compute_loss

    def _reusable(self, x) -> bool:
        return isinstance(x, np.ndarray) and not self.is_rnn and self.all_framework_preprocessing

    def compute_loss(self, x, y, reduction: str = "none", **kwargs):
        self._kept = None
        if not self._reusable(x):
            return super().compute_loss(x, y, reduction=reduction, **kwargs)
        self._model.eval()
        y_checked = check_and_transform_label_format(y, self.nb_classes)
        # as ART's loss_gradient prepares its inputs: a copy of x as the leaf, preprocessing in torch
        x_leaf = torch.tensor(x).to(self._device).requires_grad_(True)  # (B ...)
        y_t = torch.tensor(y_checked).to(self._device)  # (B) or (B C)
        inputs, y_pre = self._apply_preprocessing(x_leaf, y=y_t, fit=False, no_grad=False)
        labels = self.reduce_labels(y_pre)  # (B) or (B C)
        logits = self._model(inputs)[-1]  # (B C), its graph kept
        prev_reduction = self._loss.reduction
        self._loss.reduction = reduction
        try:
            loss = self._loss(logits, labels)  # (B) for reduction="none"
        finally:
            self._loss.reduction = prev_reduction
        self._kept = (np.array(x, copy=True), np.array(y, copy=True), x_leaf, logits, labels)
        return loss.detach().cpu().numpy()

    def loss_gradient(self, x, y, training_mode: bool = False, **kwargs):
        kept, self._kept = self._kept, None
        if (
            kept is None
            or training_mode
            or not self._reusable(x)
            or not np.array_equal(x, kept[0])  # False for another shape too
            or not np.array_equal(np.asarray(y), kept[1])
        ):
            return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
        _, _, x_leaf, logits, labels = kept
        loss = self._loss(logits, labels)  # the loss's own reduction, as ART's loss_gradient
        self._model.zero_grad()
        loss.backward()
        return x_leaf.grad.cpu().numpy().copy()  # (B ...)


class OneForwardAPGD(AutoProjectedGradientDescent):
    """ART's ``AutoProjectedGradientDescent`` (same arguments, same x_adv) on a ``LossGraphClassifier``."""

    def __init__(self, estimator, **kwargs):
        super().__init__(estimator, **kwargs)
        if type(self.estimator) is PyTorchClassifier:  # the classifier ART built for its loss
            self._estimator = LossGraphClassifier.like(self.estimator)
