"""Built-in model plugin: ``lstm`` and ``gru`` baselines (last hidden state, or ``pool="mean"`` the
mean over the steps -> linear head)."""

from ..models.rnn import RNNClassifier


def lstm(
    d_input: int, n_classes: int, *, d_model: int = 64, n_layers: int = 1, dropout: float = 0.0, pool: str = "last"
) -> RNNClassifier:
    """LSTM classifier: ``n_layers`` LSTM layers of width ``d_model``; the last step's hidden state
    (``pool="mean"``: the mean over the steps) feeds a linear head."""

    return RNNClassifier(
        d_input, n_classes, cell="lstm", d_model=d_model, n_layers=n_layers, dropout=dropout, pool=pool
    )


def gru(
    d_input: int, n_classes: int, *, d_model: int = 64, n_layers: int = 1, dropout: float = 0.0, pool: str = "last"
) -> RNNClassifier:
    """GRU classifier: as ``lstm`` with GRU cells."""

    return RNNClassifier(d_input, n_classes, cell="gru", d_model=d_model, n_layers=n_layers, dropout=dropout, pool=pool)
