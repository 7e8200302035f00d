"""Built-in model plugin: ``s5``, simplified state space layers (Smith et al., ICLR 2023)."""

from ..models import SequenceClassifier
from ..models.s5 import S5


def s5(
    d_input: int,
    n_classes: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 32,
    discretization: str = "zoh",
    dropout: float = 0.0,
    ads: str | None = None,
    norm: str = "layer",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    kernel: str = "auto",
) -> SequenceClassifier:
    """S5 classifier: one MIMO diagonal SSM with state size P = ``d_state`` shared by all channels,
    ``discretization`` "zoh" or "bilinear", computed by a parallel (associative) scan in torch
    (``kernel="torch"``) or the Numba scan kernel (``"numba"``; ``"auto"``: the faster one per device).

    Paper scale (AdS paper): ``d_model=128``, ``d_state=128``.
    """

    S5(1, d_state, discretization, dt_min, dt_max, kernel=kernel)  # validate the mixer arguments once
    return SequenceClassifier(
        d_input,
        n_classes,
        lambda H: S5(H, d_state, discretization, dt_min, dt_max, kernel=kernel),
        d_model=d_model,
        n_layers=n_layers,
        dropout=dropout,
        ads=ads,
        norm=norm,
    )
