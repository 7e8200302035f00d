"""Built-in model plugins: one file per model, each with its factory and its ``@hookimpl``.

A factory ``name(d_input, n_classes, *, ...)`` builds the model from ``ssmdefense.models``;
keyword-only parameters are what ``-m key=value`` and ``build_model(name, ..., **params)`` accept.
"""
