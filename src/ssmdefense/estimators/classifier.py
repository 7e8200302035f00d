"""``SSMClassifier``: an ART ``PyTorchClassifier`` for sequence models that takes natural-shape data.

The wrapped module is ``NaturalShapeModel(serialiser, body)``: images (N, C, H, W) are serialised
to (N, L, D) inside ``forward``, so every ART attack (including image-only ones such as
SquareAttack and SpatialTransformation) and Foolbox (``fb.PyTorchModel(clf.model, bounds)``) work
unchanged, and perturbations live in input space.
"""

from __future__ import annotations

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier

from ..errors import SSMDefenseError
from ..models import ImageToSequence, NaturalShapeModel, SEQUENCE_MODES


class SSMClassifier(PyTorchClassifier):
    """ART classifier for a sequence model ``(B, L, D) -> logits``.

    Args:
        model: the sequence body, e.g. ``sd.build_model("s4d", d_input=28, n_classes=10)``.
        input_shape: natural shape of one input, e.g. ``(1, 28, 28)``.
        nb_classes: number of classes.
        sequence: "pixels" (L = H*W, D = C, raster order) or "rows" (L = H, D = W*C).
        clip_values: (min, max) of valid inputs, e.g. ``(0.0, 1.0)``; attacks stay inside it.
        loss: defaults to ``torch.nn.CrossEntropyLoss()``.
        optimizer: defaults to AdamW(lr=1e-3, weight_decay=2e-4) so ART's own trainers work.
        device_type: "cpu" or "gpu" (ART's names; "gpu" falls back to CPU when CUDA is absent).
        **kwargs: passed to ``PyTorchClassifier`` (preprocessing, defences, ...).

    Examples::

        model = sd.build_model("s4d", d_input=28, n_classes=10)
        clf = sd.SSMClassifier(model, input_shape=(1, 28, 28), nb_classes=10,
                               sequence="rows", clip_values=(0.0, 1.0))
        preds = clf.predict(x_test)  # x_test: (N, 1, 28, 28) float32
    """

    def __init__(self, model: torch.nn.Module, input_shape, nb_classes: int, sequence: str = "pixels",
                 clip_values=None, loss=None, optimizer=None, device_type: str = "gpu", **kwargs):
        if not isinstance(model, torch.nn.Module):
            raise SSMDefenseError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if sequence not in SEQUENCE_MODES:
            raise SSMDefenseError(f"sequence must be one of {', '.join(SEQUENCE_MODES)}; got {sequence!r}")
        input_shape = tuple(int(s) for s in input_shape)
        try:
            serialiser = ImageToSequence(input_shape, sequence)
        except ValueError as exc:
            raise SSMDefenseError(str(exc)) from None
        if device_type not in ("cpu", "gpu"):
            raise SSMDefenseError(f"device_type must be 'cpu' or 'gpu'; got {device_type!r}")
        d_input = getattr(model, "d_input", None)
        if d_input is not None and d_input != serialiser.D:
            raise SSMDefenseError(
                f"sequence={sequence!r} makes {serialiser.L} steps of {serialiser.D} features from input "
                f"{input_shape}, but the model expects d_input={d_input}"
            )
        natural = NaturalShapeModel(serialiser, model)
        with torch.no_grad():
            was_training = natural.training
            param = next(model.parameters(), None)
            probe = torch.zeros(1, *input_shape, dtype=param.dtype if param is not None else torch.float32,
                                device=param.device if param is not None else "cpu")
            out = natural.eval()(probe)  # (1 n_classes)
            natural.train(was_training)
        if tuple(out.shape) != (1, nb_classes):
            raise SSMDefenseError(f"the model gives logits of shape {tuple(out.shape[1:])} per input; "
                                  f"expected ({nb_classes},)")
        if loss is None:
            loss = torch.nn.CrossEntropyLoss()
        if optimizer is None:
            optimizer = torch.optim.AdamW(natural.parameters(), lr=1e-3, weight_decay=2e-4)
        super().__init__(model=natural, loss=loss, input_shape=input_shape, nb_classes=nb_classes,
                         optimizer=optimizer, clip_values=clip_values, device_type=device_type, **kwargs)
        self.sequence = sequence

    def reduce_labels(self, y):
        """Index labels (N,) pass through; ART's own version assumes one-hot rows for C > 2 and
        fails on indices (e.g. ``loss_gradient(x, y_indices)``)."""
        if len(y.shape) == 1:
            return y.long() if isinstance(y, torch.Tensor) else np.asarray(y).astype(np.int64)
        return super().reduce_labels(y)

    @property
    def body(self) -> torch.nn.Module:
        """The sequence model (B, L, D) -> logits, without the serialiser."""
        return self.model.body

    def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
        """Fraction of ``x`` classified as ``y`` (class indices or one-hot)."""
        y = np.asarray(y)
        if y.ndim == 2:
            y = y.argmax(axis=1)
        pred = self.predict(np.asarray(x, dtype=np.float32), batch_size=batch_size).argmax(axis=1)
        return float((pred == y).mean()) if len(y) else float("nan")
