"""Exceptions a user can act on. The CLI turns each into one line and exit status 2."""

from pathlib import Path


class SSMDefenseError(ValueError):
    """Base class: a bad name, parameter, file or shape given by the user."""


class UnknownNameError(SSMDefenseError, KeyError):
    """A registry has no entry by that name; the message lists the known ones."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(SSMDefenseError):
    """Two plugins registered the same name; the message names both sources."""


class CheckpointError(SSMDefenseError):
    """A checkpoint is missing, corrupt or does not match its configuration."""


class TrainingDiverged(SSMDefenseError):
    """The training loss stopped being a finite number; the run keeps its last good epoch."""


class RankLost(SSMDefenseError):
    """Another process of a distributed run stopped (killed, crashed or out of memory): this one
    cannot go on. The run directory is kept for ``--resume``."""


class OptionError(SSMDefenseError):
    """A bad value of one setting: ``name`` is its config field, ``option`` its command-line option
    (the CLI reports it as click reports a bad option value), ``message`` what is wrong."""

    def __init__(self, name: str, option: str, message: str):
        super().__init__(message if message.startswith(f"{name} ") else f"{name}: {message}")
        self.name, self.option, self.message = name, option, message

    @classmethod
    def of(cls, name: str, option: str | None = None):
        """The ``error=`` of ``ssmdefense.validation``'s checks for the setting ``name``."""
        return lambda message: cls(name, option or "--" + name.replace("_", "-"), message)


class RunInterrupted(BaseException):
    """A run stopped by Ctrl-C, a signal or a lost process of a distributed run, after ``epoch``
    committed epochs: its directory ``kept`` waits for ``resume_command`` (``ssmdefense ... --resume``,
    or ``run(resume_config(...))`` from Python). A ``BaseException``, as ``KeyboardInterrupt`` is, so
    ``except Exception`` does not swallow an interruption; ``exit_status`` is the one the command
    line exits with (130 after Ctrl-C, 128 + the signal's number, 2 for a lost process); the
    original exception is its ``__cause__``."""

    def __init__(self, epoch: int, kept: Path, resume_command: str, exit_status: int, reason: str = ""):
        super().__init__(f"{reason}interrupted after epoch {epoch}; continue with: {resume_command}")
        self.epoch, self.kept, self.resume_command, self.exit_status = epoch, kept, resume_command, exit_status
