"""``SSMClassifier``: an ART ``PyTorchClassifier`` for sequence models that takes natural-shape data.

The wrapped module is ``NaturalShapeModel(serialiser, body)``: images (N, C, H, W) and waveforms
(N, 1, T) are serialised to (N, L, D) inside ``forward`` by a registered sequence mode (``rows``,
``pixels``, ``frames``, ``samples``, ``mel``, or one a plugin adds), so every ART attack
(including image-only ones such as SquareAttack and SpatialTransformation) and Foolbox
(``fb.PyTorchModel(clf.model, bounds)``) work unchanged, and perturbations live in input space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier

from ..api import build_serialiser
from ..errors import SSMDefenseError
from ..kernels.backend import chosen_kernels
from ..models import NaturalShapeModel
from ..modes import eval_mode, weights_frozen
from ..optim import parameter_groups
from ..plugins import registry
from ..validation import positive


class SSMClassifier(PyTorchClassifier):
    """ART classifier for a sequence model ``(B, L, D) -> logits``.

    Args:
        model: the sequence body, e.g. ``sd.build_model("s4d", d_input=28, n_classes=10)``.
        input_shape: natural shape of one input, e.g. ``(1, 28, 28)`` or ``(1, 16000)``.
        nb_classes: number of classes.
        sequence: a registered sequence mode (``sd.list_sequences()``): for images "pixels"
            (L = H*W, D = C, raster order) or "rows" (L = H, D = W*C); for mono audio (1, T)
            "frames" (L = T / frame, D = frame), "samples" (L = T, D = 1) or "mel" (a log-mel front
            end inside the model, L = frames, D = n_mels).
        clip_values: (min, max) of valid natural inputs, e.g. ``(0.0, 1.0)`` or ``(-1.0, 1.0)``;
            attacks stay inside it.
        sequence_params: settings of the sequence mode, e.g. ``{"frame": 400}`` or
            ``{"n_mels": 64, "attack_space": "features"}``; recorded in checkpoints.
        sample_rate: audio only: samples per second (the mel front end's default rate; audio
            attacks read it). Recorded in checkpoints.
        loss: defaults to ``torch.nn.CrossEntropyLoss()``.
        optimizer: defaults to AdamW(lr=1e-3, weight_decay=2e-4, none on the SSM parameters that
            ``ssmdefense.optim`` exempts) so ART's own trainers work.
        device_type: "cpu" or "gpu" (ART's names; "gpu" falls back to CPU when CUDA is absent).
        **kwargs: passed to ``PyTorchClassifier`` (preprocessing, defences, ...).

    A sequence mode that moves the attack to derived features (``mel`` with
    ``attack_space="features"``) changes what the classifier takes: ``clf.input_shape`` and
    ``clf.clip_values`` are then those of the features, and ``clf.prepare_inputs(x)`` turns
    natural data into them (for every other mode it returns ``x``).

    Examples::

        model = sd.build_model("s4d", d_input=28, n_classes=10)
        clf = sd.SSMClassifier(model, input_shape=(1, 28, 28), nb_classes=10,
                               sequence="rows", clip_values=(0.0, 1.0))
        preds = clf.predict(x_test)  # x_test: (N, 1, 28, 28) float32

        L, D = sd.sequence_dims((1, 16000), "mel", n_mels=40)       # (101, 40)
        audio = sd.SSMClassifier(sd.build_model("s4d", d_input=D, n_classes=10), input_shape=(1, 16000),
                                 nb_classes=10, sequence="mel", sequence_params={"n_mels": 40},
                                 sample_rate=16000, clip_values=(-1.0, 1.0))
    """

    def __init__(
        self,
        model: torch.nn.Module,
        input_shape: Sequence[int],
        nb_classes: int,
        sequence: str = "pixels",
        clip_values: tuple[float, float] | None = None,
        loss: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        device_type: str = "gpu",
        sequence_params: dict | None = None,
        sample_rate: int | None = None,
        **kwargs,
    ):
        if not isinstance(model, torch.nn.Module):
            raise SSMDefenseError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if device_type not in ("cpu", "gpu"):
            raise SSMDefenseError(f"device_type must be 'cpu' or 'gpu'; got {device_type!r}")
        positive("sample_rate", sample_rate, integer=True, optional=True, error=SSMDefenseError)
        natural_shape = tuple(int(s) for s in input_shape)
        params = dict(sequence_params or {})
        accepted = registry("sequences").accepted_params(sequence) if sequence in registry("sequences").names() else []
        if sample_rate is not None and "sample_rate" in (accepted or ()):
            if params.setdefault("sample_rate", sample_rate) != sample_rate:
                raise SSMDefenseError(
                    f"sequence_params sample_rate={params['sample_rate']} contradicts sample_rate={sample_rate}"
                )
        serialiser = build_serialiser(sequence, natural_shape, **params)
        d_input = getattr(model, "d_input", None)
        if d_input is not None and d_input != serialiser.D:
            raise SSMDefenseError(
                f"sequence={sequence!r} makes {serialiser.L} steps of {serialiser.D} features from input "
                f"{natural_shape}, but the model expects d_input={d_input}"
            )
        natural_clip = None if clip_values is None else tuple(float(v) for v in clip_values)
        input_shape = tuple(getattr(serialiser, "input_shape", natural_shape))
        if hasattr(serialiser, "clip_values"):  # the classifier takes derived features
            clip_values = tuple(float(v) for v in serialiser.clip_values)
        natural = NaturalShapeModel(serialiser, model)
        with torch.no_grad(), eval_mode(natural):
            param = next(model.parameters(), None)
            probe = torch.zeros(
                1,
                *input_shape,
                dtype=param.dtype if param is not None else torch.float32,
                device=param.device if param is not None else "cpu",
            )
            out = natural(probe)  # (1 n_classes)
        if tuple(out.shape) != (1, nb_classes):
            raise SSMDefenseError(
                f"the model gives logits of shape {tuple(out.shape[1:])} per input; expected ({nb_classes},)"
            )
        if loss is None:
            loss = torch.nn.CrossEntropyLoss()
        if optimizer is None:
            optimizer = torch.optim.AdamW(parameter_groups(natural, weight_decay=2e-4), lr=1e-3)
        super().__init__(
            model=natural,
            loss=loss,
            input_shape=input_shape,
            nb_classes=nb_classes,
            optimizer=optimizer,
            clip_values=clip_values,
            device_type=device_type,
            **kwargs,
        )
        self.sequence = sequence
        self.sequence_params = dict(serialiser.params)
        self.sample_rate = sample_rate if sample_rate is not None else serialiser.params.get("sample_rate")
        self.natural_shape = natural_shape
        self.natural_clip_values = natural_clip

    @property
    def serialiser(self) -> torch.nn.Module:
        """The sequence mode in front of the body (natural input -> (B, L, D))."""
        return self.model.serialiser

    @property
    def is_audio(self) -> bool:
        """Whether the natural inputs are waveforms (a sample rate is known)."""
        return self.sample_rate is not None

    def prepare_inputs(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Natural-shape data -> what this classifier takes: ``x`` itself, or the derived features of
        a sequence mode with its own ``prepare`` (log-mel for ``mel`` with attack_space=features)."""
        x = np.asarray(x, dtype=np.float32)
        prepare = getattr(self.serialiser, "prepare", None)
        if prepare is None or tuple(x.shape[1:]) == tuple(self.input_shape):
            return x
        if tuple(x.shape[1:]) != self.natural_shape:
            raise SSMDefenseError(f"x has shape {x.shape[1:]} per sample; expected {self.natural_shape}")
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb = torch.from_numpy(x[start : start + batch_size]).to(self.device)  # (B ...natural)
                out.append(prepare(xb).cpu().numpy())  # (B ...input_shape)
        return np.concatenate(out) if out else np.zeros((0, *self.input_shape), np.float32)

    def loss_gradient(
        self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, training_mode: bool = False, **kwargs
    ) -> np.ndarray | torch.Tensor:
        """ART's ``loss_gradient`` (the loss's gradient with respect to ``x``), run with the weights
        frozen: ART differentiates with ``loss.backward()``, which also computes and stores a gradient
        for every weight, work no attack uses (PGD-10 through ART measured 1.16-1.35x a plain torch
        loop with it, 1.02-1.05x without; docs/performance.md)."""
        with weights_frozen(self._model):
            return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)

    def class_gradient(
        self,
        x: np.ndarray | torch.Tensor,
        label: int | list | np.ndarray | None = None,
        training_mode: bool = False,
        **kwargs,
    ) -> np.ndarray | torch.Tensor:
        """ART's ``class_gradient`` (logits' gradients with respect to ``x``), the weights frozen as
        in ``loss_gradient``."""
        with weights_frozen(self._model):
            return super().class_gradient(x, label=label, training_mode=training_mode, **kwargs)

    def reduce_labels(self, y: np.ndarray) -> np.ndarray:
        """Index labels (N,) pass through; ART's own version assumes one-hot rows for C > 2 and
        fails on indices (e.g. ``loss_gradient(x, y_indices)``)."""
        if len(y.shape) == 1:
            return y.long() if isinstance(y, torch.Tensor) else np.asarray(y).astype(np.int64)
        return super().reduce_labels(y)

    @property
    def kernels(self) -> dict[str, str]:
        """Which implementation each kernel-backed layer runs on this classifier's device, e.g.
        ``{"mamba": "numba", "log-mel": "torch"}`` (``kernel=auto`` resolved; empty when none has a choice)."""

        return chosen_kernels(self.model, self.device.type)

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
