"""Hook specifications of ssmdefense (pluggy project name ``ssmdefense``).

Each ``register_<plural>`` hook is called once, when the plugin manager first builds its
registries, with a ``register`` callback. A plugin calls ``register(name, factory, summary)`` for
each thing it adds; names are kebab-case and must be unique across all plugins.
"""

import pluggy

hookspec = pluggy.HookspecMarker("ssmdefense")
hookimpl = pluggy.HookimplMarker("ssmdefense")


@hookspec
def register_models(register):
    """Add models. ``factory(d_input, n_classes, **params)`` returns a ``torch.nn.Module`` mapping
    float ``(B, L, D)`` sequences to logits ``(B, n_classes)``."""


@hookspec
def register_attacks(register):
    """Add attacks. ``factory(estimator, **params)`` returns an ART ``EvasionAttack``."""


@hookspec
def register_defenses(register):
    """Add defenses. ``factory(estimator, **params)`` returns an ART ``Trainer`` whose ``fit(x, y,
    validation_data=..., nb_epochs=...)`` trains the estimator's model in place."""


@hookspec
def register_datasets(register):
    """Add datasets. ``loader(**params)`` returns an object with ``x_train, y_train, x_test,
    y_test`` (numpy, natural shape), ``input_shape``, ``nb_classes``, ``clip_values`` and
    ``sequence``."""


@hookspec
def register_sequences(register):
    """Add sequence modes: how one natural-shape input becomes a sequence. ``factory(input_shape,
    **params)`` returns a ``torch.nn.Module`` mapping ``(N, *input_shape)`` to ``(N, L, D)`` with
    attributes ``L``, ``D`` and ``params`` (JSON settings that rebuild it), and raises ``ValueError``
    for an input shape it does not read. See ``ssmdefense.models.serialise`` for the whole contract
    (a front end that moves the attack to derived features adds ``input_shape``, ``clip_values``
    and ``prepare``). A dataset plugin that brings a new kind of input registers its mode here and
    names it as its default ``sequence``."""


@hookspec
def register_commands(cli):
    """Add click commands to the root ``ssmdefense`` group ``cli`` (``cli.add_command(...)``)."""
