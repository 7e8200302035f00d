"""Built-in model plugins: one file per model factory, each a row of ``ssmdefense.builtins``.

A factory ``name(d_input, n_classes, *, ...)`` builds the model from ``ssmdefense.models``;
keyword-only parameters are what ``-m key=value`` and ``build_model(name, ..., **params)`` accept.
"""
