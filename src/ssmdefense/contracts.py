"""What each kind of plugin must provide, as ``typing.Protocol``s, and the checks that enforce them.

A plugin registers factories (``hookspecs.py``); what a factory builds must satisfy its kind's
protocol. The registry checks a class factory's methods when the plugin registers (a plugin's
mistake shows up at once, naming the plugin and the missing member), and ``ssmdefense.api`` checks
every built object, data members included, when it is built.

- **Defense**: an ART ``Trainer`` (``ARTTrainer``: ``fit`` and ``get_classifier``) is enough. One
  that also provides the whole ``Defense`` protocol (a ``TrainingLoop`` does) is used as it is;
  any other is wrapped by ``defenses.art_trainer.ARTTrainerDefense``, which runs it epoch by
  epoch and adds the per-epoch evaluation, the best/last checkpoints and the report's entries.
- **Model body**: a ``torch.nn.Module`` mapping float ``(B, L, D)`` to logits ``(B, n_classes)``.
  Nothing else is required; what needs a state space model's internals (the ``ads`` defense,
  ``yopo``'s first layer, ``evaluate --analysis components``) checks for them and says so.
- **Sequence mode** (an input kind): a ``torch.nn.Module`` ``(N, *input_shape) -> (N, L, D)`` with
  ``L``, ``D`` and ``params`` (``models/serialise.py`` has the whole contract).
- **Attack**: an ART ``EvasionAttack`` (``generate``).
- **Dataset**: ``x_train, y_train, x_test, y_test, input_shape, nb_classes, clip_values`` and
  ``sequence`` (``data/base.py``); or, loaded lazily (``LazyData``), ``train`` and ``test``
  ``torch.utils.data.Dataset``s in place of the x arrays.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .errors import SSMDefenseError


@runtime_checkable
class ARTTrainer(Protocol):
    """The least a defense is: an ART ``Trainer``."""

    def fit(self, x: Any, y: Any, **kwargs: Any) -> Any: ...

    def get_classifier(self) -> Any: ...


@runtime_checkable
class Defense(ARTTrainer, Protocol):
    """What ``ssmdefense defend`` and ``experiment.run`` use: ``fit`` that evaluates each epoch and
    writes ``best``/``last`` checkpoints to ``out_dir`` (and resumes from it), ``describe()`` (the
    parameters recorded in the report), ``timing`` (cost entries for the report) and ``name``."""

    name: str
    timing: dict

    def fit(
        self,
        x: Any,
        y: Any,
        validation_data: tuple | None = None,
        nb_epochs: int = 10,
        batch_size: int | None = None,
        out_dir: Any = None,
        checkpoint_extra: dict | None = None,
        resume: bool = False,
    ) -> list[dict]: ...

    def describe(self) -> dict: ...


@runtime_checkable
class ModelBody(Protocol):
    """A ``torch.nn.Module`` (B, L, D) -> (B, n_classes)."""

    def forward(self, x: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def state_dict(self, *args, **kwargs) -> Any: ...


@runtime_checkable
class SequenceMode(Protocol):
    """A ``torch.nn.Module`` (N, *input_shape) -> (N, L, D) that can be rebuilt from ``params``."""

    L: int
    D: int
    params: dict

    def forward(self, x: Any) -> Any: ...


@runtime_checkable
class Attack(Protocol):
    """An ART ``EvasionAttack``."""

    def generate(self, x: Any, y: Any = None, **kwargs: Any) -> Any: ...


@runtime_checkable
class Dataset(Protocol):
    """What a dataset loader returns (``ssmdefense.data.base.Dataset`` is one).

    Optional members, read when present (``data.base.adopt`` copies them): ``name``, ``info``,
    ``sample_rate`` (audio), ``eps`` (the default budget), ``classes`` (names), ``defaults`` (run
    settings: ``epochs``, ``eval_samples``, ``aa_samples``), ``x_val``/``y_val`` and ``validation``
    (the dataset's own validation split and where it came from), ``groups`` (per training sample, the
    group a carved validation split keeps whole)."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    input_shape: tuple
    nb_classes: int
    clip_values: Any
    sequence: str


@runtime_checkable
class LazyData(Protocol):
    """What a lazily loading dataset loader returns (``ssmdefense.data.base.LazyDataset`` is one):
    ``train`` and ``test`` are ``torch.utils.data.Dataset``s of (x tensor, int label) items. Optional
    members as for ``Dataset``, with ``val``/``y_val`` for its own validation split."""

    train: Any
    test: Any
    y_train: Any
    y_test: Any
    input_shape: tuple
    nb_classes: int
    clip_values: Any
    sequence: str


def protocol_of(kind: str, product: Any) -> type:
    """The protocol ``product`` of registry ``kind`` must satisfy: ``PROTOCOLS[kind]``, but
    ``LazyData`` for a dataset that holds ``train`` and ``test`` instead of arrays."""
    if kind == "datasets" and hasattr(product, "train") and hasattr(product, "test"):
        return LazyData
    return PROTOCOLS[kind]


#: the protocol each registry kind's products must satisfy (defenses: at least an ART trainer)
PROTOCOLS: dict[str, type] = {
    "models": ModelBody,
    "sequences": SequenceMode,
    "attacks": Attack,
    "defenses": ARTTrainer,
    "datasets": Dataset,
}


def members(protocol: type, methods_only: bool = False) -> list[str]:
    """The members ``protocol`` asks for (its own and its bases', in declaration order)."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        own = [n for n in klass.__dict__ if not n.startswith("_")]
        fields = [n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_")]
        for name in own if methods_only else fields + own:
            if name not in names and (not methods_only or callable(klass.__dict__.get(name))):
                names.append(name)
    return names


def missing(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks. For a class (a factory, before anything is
    built) only the methods are checked: data members are set by ``__init__``."""
    if isinstance(obj, type):
        return [n for n in members(protocol, methods_only=True) if not callable(getattr(obj, n, None))]
    return [n for n in members(protocol) if not hasattr(obj, n)]


def check(obj: Any, protocol: type, what: str, source: str) -> None:
    """Raise ``SSMDefenseError`` naming ``what`` (e.g. "defense 'x'"), the plugin ``source`` and the
    members ``obj`` lacks, when it does not satisfy ``protocol``."""
    lacking = missing(obj, protocol)
    if lacking:
        built = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise SSMDefenseError(
            f"plugin {source!r}: {what} ({built}) lacks {', '.join(lacking)}: "
            f"a {protocol.__name__} must provide {', '.join(members(protocol))} "
            f"(ssmdefense.contracts)"
        )
