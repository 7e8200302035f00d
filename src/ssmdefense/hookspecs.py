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
def register_commands(cli):
    """Add click commands to the root ``ssmdefense`` group ``cli`` (``cli.add_command(...)``)."""
