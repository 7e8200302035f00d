"""The public functions behind ``import ssmdefense as sd``: build, look up and list by name.

Everything built here is checked against its kind's protocol (``ssmdefense.contracts``): a plugin
whose product lacks a member fails with one error naming the plugin and the member.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import contracts
from .errors import SSMDefenseError
from .plugins import registry

if TYPE_CHECKING:  # annotations only: importing ssmdefense.api imports neither torch nor ART
    import torch
    from art.attacks import EvasionAttack
    from art.defences.trainer import Trainer

    from .data.base import Dataset


def _create(kind: str, name: str, *args: Any, **params: Any) -> Any:
    """The registry's ``create``, then the product checked against ``contracts.PROTOCOLS[kind]``."""
    reg = registry(kind)
    product = reg.create(name, *args, **params)
    contracts.check(product, contracts.protocol_of(kind, product), reg.label(name), reg.get(name).source)
    return product


def build_model(name: str, d_input: int, n_classes: int, **params: Any) -> torch.nn.Module:
    """Build registered model ``name``: a ``torch.nn.Module`` float (B, L, D) -> logits (B, n_classes).

    The module remembers how it was built (``model.ssmdefense_config``) so ``sd.save`` can
    write a checkpoint that ``sd.load`` rebuilds without pickle.
    """
    try:
        json.dumps(params)
    except TypeError as exc:
        raise SSMDefenseError(f"model parameters must be JSON values (numbers, strings, lists): {exc}") from None
    model = _create("models", name, d_input, n_classes, **params)
    model.ssmdefense_config = {
        "name": name,
        "d_input": int(d_input),
        "n_classes": int(n_classes),
        "params": dict(params),
    }
    return model


def get_attack(name: str, estimator: Any, **params: Any) -> EvasionAttack:
    """The registered attack ``name`` bound to an ART estimator: an ART ``EvasionAttack``."""
    return _create("attacks", name, estimator, **params)


def get_defense(name: str, estimator: Any, **params: Any) -> Trainer:
    """The registered defense ``name`` for an ART estimator: an ART ``Trainer`` (a built-in one is a
    whole ``contracts.Defense``; ``defenses.art_trainer.as_defense`` makes a plugin's plain trainer
    one, as ``experiment.run`` does)."""
    return _create("defenses", name, estimator, **params)


def load_dataset(name: str, **params: Any) -> Dataset:
    """Load registered dataset ``name`` (x_train, y_train, x_val, y_val, x_test, y_test, input_shape, ...).

    Every dataset has a validation split (``ssmdefense.data.splits``): its own, or ``val_fraction``
    (default 0.1) of the training data carved out, stratified by class, with ``val_seed`` (default 0);
    those two parameters are accepted for every dataset whose split is carved.
    """
    from .data.splits import PARAMS, with_validation

    split = {k: params.pop(k) for k in PARAMS if k in params}
    return with_validation(load_dataset_as_is(name, **params), name, **split)


def load_dataset_as_is(name: str, **params: Any) -> Dataset:
    """What the loader of ``name`` returns, without a validation split carved from its training data
    (the dataset's own validation split, if it has one, is kept): ``--select-on test`` trains on all
    of it, as runs did before validation splits. A plugin's product becomes a ``Dataset`` or
    ``LazyDataset`` by the protocol it satisfies (``ssmdefense.data.base.adopt``)."""
    from .data.base import adopt

    return adopt(_create("datasets", name, **params), name)


def build_serialiser(sequence: str, input_shape: Sequence[int], **params: Any) -> torch.nn.Module:
    """The registered sequence mode ``sequence`` for inputs of natural shape ``input_shape``: a
    ``torch.nn.Module`` (N, *input_shape) -> (N, L, D) with ``L``, ``D`` and ``params`` (see
    ``ssmdefense.models.serialise``). Bad shapes or settings raise ``SSMDefenseError``."""
    return _create("sequences", sequence, tuple(int(s) for s in input_shape), **params)


def sequence_dims(input_shape: Sequence[int], sequence: str, **params: Any) -> tuple[int, int]:
    """(L, D) of the sequences that mode ``sequence`` makes from inputs of ``input_shape``:
    D is the ``d_input`` a model needs, e.g. ``sd.sequence_dims((1, 16000), "mel")`` -> (101, 40)."""
    serialiser = build_serialiser(sequence, input_shape, **params)
    return int(serialiser.L), int(serialiser.D)


def list_models() -> list[str]:
    return registry("models").names()


def list_attacks() -> list[str]:
    return registry("attacks").names()


def list_defenses() -> list[str]:
    return registry("defenses").names()


def list_datasets() -> list[str]:
    return registry("datasets").names()


def list_sequences() -> list[str]:
    return registry("sequences").names()
