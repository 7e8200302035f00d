"""What every command does, callable from Python; the CLI only parses, calls and prints.

- ``config``: ``RunConfig``, the one schema of a run's settings (config.json, the report's config,
  the checkpoint extras, presets and resume all derive from its fields);
- ``train``: ``run(RunConfig) -> RunReport`` (``ssmdefense defend`` / ``train``), in named steps;
- ``evaluate``: ``evaluate_checkpoints(EvaluateConfig) -> EvaluationReport`` (``ssmdefense evaluate``);
- ``attack``: ``attack_checkpoint(AttackConfig) -> AttackResult`` (``ssmdefense attack``);
- ``certify``: ``certify_checkpoint(CertifyConfig) -> dict`` (``ssmdefense certify``);
- ``checkpoints``: what evaluate and attack share (finding checkpoints, their test data);
- ``presets``: paper-scale settings by name (``with_preset``); ``resume``: ``resume_config`` and the
  ``RunInterrupted`` a stopped run raises;
- ``common``: the data, device, threads and the staged run directory every workflow uses.

A bad setting raises ``OptionError`` (its field and command-line option), before any work::

    from ssmdefense.workflows import RunConfig, run, evaluate_checkpoints
    report = run(RunConfig(defense="ads", dataset="digits", out="runs/ads"))
    evaluation = evaluate_checkpoints(checkpoint="runs/ads", attacks=["pgd", "autoattack"])

Names resolve lazily: the schema (``RunConfig``) imports nothing heavy, so the CLI's ``--help`` stays fast.
"""

from importlib import import_module

_LAZY = {
    "RunConfig": "config",
    "setting": "config",
    "RunReport": "train",
    "run": "train",
    "resume_config": "resume",
    "EvaluateConfig": "evaluate",
    "EvaluationReport": "evaluate",
    "evaluate_checkpoints": "evaluate",
    "AttackConfig": "attack",
    "AttackResult": "attack",
    "attack_checkpoint": "attack",
    "CertifyConfig": "certify",
    "certify_checkpoint": "certify",
    "find_checkpoints": "checkpoints",
    "load_test_data": "checkpoints",
    "PRESETS": "presets",
    "load_preset": "presets",
    "with_preset": "presets",
}
_ERRORS = ("OptionError", "RunInterrupted")

__all__ = sorted([*_LAZY, *_ERRORS])


def __getattr__(name: str) -> object:
    if name in _ERRORS:
        value = getattr(import_module("..errors", __name__), name)
    elif name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'ssmdefense.workflows' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
