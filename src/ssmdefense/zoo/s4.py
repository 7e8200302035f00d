"""Built-in model plugin: ``s4``, full S4 (Gu et al., ICLR 2022) in the shared body."""

from ..models import SequenceClassifier
from ..models.s4 import S4


def s4(
    d_input: int,
    n_classes: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 32,
    dropout: float = 0.0,
    ads: str | None = None,
    norm: str = "layer",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
) -> SequenceClassifier:
    """S4 classifier: HiPPO-LegS NPLR (rank 1), bilinear discretisation, Cauchy kernel, FFT conv.

    Paper scale (AdS paper): ``d_model=128``, ``d_state=32`` (MNIST) or 64 (CIFAR-10).
    """

    S4(1, d_state, dt_min, dt_max)  # validate the mixer arguments once, before building
    return SequenceClassifier(
        d_input,
        n_classes,
        lambda H: S4(H, d_state, dt_min, dt_max),
        d_model=d_model,
        n_layers=n_layers,
        dropout=dropout,
        ads=ads,
        norm=norm,
    )
