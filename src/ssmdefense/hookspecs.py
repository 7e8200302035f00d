"""Hook specifications of ssmdefense (pluggy project name ``ssmdefense``).

Each ``register_<plural>`` hook is called once, when the plugin manager first builds its
registries, with a ``register`` callback. A plugin calls ``register(name, factory, summary)`` for
each thing it adds; names are kebab-case and must be unique across all plugins. A factory is a
callable, or ``plugins.LazyFactory("module:attribute")`` to defer importing it until first use.

What a factory builds must satisfy its kind's protocol in ``ssmdefense.contracts``: a class factory
is checked when the plugin registers (a mismatch, or a hook that raises, leaves that hook's entries
out and is reported by ``ssmdefense plugins``), every built object when it is built (an
``SSMDefenseError``); both name the plugin and the missing member. The factory's keyword parameters are
what ``-p``/``-m``/``-D key=value`` accept (its keyword-only parameters, or any with ``**kwargs``;
a defense class may declare them ART-style as ``defense_params``). A ``ValueError`` from a factory
is shown to the user as a bad parameter; any other exception is treated as a bug and keeps its
traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # click is only needed by the CLI
    import click

hookspec = pluggy.HookspecMarker("ssmdefense")
hookimpl = pluggy.HookimplMarker("ssmdefense")

#: ``register(name, factory, summary="")``
Register = Callable[..., None]


@hookspec
def register_models(register: Register) -> None:
    """Add models. ``factory(d_input: int, n_classes: int, **params)`` returns a ``torch.nn.Module``
    mapping float ``(B, L, D)`` sequences to logits ``(B, n_classes)`` (``contracts.ModelBody``).
    Any module works; the ``ads`` defense, ``yopo`` and ``--analysis components`` need a model built
    on ``ssmdefense.models.SequenceClassifier`` and say so otherwise."""


@hookspec
def register_attacks(register: Register) -> None:
    """Add attacks. ``factory(estimator, **params)`` returns an ART ``EvasionAttack``
    (``contracts.Attack``: ``generate(x, y=None)``)."""


@hookspec
def register_defenses(register: Register) -> None:
    """Add defenses. ``factory(estimator, **params)`` returns an ART ``Trainer`` (``fit`` and
    ``get_classifier``: ``contracts.ARTTrainer``). ``ssmdefense defend`` passes every factory ``eps``,
    ``seed``, ``batch_size``, ``eval_samples`` and ``verbose`` besides the ``-p`` parameters, so a
    factory takes ``**kwargs`` or declares them. A trainer built on ``ssmdefense.TrainingLoop`` is a
    whole ``contracts.Defense``; any other is run epoch by epoch by ``defenses.art_trainer``, which
    adds the evaluation, checkpoints and report entries (and cannot resume)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Add datasets. ``loader(**params)`` returns an object with ``x_train, y_train, x_test,
    y_test`` (numpy, natural shape), ``input_shape``, ``nb_classes``, ``clip_values`` and
    ``sequence`` (``contracts.Dataset``; ``ssmdefense.data.base.Dataset`` is one)."""


@hookspec
def register_sequences(register: Register) -> None:
    """Add sequence modes: how one natural-shape input becomes a sequence. ``factory(input_shape,
    **params)`` returns a ``torch.nn.Module`` mapping ``(N, *input_shape)`` to ``(N, L, D)`` with
    attributes ``L``, ``D`` and ``params`` (JSON settings that rebuild it; ``contracts.SequenceMode``),
    and raises ``ValueError`` for an input shape it does not read. See ``ssmdefense.models.serialise``
    for the whole contract (a front end that moves the attack to derived features adds
    ``input_shape``, ``clip_values`` and ``prepare``). A dataset plugin that brings a new kind of
    input registers its mode here and names it as its default ``sequence``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the root ``ssmdefense`` group ``cli`` (``cli.add_command(...)``)."""


__all__ = ["Register", "hookimpl", "hookspec"]
