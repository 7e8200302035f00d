"""Built-in model plugin: registers the sequence models of ``ssmdefense.models``."""

from ..models import S4D, SequenceClassifier


def s4d(
    d_input: int,
    n_classes: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 32,
    dropout: float = 0.0,
    ads: str | None = None,
    norm: str = "layer",
    init: str = "lin",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    kernel: str = "auto",
) -> SequenceClassifier:
    """S4D classifier (Gu et al. 2022): the shared body with an S4D mixer in every block.
    ``kernel``: "auto", "torch" (FFT convolution) or "numba" (the recurrence as a Numba kernel).

    Paper scale (AdS paper, MNIST): ``d_model=128, d_state=32``; the CLI default is smaller.
    """

    S4D(1, d_state, dt_min, dt_max, init, kernel)  # validate the mixer arguments once, before building
    return SequenceClassifier(
        d_input,
        n_classes,
        lambda H: S4D(H, d_state, dt_min, dt_max, init, kernel),
        d_model=d_model,
        n_layers=n_layers,
        dropout=dropout,
        ads=ads,
        norm=norm,
    )
