"""``ssmdefense.experiment``: the experiment API under the name users have imported since it began.
The workflows live in ``ssmdefense.workflows`` (``run``, ``evaluate_checkpoints``, ``attack_checkpoint``,
their configs and reports); every name of it is importable from here::

    from ssmdefense.experiment import RunConfig, run
    report = run(RunConfig(defense="ads", out=Path("runs/ads")))
"""

from .errors import OptionError, RunInterrupted
from .workflows.attack import AttackConfig, AttackResult, attack_checkpoint
from .workflows.checkpoints import find_checkpoints, load_test_data
from .workflows.config import RunConfig
from .workflows.evaluate import EvaluateConfig, EvaluationReport, evaluate_checkpoints
from .workflows.presets import with_preset
from .workflows.resume import resume_config
from .workflows.train import RunReport, run

__all__ = [
    "AttackConfig",
    "AttackResult",
    "EvaluateConfig",
    "EvaluationReport",
    "OptionError",
    "RunConfig",
    "RunInterrupted",
    "RunReport",
    "attack_checkpoint",
    "evaluate_checkpoints",
    "find_checkpoints",
    "load_test_data",
    "resume_config",
    "run",
    "with_preset",
]
