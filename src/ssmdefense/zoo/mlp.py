"""Built-in model plugin: ``mlp``, the dense baseline (flattened input, two hidden ReLU layers)."""

from ..models.mlp import MLPClassifier


def mlp(d_input: int, n_classes: int, *, d_hidden: int = 256, dropout: float = 0.0) -> MLPClassifier:
    """MLP classifier: flatten (L, D) -> Linear -> ReLU -> Linear -> ReLU -> Linear. The first
    layer's input size L*D is inferred from the first batch (the classifier's shape check runs one)."""

    return MLPClassifier(d_input, n_classes, d_hidden=d_hidden, dropout=dropout)
