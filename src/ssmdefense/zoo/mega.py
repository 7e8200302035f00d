"""Built-in model plugin: ``mega``, moving-average equipped gated attention (Ma et al., ICLR 2023)."""

from ..models import SequenceClassifier
from ..models.mega import MegaLayer


def mega(
    d_input: int,
    n_classes: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    d_qk: int = 32,
    d_ema: int = 16,
    d_value: int | None = None,
    bidirectional: bool = False,
    dropout: float = 0.0,
    ads: str | None = None,
) -> SequenceClassifier:
    """Mega classifier: multi-dimensional damped EMA (``d_ema`` per channel, optionally
    bidirectional) + single-head gated attention (``d_qk`` = z) with relative position bias.

    Paper scale (AdS paper): ``d_model=128``, ``d_qk=64``, ``d_ema=16``.
    """

    def mixer(H: int) -> MegaLayer:
        return MegaLayer(H, d_qk=d_qk, d_ema=d_ema, d_value=d_value, bidirectional=bidirectional)

    mixer(4)  # validate the mixer arguments once
    return SequenceClassifier(d_input, n_classes, mixer, d_model=d_model, n_layers=n_layers, dropout=dropout, ads=ads)
