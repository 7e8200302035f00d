"""Built-in model plugin: ``dss``, Diagonal State Spaces (Gupta et al., NeurIPS 2022)."""

from ..models import SequenceClassifier
from ..models.dss import DSS


def dss(
    d_input: int,
    n_classes: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 32,
    variant: str = "exp",
    dropout: float = 0.0,
    ads: str | None = None,
    norm: str = "layer",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    kernel: str = "auto",
) -> SequenceClassifier:
    """DSS classifier; ``variant`` is "exp" (DSS-exp) or "softmax" (DSS-softmax); ``kernel`` is "auto",
    "torch" (FFT convolution) or "numba" (the recurrence as a Numba kernel). ``kernel="exp"`` or
    ``"softmax"`` (checkpoints from before ``variant``) still name the variant.

    Paper scale (AdS paper): ``d_model=128``, ``d_state=32`` (MNIST) or 64 (CIFAR-10).
    """

    DSS(1, d_state, variant, dt_min, dt_max, kernel)  # validate the mixer arguments once
    return SequenceClassifier(
        d_input,
        n_classes,
        lambda H: DSS(H, d_state, variant, dt_min, dt_max, kernel),
        d_model=d_model,
        n_layers=n_layers,
        dropout=dropout,
        ads=ads,
        norm=norm,
    )
