"""Built-in model plugin: ``mamba``, the selective SSM block (Gu & Dao, 2023): PyTorch or Numba scan."""

from ..models import SequenceClassifier
from ..models.mamba import MambaMixer


def mamba(
    d_input: int,
    n_classes: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    expand: int = 2,
    d_conv: int = 4,
    dt_rank: int | None = None,
    dropout: float = 0.0,
    ads: str | None = None,
    kernel: str = "auto",
) -> SequenceClassifier:
    """Mamba classifier: in/out projections, causal depthwise conv, input-dependent delta/B/C,
    softplus delta, S4D-Real A, D skip, SiLU gate. ``kernel``: the selective scan's implementation,
    "auto", "torch" (chunked scan in torch) or "numba" (the Numba kernel).

    Paper scale (AdS paper): ``d_model=128``, ``d_state=32`` (MNIST) or 16 (CIFAR-10),
    ``expand=2``, ``d_conv=4``.
    """

    def mixer(H: int) -> MambaMixer:
        return MambaMixer(H, d_state=d_state, expand=expand, d_conv=d_conv, dt_rank=dt_rank, kernel=kernel)

    mixer(4)  # validate the mixer arguments once
    return SequenceClassifier(d_input, n_classes, mixer, d_model=d_model, n_layers=n_layers, dropout=dropout, ads=ads)
