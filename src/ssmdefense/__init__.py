"""ssmdefense: adversarial attacks and defenses for deep state space models, on IBM's ART.

    import ssmdefense as sd
    model = sd.build_model("s4d", d_input=28, n_classes=10, ads="relu")
    clf = sd.SSMClassifier(model, input_shape=(1, 28, 28), nb_classes=10, sequence="rows",
                           clip_values=(0.0, 1.0))

Names are resolved lazily so ``import ssmdefense`` (and ``ssmdefense --help``) stays fast.
"""

from importlib import import_module

from .errors import CheckpointError, DuplicateNameError, SSMDefenseError, UnknownNameError
from .hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "build_model": "api",
    "get_attack": "api",
    "get_defense": "api",
    "load_dataset": "api",
    "list_models": "api",
    "list_attacks": "api",
    "list_defenses": "api",
    "list_datasets": "api",
    "list_sequences": "api",
    "sequence_dims": "api",
    "build_serialiser": "api",
    "SSMClassifier": "estimators",
    "save": "checkpoint",
    "load": "checkpoint",
    "TrainingLoop": "defenses.loop",
    "Dataset": "data.base",
    "certify": "certification",
}

__all__ = sorted(
    [*_LAZY, "hookimpl", "SSMDefenseError", "UnknownNameError", "DuplicateNameError", "CheckpointError", "__version__"]
)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ssmdefense' has no attribute {name!r}")


def __dir__():
    return __all__
